//! Options of a bus, of a consumer group and of a nack.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Timestamp};
use crate::error::{Error, Result};

/// The largest seq any store gives (SQL row ids are signed 64-bit).
pub(crate) const MAX_SEQ: u64 = i64::MAX as u64;

/// The most messages one step of [`Bus::prune`](crate::Bus::prune) lets go of.
pub const PRUNE_BATCH: u32 = 1000;

/// Options of a [`Bus`](crate::Bus).
#[derive(Clone)]
pub struct BusOptions {
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) max_message_size: usize,
    pub(crate) listener_capacity: usize,
    pub(crate) prune_every: u32,
    pub(crate) audited: Vec<String>,
}

impl BusOptions {
    /// Default options: the platform's default clock, messages up to 1 MiB,
    /// listeners that hold 1024 unread messages.
    pub fn new() -> Self {
        BusOptions {
            clock: None,
            max_message_size: crate::message::DEFAULT_MAX_MESSAGE_SIZE,
            listener_capacity: 1024,
            prune_every: 64,
            audited: Vec::new(),
        }
    }

    /// The clock for leases, delays and `deliver_at` (I10).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The largest message a publish accepts, in bytes: its payload, id,
    /// key and metadata together ([`Message::size`](crate::Message::size)).
    /// Larger ones are [`Error::MessageTooLarge`](crate::Error::MessageTooLarge).
    /// A dead letter adds its `litebus.dead_letter.*` entries (under 2 KiB)
    /// to the message it keeps.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How many unread messages a [`Listener`](crate::Listener) holds before
    /// it drops the oldest and reports [`Live::Lagged`](crate::Live::Lagged).
    #[must_use]
    pub fn listener_capacity(mut self, messages: usize) -> Self {
        self.listener_capacity = messages;
        self
    }

    /// How many messages published or acked to a topic through this bus
    /// between two prune steps of that topic (its [`Retention`]); each
    /// step lets go of up to twice that many messages, so pruning keeps
    /// pace with publishing, and no step holds the store for long. At
    /// least 1 (every publish and ack prunes); the default is 64.
    #[must_use]
    pub fn prune_every(mut self, messages: u32) -> Self {
        self.prune_every = messages.max(1);
        self
    }

    /// Keeps an audit chain of `topic` (feature `audit`): every publish to
    /// it, and every ack, nack and dead letter of its groups through this
    /// bus, appends a row to topic `litebus.audit.<topic>` holding
    /// `blake3(previous row's hash || the event)`;
    /// [`Bus::verify_audit`](crate::Bus::verify_audit) names the first row
    /// changed, removed or put in. Give every bus on the store the same
    /// audited topics: a bus without it appends nothing. A row is appended
    /// once its operation has committed, in a step of its own (a
    /// publish or settle whose row could not be appended returns that
    /// error; the operation itself happened). Repeatable. A topic name that
    /// is not one, or whose chain's name would be too long, makes
    /// [`Bus::open`](crate::Bus::open) fail with
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions).
    #[cfg(feature = "audit")]
    #[must_use]
    pub fn audit(mut self, topic: impl Into<String>) -> Self {
        self.audited.push(topic.into());
        self
    }
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions::new()
    }
}

impl fmt::Debug for BusOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusOptions")
            .field("clock", &self.clock)
            .field("max_message_size", &self.max_message_size)
            .field("listener_capacity", &self.listener_capacity)
            .field("prune_every", &self.prune_every)
            .field("audited", &self.audited)
            .finish()
    }
}

/// How a group hands out messages to its consumers (I7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Order {
    /// Seq order, one message in flight for the whole group: seq n+1 is not
    /// handed out until n is acked or dead-lettered.
    #[default]
    Ordered,
    /// Seq order per message key, one in flight per key; keys proceed in
    /// parallel and messages without a key are independent.
    PerKey,
    /// Any consumer, any order, at most `max_in_flight` leases at once.
    Shared {
        /// The most messages of the group leased at one time.
        max_in_flight: u32,
    },
}

/// Where a new group starts reading its topic. Ignored when the group exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Start {
    /// Every message the topic holds.
    #[default]
    Beginning,
    /// Only messages published after the group is created.
    End,
    /// Messages with a seq greater than this (at most 2^63 − 1, the largest
    /// seq a store gives; more is [`Error::InvalidOptions`]).
    AfterSeq(u64),
}

impl Start {
    /// The seq a group at this start sees messages after (`None`: after
    /// the topic's last message when it is made); a seq above 2^63 − 1 is
    /// [`Error::InvalidOptions`].
    pub(crate) fn start_after(self) -> Result<Option<u64>> {
        match self {
            Start::Beginning => Ok(Some(0)),
            Start::End => Ok(None),
            Start::AfterSeq(seq) if seq > MAX_SEQ => Err(Error::InvalidOptions(format!(
                "start after seq {seq}: seqs end at {MAX_SEQ}"
            ))),
            Start::AfterSeq(seq) => Ok(Some(seq)),
        }
    }
}

/// How long a group waits before it delivers a failed message again: after
/// a nack that gives no delay of its own, and after a lease that ran out.
/// Set with [`GroupOptions::backoff`] and stored with the group.
///
/// The wait after attempt `n` (1-based) of the message at `seq` is
/// `min(base × 2^(n−1), max)` ([`fixed`](Backoff::fixed): `base = max`),
/// less up to `jitter` of itself: `delay × jitter × u`, where `u` in
/// `[0, 1)` is a hash of `(seed, seq, n)` — the same every time, so
/// retries of messages that failed together spread out, and a test on a
/// manual clock knows each time exactly ([`delay`](Backoff::delay)). Delays
/// are whole milliseconds on the bus clock (I10): an expired lease's
/// message is deliverable again `delay` after the lease's end, a nacked
/// one `delay` after the nack. A nack's own delay
/// ([`NackOptions::with_delay`]) wins over the group's backoff.
///
/// ```
/// use std::time::Duration;
/// use litebus::Backoff;
/// let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60));
/// assert_eq!(b.delay(7, 1), Duration::from_secs(1));
/// assert_eq!(b.delay(7, 3), Duration::from_secs(4));
/// assert_eq!(b.delay(7, 20), Duration::from_secs(60));
/// let j = b.jitter(0.5);
/// assert!(j.delay(7, 3) > Duration::from_secs(2) && j.delay(7, 3) <= Duration::from_secs(4));
/// assert_eq!(j.delay(7, 3), j.delay(7, 3));
/// assert_eq!(Backoff::none().delay(7, 3), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
    /// Thousandths; over 1000 is an invalid ratio, refused by `validate`.
    jitter_permille: u32,
    seed: u64,
}

impl Backoff {
    /// No wait: a failed message is deliverable again at once (the default).
    pub const fn none() -> Self {
        Backoff {
            base_ms: 0,
            max_ms: 0,
            jitter_permille: 0,
            seed: 0,
        }
    }

    /// The same wait after every attempt (rounded up to whole milliseconds).
    pub fn fixed(delay: Duration) -> Self {
        let ms = millis(delay);
        Backoff {
            base_ms: ms,
            max_ms: ms,
            ..Backoff::none()
        }
    }

    /// `base` after the first attempt, doubling after each one after it, at
    /// most `max` (each rounded up to whole milliseconds; `base` over `max`
    /// is [`Error::InvalidOptions`]).
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Backoff {
            base_ms: millis(base),
            max_ms: millis(max),
            ..Backoff::none()
        }
    }

    /// Takes up to `ratio` (from 0 to 1) of each wait off, by a hash of the
    /// message's seq and attempt, so messages that failed together do not
    /// come back together. A ratio outside `0..=1` is
    /// [`Error::InvalidOptions`].
    #[must_use]
    pub fn jitter(mut self, ratio: f64) -> Self {
        self.jitter_permille = if (0.0..=1.0).contains(&ratio) {
            // In 0..=1000: the cast cannot truncate.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let permille = (ratio * 1000.0).round() as u32;
            permille
        } else {
            u32::MAX
        };
        self
    }

    /// The seed of the jitter's hash (default 0): groups with different
    /// seeds spread the same seqs differently.
    #[must_use]
    pub const fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The wait after attempt `attempt` (1-based) of the message at `seq`.
    pub fn delay(&self, seq: u64, attempt: u32) -> Duration {
        Duration::from_millis(self.delay_millis(seq, attempt))
    }

    /// [`delay`](Backoff::delay) in milliseconds.
    pub fn delay_millis(&self, seq: u64, attempt: u32) -> u64 {
        let e = attempt.saturating_sub(1);
        let full = if e >= 64 || self.base_ms > self.max_ms >> e {
            self.max_ms
        } else {
            self.base_ms << e
        };
        let ratio = u128::from(self.jitter_permille.min(1000));
        if ratio == 0 || full == 0 {
            return full;
        }
        // u in [0, 1) as thousandths of thousandths.
        let u = u128::from(mix(self.seed, seq, attempt) % 1_000_000);
        let off = u128::from(full) * ratio * u / 1_000_000_000;
        full - u64::try_from(off).unwrap_or(full)
    }

    /// The first wait, in milliseconds (the whole wait of a fixed backoff).
    pub const fn base_millis(&self) -> u64 {
        self.base_ms
    }

    /// The longest wait, in milliseconds.
    pub const fn max_millis(&self) -> u64 {
        self.max_ms
    }

    /// The jitter ratio, in thousandths.
    pub const fn jitter_permille(&self) -> u32 {
        self.jitter_permille
    }

    /// The jitter's seed.
    pub const fn get_seed(&self) -> u64 {
        self.seed
    }

    /// Never waits.
    pub const fn is_none(&self) -> bool {
        self.max_ms == 0
    }

    /// The backoff with these stored fields (`base`, `max` and `jitter` as
    /// [`base_millis`](Backoff::base_millis),
    /// [`max_millis`](Backoff::max_millis) and
    /// [`jitter_permille`](Backoff::jitter_permille) give them): how a
    /// driver reads it back from its store.
    pub const fn from_parts(base_ms: u64, max_ms: u64, jitter_permille: u32, seed: u64) -> Self {
        Backoff {
            base_ms,
            max_ms,
            jitter_permille,
            seed,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.jitter_permille > 1000 {
            return Err(Error::InvalidOptions(
                "backoff jitter must be a ratio from 0 to 1".into(),
            ));
        }
        if self.base_ms > self.max_ms {
            return Err(Error::InvalidOptions(format!(
                "backoff base {} ms is over its max {} ms",
                self.base_ms, self.max_ms
            )));
        }
        if self.max_ms > MAX_SEQ {
            return Err(Error::InvalidOptions(format!(
                "backoff max {} ms is over {MAX_SEQ}",
                self.max_ms
            )));
        }
        Ok(())
    }
}

/// A hash of `(seed, seq, attempt)`: the `SplitMix64` finalizer over a sum
/// of its parts, each times an odd constant.
fn mix(seed: u64, seq: u64, attempt: u32) -> u64 {
    let mut z = seed
        .wrapping_add(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(u64::from(attempt).wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The most deliveries a group makes in a period, across all its consumers
/// and processes: set with [`GroupOptions::rate_limit`] and stored with the
/// group.
///
/// A window opens at the first delivery after the last window closed and
/// lasts `period` (on the bus clock, I10); within it the group hands out at
/// most `max` deliveries (first attempts and redeliveries alike), and a
/// claim that finds the window full finds nothing until it closes (its
/// consumers wait until then). So no window of deliveries holds more than
/// `max`; two windows back to back may deliver `2 × max` within one
/// `period` of each other, as with any fixed-window limiter.
///
/// A rate-limited group's deliveries all come from claims (a publish does
/// not hand messages to its waiting consumers, an ordered group's ack does
/// not take the next message with it), and each claim that delivers
/// writes the window too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    max: u32,
    period_ms: u64,
}

impl RateLimit {
    /// At most `max` deliveries per `period` (rounded up to whole
    /// milliseconds). `max` 0 or a period under 1 ms is
    /// [`Error::InvalidOptions`].
    pub fn new(max: u32, period: Duration) -> Self {
        RateLimit {
            max,
            period_ms: millis(period),
        }
    }

    /// The most deliveries in one window.
    pub const fn max(&self) -> u32 {
        self.max
    }

    /// A window's length.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    /// [`period`](RateLimit::period) in milliseconds.
    pub const fn period_millis(&self) -> u64 {
        self.period_ms
    }

    /// The window a claim at `now` counts in, given the group's last one
    /// (when it opened, `count` deliveries in it): `(left, start, count)`,
    /// how many more deliveries it allows, when it opened and how many it
    /// holds. A window that has closed, or holds nothing, gives way to a new
    /// one opening at `now`.
    pub fn allowed(&self, now: Timestamp, start: Timestamp, count: u32) -> (u32, Timestamp, u32) {
        if now.as_millis() >= start.as_millis().saturating_add(self.period_ms) || count == 0 {
            (self.max, now, 0)
        } else {
            (self.max.saturating_sub(count), start, count)
        }
    }

    /// When the window that starts at `start` closes.
    pub fn closes(&self, start: Timestamp) -> Timestamp {
        Timestamp::from_millis(start.as_millis().saturating_add(self.period_ms))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max == 0 {
            return Err(Error::InvalidOptions(
                "a rate limit allows at least 1 delivery".into(),
            ));
        }
        if self.period_ms == 0 || self.period_ms > MAX_SEQ {
            return Err(Error::InvalidOptions(format!(
                "a rate limit's period must be from 1 ms to {MAX_SEQ} ms"
            )));
        }
        Ok(())
    }
}

/// Options of a consumer group and of one subscription to it.
///
/// `order`, `max_attempts`, `backoff`, `rate_limit` and `dead_letter` belong to the group and are
/// stored with it: a later subscription asking for different ones gets
/// [`Error::InvalidOptions`]. `lease`, `prefetch` and `start` belong to the
/// subscription (`start` only matters to the one that creates the group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOptions {
    pub(crate) order: Order,
    pub(crate) lease: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) dead_letter: Option<String>,
    pub(crate) start: Start,
    pub(crate) prefetch: u32,
    pub(crate) max_in_flight: Option<u32>,
}

impl GroupOptions {
    /// Ordered delivery, 30 s leases, 5 attempts, no backoff, dead letters
    /// to `<topic>.dlq`, from the beginning, prefetch 32.
    pub fn new() -> Self {
        GroupOptions {
            order: Order::Ordered,
            lease: Duration::from_secs(30),
            max_attempts: 5,
            backoff: Backoff::none(),
            rate_limit: None,
            dead_letter: None,
            start: Start::Beginning,
            prefetch: 32,
            max_in_flight: None,
        }
    }

    /// The ordering mode.
    #[must_use]
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// At most `max` deliveries of an [`Order::PerKey`] group out at once,
    /// across every consumer, bus and process that shares the group
    /// (default: none beyond one per key). A consumer's claim gets what is
    /// left of it, and waits while there is nothing left. Stored with the
    /// group. A shared group's cap is
    /// [`Order::Shared { max_in_flight }`](Order::Shared); with any other
    /// order than per-key this is [`Error::InvalidOptions`].
    #[must_use]
    pub fn max_in_flight(mut self, max: u32) -> Self {
        self.max_in_flight = Some(max);
        self
    }

    /// How long a consumer holds a delivery before it is handed out again.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Deliveries without ack after which a message is dead-lettered (I8):
    /// at least 1; `u32::MAX` is [`unlimited_attempts`](Self::unlimited_attempts).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// No limit on attempts: a message that keeps failing is delivered
    /// again and again and never dead-lettered for it (pair it with a nack
    /// delay so it does not spin). Stored as `max_attempts(u32::MAX)`, the
    /// same setting: attempts are counted in a `u32`, so after 4,294,967,295
    /// deliveries of one message (136 years at one a second) it would go to
    /// the dead-letter topic like any other.
    #[must_use]
    pub fn unlimited_attempts(self) -> Self {
        self.max_attempts(u32::MAX)
    }

    /// How long a failed message waits before it is delivered again, after
    /// a nack without a delay of its own and after an expired lease
    /// (default [`Backoff::none`]: at once).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// At most `max` deliveries of the group per `period`, across all its
    /// consumers ([`RateLimit`]; default: no limit).
    #[must_use]
    pub fn rate_limit(mut self, max: u32, period: Duration) -> Self {
        self.rate_limit = Some(RateLimit::new(max, period));
        self
    }

    /// The dead-letter topic (default `<topic>.dlq`; for a topic longer than
    /// 251 bytes, its first bytes, a hash of its name and `.dlq`, so that
    /// the name fits).
    #[must_use]
    pub fn dead_letter(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter = Some(topic.into());
        self
    }

    /// Where a new group starts.
    #[must_use]
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// How many deliveries one claim fetches and buffers. An ordered group
    /// delivers one at a time: its claim reads `prefetch - 1` messages
    /// ahead, and each ack takes the next of them in the same step, so the
    /// group stays with this consumer while it has work (prefetch 1: every
    /// ack lets the group go to whichever consumer claims first).
    #[must_use]
    pub fn prefetch(mut self, messages: u32) -> Self {
        self.prefetch = messages;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.lease < Duration::from_millis(1) {
            return Err(Error::InvalidOptions("lease must be at least 1 ms".into()));
        }
        if self.max_attempts == 0 {
            return Err(Error::InvalidOptions(
                "max_attempts must be at least 1".into(),
            ));
        }
        if self.prefetch == 0 {
            return Err(Error::InvalidOptions("prefetch must be at least 1".into()));
        }
        self.start.start_after()?;
        self.backoff.validate()?;
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        if let Order::Shared { max_in_flight: 0 } = self.order {
            return Err(Error::InvalidOptions(
                "max_in_flight must be at least 1".into(),
            ));
        }
        match (self.max_in_flight, self.order) {
            (Some(0), _) => Err(Error::InvalidOptions(
                "max_in_flight must be at least 1".into(),
            )),
            (Some(_), order) if order != Order::PerKey => Err(Error::InvalidOptions(format!(
                "GroupOptions::max_in_flight caps a per-key group, not {order:?} \
                 (a shared group's cap is Order::Shared {{ max_in_flight }})"
            ))),
            _ => Ok(()),
        }
    }
}

impl From<&crate::driver::GroupSpec> for GroupOptions {
    /// The options that open a group as it is stored (the settings its
    /// [`GroupStats`](crate::driver::GroupStats) report): order, cap,
    /// attempts, backoff, rate limit and dead-letter topic. Lease, start
    /// and prefetch are not stored and keep their defaults.
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, GroupOptions, MemoryDriver, Order};
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// let options = GroupOptions::new().order(Order::PerKey).max_attempts(3);
    /// bus.subscribe("jobs", "workers", options).await?;
    /// let stats = bus.stats("jobs").await?;
    /// let stored = GroupOptions::from(&stats.groups[0].settings);
    /// // Another consumer of the group, with the settings it has.
    /// bus.subscribe("jobs", "workers", stored).await?;
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    fn from(spec: &crate::driver::GroupSpec) -> Self {
        GroupOptions {
            order: spec.order,
            max_attempts: spec.max_attempts,
            backoff: spec.backoff,
            rate_limit: spec.rate_limit,
            dead_letter: Some(spec.dead_letter.clone()),
            max_in_flight: spec.max_in_flight,
            ..GroupOptions::new()
        }
    }
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions::new()
    }
}

/// What a nack asks for: when to deliver again and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NackOptions {
    /// Wait this long before the message is deliverable again; `None`: as
    /// long as the group's [`Backoff`] says (at once without one).
    pub delay: Option<Duration>,
    /// Why processing failed; kept as the message's last error and written
    /// into its dead letter.
    pub reason: Option<String>,
}

impl NackOptions {
    /// Deliver again after the group's backoff, no reason given.
    pub fn new() -> Self {
        NackOptions::default()
    }

    /// Deliver again after `delay`, whatever the group's backoff says
    /// (`Duration::ZERO`: at once).
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Record why processing failed.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// How long a topic keeps its messages, set with
/// [`Bus::set_retention`](crate::Bus::set_retention) and stored with the
/// topic. The default keeps every message forever.
///
/// The rules combine: a message goes once any of them lets it go. Each
/// rule lets go of the topic's oldest messages first, so what a topic keeps
/// is always its newest messages, from some seq on:
/// - [`until_consumed`](Retention::until_consumed): a message goes once every
///   group of the topic has acked or dead-lettered it and every message
///   before it (once it is below every group's acked floor). A topic
///   without groups keeps nothing under this rule alone. A group created
///   later with [`Start::Beginning`] starts at the oldest message kept.
/// - [`max_age`](Retention::max_age): a message goes once it is that old
///   (by the bus clock at its publish; a row plain SQL wrote without a
///   publish time counts as published at the Unix epoch).
/// - [`max_messages`](Retention::max_messages): the topic keeps at most
///   that many messages.
/// - [`max_bytes`](Retention::max_bytes): the topic keeps at most that many
///   payload bytes.
///
/// Dedupe (I2) holds while the topic keeps a message; with a
/// [`dedupe_window`](Retention::dedupe_window), the id of a message that
/// went is remembered until that long after its publish, and a publish of
/// it is still [`Outcome::Duplicate`](crate::Outcome::Duplicate) of the
/// original.
///
/// A message that goes before a group consumed it is counted in that
/// group's [`GroupStats::pruned`](crate::GroupStats::pruned), and a delivery
/// of it that is out is no longer current. Messages go in bounded batches,
/// by the bus that publishes or acks them ([`BusOptions::prune_every`]) and
/// by [`Bus::prune`](crate::Bus::prune).
///
/// ```
/// use std::time::Duration;
/// use litebus::Retention;
/// let r = Retention::new().until_consumed().max_age(Duration::from_secs(7 * 86_400));
/// assert!(r.is_until_consumed());
/// assert_eq!(r.get_max_age(), Some(Duration::from_secs(7 * 86_400)));
/// assert!(Retention::new().keeps_everything());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Retention {
    until_consumed: bool,
    max_age_ms: Option<u64>,
    max_messages: Option<u64>,
    max_bytes: Option<u64>,
    dedupe_window_ms: Option<u64>,
}

impl Retention {
    /// Keep every message (the default).
    pub const fn new() -> Self {
        Retention {
            until_consumed: false,
            max_age_ms: None,
            max_messages: None,
            max_bytes: None,
            dedupe_window_ms: None,
        }
    }

    /// Remember the id of a message that goes until `window` after its
    /// publish (rounded up to whole milliseconds; at least 1 ms): a publish
    /// of it until then is a duplicate of the original.
    #[must_use]
    pub fn dedupe_window(mut self, window: Duration) -> Self {
        self.dedupe_window_ms = Some(millis(window));
        self
    }

    /// How long the ids of messages that went are remembered.
    pub fn get_dedupe_window(&self) -> Option<Duration> {
        self.dedupe_window_ms.map(Duration::from_millis)
    }

    /// [`get_dedupe_window`](Retention::get_dedupe_window) in milliseconds.
    pub const fn dedupe_window_millis(&self) -> Option<u64> {
        self.dedupe_window_ms
    }

    /// Let a message go once every group has consumed it.
    #[must_use]
    pub const fn until_consumed(mut self) -> Self {
        self.until_consumed = true;
        self
    }

    /// Let a message go once it is `age` old (rounded up to whole
    /// milliseconds; at least 1 ms).
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age_ms = Some(millis(age));
        self
    }

    /// Keep at most `count` messages (at least 1).
    #[must_use]
    pub const fn max_messages(mut self, count: u64) -> Self {
        self.max_messages = Some(count);
        self
    }

    /// Keep at most `bytes` of payload (at least 1).
    #[must_use]
    pub const fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Whether messages go once consumed.
    pub const fn is_until_consumed(&self) -> bool {
        self.until_consumed
    }

    /// The age at which messages go.
    pub fn get_max_age(&self) -> Option<Duration> {
        self.max_age_ms.map(Duration::from_millis)
    }

    /// [`get_max_age`](Retention::get_max_age) in milliseconds.
    pub const fn max_age_millis(&self) -> Option<u64> {
        self.max_age_ms
    }

    /// The most messages kept.
    pub const fn get_max_messages(&self) -> Option<u64> {
        self.max_messages
    }

    /// The most payload bytes kept.
    pub const fn get_max_bytes(&self) -> Option<u64> {
        self.max_bytes
    }

    /// No rule lets any message go (a dedupe window alone lets none go).
    pub const fn keeps_everything(&self) -> bool {
        !self.until_consumed
            && self.max_age_ms.is_none()
            && self.max_messages.is_none()
            && self.max_bytes.is_none()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("max_age", self.max_age_ms),
            ("max_messages", self.max_messages),
            ("max_bytes", self.max_bytes),
            ("dedupe_window", self.dedupe_window_ms),
        ] {
            match value {
                Some(0) => {
                    return Err(Error::InvalidOptions(format!(
                        "retention {name} must be at least 1"
                    )));
                }
                Some(v) if v > MAX_SEQ => {
                    return Err(Error::InvalidOptions(format!(
                        "retention {name} {v} is over {MAX_SEQ}"
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `d` in whole milliseconds, rounded up.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each wait doubles from the base up to the max, whatever the attempt
    /// (no overflow at `u32::MAX` attempts nor with the largest delays);
    /// jitter takes off at most its share, and the same `(seq, attempt)`
    /// always gets the same wait.
    #[test]
    fn backoff_waits_double_up_to_the_max_and_jitter_stays_in_its_share() {
        let big = Duration::from_millis(MAX_SEQ);
        for (base, max) in [
            (1, 1),
            (3, 1000),
            (1000, 1000),
            (7, MAX_SEQ),
            (MAX_SEQ, MAX_SEQ),
        ] {
            let plain =
                Backoff::exponential(Duration::from_millis(base), Duration::from_millis(max));
            assert!(plain.validate().is_ok());
            let jittered = plain.jitter(0.3).seed(99);
            let mut last = 0;
            for attempt in (1..=70).chain([1_000, u32::MAX - 1, u32::MAX]) {
                let full = plain.delay_millis(12, attempt);
                // Below 2^127: no bit is lost.
                let expected = match attempt - 1 {
                    e @ 0..64 => (u128::from(base) << e).min(u128::from(max)),
                    _ => u128::from(max),
                };
                assert_eq!(u128::from(full), expected, "{base} {max} {attempt}");
                assert!(full >= last);
                last = full;
                let j = jittered.delay_millis(12, attempt);
                assert!(
                    j <= full && j >= full.saturating_sub(full / 10 * 3 + 3),
                    "{j} of {full}"
                );
                assert_eq!(j, jittered.delay_millis(12, attempt));
            }
        }
        assert_eq!(Backoff::none().delay(5, u32::MAX), Duration::ZERO);
        assert_eq!(Backoff::fixed(big).delay(5, 9), big);
        let spread: std::collections::BTreeSet<u64> = (1..=100)
            .map(|seq| {
                Backoff::fixed(Duration::from_secs(10))
                    .jitter(1.0)
                    .delay_millis(seq, 1)
            })
            .collect();
        assert!(spread.len() > 90, "{} distinct waits of 100", spread.len());
    }

    #[test]
    fn a_backoff_that_makes_no_sense_is_refused() {
        let ms = Duration::from_millis;
        for bad in [
            Backoff::exponential(ms(2), ms(1)),
            Backoff::fixed(ms(MAX_SEQ + 1)),
            Backoff::fixed(ms(1)).jitter(1.01),
            Backoff::fixed(ms(1)).jitter(-0.01),
            Backoff::fixed(ms(1)).jitter(f64::INFINITY),
            Backoff::fixed(ms(1)).jitter(f64::NAN),
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidOptions(_))),
                "{bad:?}"
            );
            let options = GroupOptions::new().backoff(bad);
            assert!(matches!(options.validate(), Err(Error::InvalidOptions(_))));
        }
        assert_eq!(Backoff::fixed(ms(1)).jitter(0.25).jitter_permille(), 250);
    }
}
