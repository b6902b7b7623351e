//! The storage contract: the [`Driver`] trait and the values it exchanges.
//!
//! Each method is one atomic storage step: it happens entirely or not at all,
//! and concurrent calls behave as if run one after the other. The bus does
//! everything else (validation, ids, wake-ups, listeners, timers), so a driver
//! only has to get the state right. The in-memory [`MemoryDriver`] is the
//! readable reference of every rule below.
//!
//! # `Send`
//! On native targets every driver future, the driver itself and the clock are
//! `Send` (and `Sync`), so a [`Bus`](crate::Bus) can be shared between threads
//! and its futures spawned on multi-threaded executors. On `wasm32` there are
//! no threads and JavaScript values are not `Send`, so these bounds are
//! dropped there ([`MaybeSend`], [`MaybeSendSync`], [`BoxFuture`]).
//!
//! [`MemoryDriver`]: crate::MemoryDriver

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::Result;
use crate::message::{Message, Outcome};
use crate::options::{Backoff, Order, RateLimit, Retention};
use crate::read::Record;
pub use crate::wake::{Inbox, Wakeups};

/// `Send` on native targets, nothing on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}
/// `Send` on native targets, nothing on wasm32.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// `Send + Sync` on native targets, nothing on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSendSync: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync + ?Sized> MaybeSendSync for T {}
/// `Send + Sync` on native targets, nothing on wasm32.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSendSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSendSync for T {}

/// A boxed future, `Send` on native targets.
#[cfg(not(target_arch = "wasm32"))]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed future, `Send` on native targets.
#[cfg(target_arch = "wasm32")]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What a driver can do beyond the common contract. The process tests of
/// the test kit (`litebus-conformance`) read `durable` and `multi_process`
/// to choose what to check; `sql_publish` tells users whether plain SQL
/// may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Data survives closing and reopening the store (and a killed process,
    /// once `publish` has returned).
    pub durable: bool,
    /// Several processes may share one store.
    pub multi_process: bool,
    /// Plain SQL (a user's transaction, a trigger) can publish.
    pub sql_publish: bool,
}

impl Capabilities {
    /// No optional capability.
    pub const NONE: Capabilities = Capabilities {
        durable: false,
        multi_process: false,
        sql_publish: false,
    };

    /// With `durable` set as given.
    #[must_use]
    pub const fn durable(mut self, yes: bool) -> Self {
        self.durable = yes;
        self
    }

    /// With `multi_process` set as given.
    #[must_use]
    pub const fn multi_process(mut self, yes: bool) -> Self {
        self.multi_process = yes;
        self
    }

    /// With `sql_publish` set as given.
    #[must_use]
    pub const fn sql_publish(mut self, yes: bool) -> Self {
        self.sql_publish = yes;
        self
    }
}

/// The settings a group is stored with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// Ordering mode (I7).
    pub order: Order,
    /// Deliveries without ack before the message is dead-lettered (I8).
    pub max_attempts: u32,
    /// The wait before a failed message is delivered again (I6).
    pub backoff: Backoff,
    /// The most deliveries per period, across the group's consumers.
    pub rate_limit: Option<RateLimit>,
    /// A per-key group's most deliveries out at once, across its
    /// consumers (`None`: no cap beyond one per key; a shared group's is
    /// in its [`Order`]).
    pub max_in_flight: Option<u32>,
    /// Where dead letters go.
    pub dead_letter: String,
}

/// Append messages to a topic (I1, I2).
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// The topic; created if new.
    pub topic: &'a str,
    /// Validated messages, each with an id.
    pub messages: &'a [Arc<Message>],
    /// The bus clock's time: the messages' publish time, which
    /// [`Retention::max_age`] counts from.
    pub now: Timestamp,
    /// When set, the append happens only if the topic's last seq equals it
    /// (0 for an empty topic); otherwise [`Error::Conflict`](crate::Error::Conflict).
    pub expected_last: Option<u64>,
    /// Consumers of the topic waiting caught up, one per group: in the same
    /// step, a driver may lease new messages to them as their claim would
    /// (a hand-off), and after the commit puts what it leased in their
    /// [`Inbox`], so that publish → delivery costs no claim. A driver may
    /// ignore them: they are woken either way.
    pub handoffs: &'a [Handoff],
}

/// A waiting consumer an append may lease new messages to ([`Append::handoffs`]).
#[derive(Debug, Clone)]
pub struct Handoff {
    /// Its group.
    pub group: String,
    /// Its consumer id.
    pub consumer: String,
    /// The bus clock's time.
    pub now: Timestamp,
    /// When the leases end.
    pub lease_until: Timestamp,
    /// The most deliveries to lease (an ordered group: one, and up to
    /// `max - 1` read ahead).
    pub max: u32,
    /// The group's backoff ([`Claim::backoff`]).
    pub backoff: Backoff,
    /// Where they go once the step has committed.
    pub inbox: Inbox,
}

/// Create a group if it does not exist, or check its stored settings.
#[derive(Debug, Clone, Copy)]
pub struct EnsureGroup<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The group.
    pub group: &'a str,
    /// Settings it must have; a stored group with others is an
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions).
    pub spec: &'a GroupSpec,
    /// The group sees messages with seq greater than this (only at creation).
    /// `None` means "after the topic's current last message".
    pub start_after: Option<u64>,
}

/// Claim up to `max` deliverable messages for one consumer (I4, I6, I7, I8).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The group (it exists).
    pub group: &'a str,
    /// Who takes the leases.
    pub consumer: &'a str,
    /// The bus clock's time.
    pub now: Timestamp,
    /// When the new leases end.
    pub lease_until: Timestamp,
    /// The most deliveries to return. An ordered group delivers one and
    /// reads up to `max - 1` more ahead ([`ClaimOutcome::ahead`]).
    pub max: u32,
    /// The group's backoff (as stored; the subscription checked it): a
    /// lease this step writes, of attempt `n` of the message at `seq`,
    /// leaves it deliverable again, should the lease run out, only from
    /// `lease_until + backoff.delay(seq, n)` (I6). So does every step that
    /// writes a lease: an extension, an ordered group's ack that takes the
    /// next message, a hand-off.
    pub backoff: Backoff,
    /// The group's rate limit (as stored; the subscription checked it): the
    /// claim delivers no more than its window has left (a holder asking
    /// for its delivery again is not a new delivery), counts what it
    /// delivers into the window, and when the window is full, says when it
    /// closes ([`ClaimOutcome::next_due`]). A rate-limited group gets no
    /// hand-offs nor next messages taken with an ack.
    pub rate_limit: Option<RateLimit>,
}

/// One message handed to a consumer by a claim.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Position in the topic.
    pub seq: u64,
    /// 1-based delivery count for this group, the delivery's lease token
    /// together with `seq`.
    pub attempt: u32,
    /// When its lease ends: the claim's `lease_until`, as stored.
    pub lease_until: Timestamp,
    /// The message.
    pub message: Arc<Message>,
    /// The group's generation when it was handed out: a seek starts a new
    /// one (and attempts again at 1), so a delivery is known by
    /// `(generation, seq, attempt)`; one of an earlier generation is never
    /// current (I14).
    pub generation: u64,
}

/// A message moved to a dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLettered {
    /// The dead-letter topic.
    pub topic: String,
    /// Its seq there.
    pub seq: u64,
    /// The dead letter as stored (see [`dead_letter_message`]).
    pub message: Arc<Message>,
}

/// A message an ordered group's consumer read ahead of its delivery: not
/// leased, never delivered to the group, taken with the ack before it
/// ([`Settle::next`]).
#[derive(Debug, Clone)]
pub struct Ahead {
    /// Position in the topic.
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
}

/// What a claim did.
#[derive(Debug, Clone, Default)]
pub struct ClaimOutcome {
    /// The new deliveries, in seq order.
    pub deliveries: Vec<Claimed>,
    /// Ordered groups: the messages after the one delivered, in seq order
    /// and without gaps (up to `max - 1`; empty when nothing was
    /// delivered). The consumer takes them one by one, each with the ack
    /// of the one before it, so the group stays on one consumer while it
    /// has work and pays one write per message.
    pub ahead: Vec<Ahead>,
    /// When nothing was deliverable: the earliest time something may become
    /// deliverable without any other call (a lease ending, a delay passing).
    pub next_due: Option<Timestamp>,
    /// Messages whose last lease had expired at their final attempt, moved to
    /// the dead-letter topic by this claim.
    pub dead_lettered: Vec<DeadLettered>,
}

/// What to do with a leased message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Done: never deliver it to this group again (I5).
    Ack,
    /// Failed: deliverable again from `retry_at` (I6), or dead-lettered if
    /// this was the final attempt (I8).
    Nack {
        /// When it may be delivered again.
        retry_at: Timestamp,
        /// Why, kept as the last error.
        reason: Option<String>,
    },
    /// Still working: the lease now ends at `lease_until`.
    Extend {
        /// The new end of the lease.
        lease_until: Timestamp,
    },
}

/// Settle one delivery, identified by `(seq, attempt)`.
///
/// The lease is current when the group is still in the delivery's
/// generation (no seek since), the message is not settled and its latest
/// delivery is this attempt, still leased (even if the lease has run out, as
/// long as nobody else took the message). Otherwise the driver returns
/// [`Error::LeaseLost`](crate::Error::LeaseLost) and changes nothing.
#[derive(Debug, Clone)]
pub struct Settle<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The group.
    pub group: &'a str,
    /// The message's seq.
    pub seq: u64,
    /// The delivery's attempt.
    pub attempt: u32,
    /// The group's generation the delivery was handed out in
    /// ([`Claimed::generation`]): the lease is current only while the
    /// group is still in it.
    pub generation: u64,
    /// The bus clock's time.
    pub now: Timestamp,
    /// What to do.
    pub settlement: Settlement,
    /// The group is `Ordered` (as its consumer's options say, and the
    /// stored group is the same): its deliveries are leases of the group's
    /// first unsettled message.
    pub ordered: bool,
    /// With an ack of an ordered group's current delivery: in the same
    /// step, lease the next message, which the consumer read ahead, to it
    /// (a new delivery, attempt 1). The claim that read it guarantees it is
    /// the group's next message.
    pub next: Option<Next<'a>>,
    /// The group's backoff, for the lease an extension or `next` writes
    /// ([`Claim::backoff`]).
    pub backoff: Backoff,
}

/// The message an ordered group's consumer takes with an ack ([`Settle::next`]).
#[derive(Debug, Clone, Copy)]
pub struct Next<'a> {
    /// Who takes it: the consumer that acks.
    pub consumer: &'a str,
    /// Its seq: the one after the acked message, read by the claim.
    pub seq: u64,
    /// When its lease ends.
    pub lease_until: Timestamp,
}

/// End every lease one consumer holds in a group (I6, I8): its
/// subscription was dropped or closed, or its bus closed.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The group.
    pub group: &'a str,
    /// Whose leases end.
    pub consumer: &'a str,
    /// The bus clock's time: the released messages are deliverable from now.
    pub now: Timestamp,
}

/// Move a group's position (a consumer reset).
#[derive(Debug, Clone, Copy)]
pub struct Seek<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The group (it exists, else
    /// [`Error::UnknownGroup`](crate::Error::UnknownGroup)).
    pub group: &'a str,
    /// The group sees the messages with a seq greater than this from now
    /// on; `None`: after the topic's last message now.
    pub start_after: Option<u64>,
}

/// Let go of a topic's oldest messages that its [`Retention`] no longer
/// keeps: at most `limit` of them, in one step.
#[derive(Debug, Clone, Copy)]
pub struct Prune<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The bus clock's time, for [`Retention::max_age`].
    pub now: Timestamp,
    /// The most messages to let go of.
    pub limit: u32,
}

/// One step of deleting a topic ([`Driver::delete_topic`]), or of lifting
/// its deletion.
#[derive(Debug, Clone, Copy)]
pub struct DeleteTopic<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The most messages to delete in this step.
    pub limit: u32,
    /// Lift the deletion instead ([`Bus::create_topic`](crate::Bus::create_topic)):
    /// a topic that is not deleted is left alone; a deleted one loses up to
    /// `limit` of the messages its deletion left, and when none is left,
    /// its tombstone, in the same step.
    pub lift: bool,
}

/// What one step of [`Driver::delete_topic`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicDeletion {
    /// The topic was deleted before this step (it had a tombstone).
    pub was_deleted: bool,
    /// The groups this step deleted, by name.
    pub groups: Vec<String>,
    /// The messages this step deleted: fewer than its limit when the topic
    /// holds none now.
    pub messages: u64,
}

/// Read the messages of a topic without consuming them.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Messages with a seq greater than this.
    pub after: u64,
    /// Only the messages with this key.
    pub key: Option<&'a str>,
    /// The most messages to return.
    pub limit: u32,
    /// Leave out the dead letters a redrive or purge took back
    /// ([`Driver::redrive`]): how [`Bus::dead_letters`](crate::Bus::dead_letters)
    /// reads a dead-letter topic. A plain read has them.
    pub skip_taken_back: bool,
}

/// Dead letters of one group taken back: sent back to the group (a
/// redrive) or given up (a purge). See [`Driver::redrive`].
#[derive(Debug, Clone, Copy)]
pub struct Redrive<'a> {
    /// The topic of the group.
    pub topic: &'a str,
    /// The group.
    pub group: &'a str,
    /// Its dead-letter topic, which holds the dead letters.
    pub dead_letter: &'a str,
    /// Each dead letter's seq in the dead-letter topic, with the message a
    /// redrive sends back for it (the one that died: its id, payload, key
    /// and metadata without the `litebus.dead_letter.*` entries).
    pub letters: &'a [(u64, Arc<Message>)],
    /// Give the dead letters up rather than send them back.
    pub purge: bool,
    /// The bus clock.
    pub now: Timestamp,
}

/// Statistics of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// The group's name.
    pub group: String,
    /// Messages waiting: neither settled nor under an unexpired lease
    /// (including those delayed by a nack or `deliver_at`).
    pub ready: u64,
    /// Messages under an unexpired lease.
    pub in_flight: u64,
    /// Every message with a seq at or below this is settled (acked or
    /// dead-lettered) or before the group's start: the seq before the
    /// group's first unsettled message, or the topic's last seq (at least the
    /// start) when none is unsettled.
    pub acked_floor: u64,
    /// Messages this group moved to its dead-letter topic.
    pub dead_lettered: u64,
    /// Messages the topic's [`Retention`] let go of before this group
    /// acked or dead-lettered them: what it lost to retention.
    pub pruned: u64,
    /// How long the group's oldest unsettled message has waited since its
    /// publish (by the bus clock); `None` when it has none. With `ready +
    /// in_flight` (how many it is behind), its lag.
    pub lag: Option<Duration>,
    /// The settings it is stored with: its order, `max_attempts` and
    /// dead-letter topic.
    pub settings: GroupSpec,
}

impl GroupStats {
    pub(crate) fn new(
        group: String,
        [ready, in_flight, acked_floor, dead_lettered, pruned]: [u64; 5],
        lag: Option<Duration>,
        settings: GroupSpec,
    ) -> Self {
        GroupStats {
            group,
            ready,
            in_flight,
            acked_floor,
            dead_lettered,
            pruned,
            lag,
            settings,
        }
    }
}

/// Statistics of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic's name.
    pub topic: String,
    /// Its highest seq (0 when empty).
    pub last_seq: u64,
    /// Messages it holds.
    pub messages: u64,
    /// Its groups, by name.
    pub groups: Vec<GroupStats>,
    /// How long it keeps its messages.
    pub retention: Retention,
}

impl TopicStats {
    pub(crate) fn new(
        topic: String,
        (last_seq, messages): (u64, u64),
        groups: Vec<GroupStats>,
        retention: Retention,
    ) -> Self {
        TopicStats {
            topic,
            last_seq,
            messages,
            groups,
            retention,
        }
    }
}

/// A storage engine behind a [`Bus`](crate::Bus). See the module docs.
pub trait Driver: MaybeSendSync + 'static {
    /// What this driver can do beyond the common contract.
    fn capabilities(&self) -> Capabilities;

    /// Appends a batch atomically, in order, with dedupe by id: an id the
    /// topic holds (or that came earlier in the batch) gives
    /// [`Outcome::Duplicate`] naming the original's seq and stores nothing.
    fn append<'a>(&'a self, append: Append<'a>) -> BoxFuture<'a, Result<Vec<Outcome>>>;

    /// Creates the group or checks its stored settings.
    fn ensure_group<'a>(&'a self, group: EnsureGroup<'a>) -> BoxFuture<'a, Result<()>>;

    /// First moves to the dead-letter topic every message of the group whose
    /// lease expired at its final attempt, then leases up to `max` deliverable
    /// messages in seq order, obeying the group's [`Order`]. A message is
    /// deliverable when it is not settled, not under an unexpired lease, its
    /// retry time and `deliver_at` have come, and (ordered / per key) every
    /// earlier message of the group (of its key) is settled.
    ///
    /// Cancel safety (I11): a claim future dropped after any poll leaves
    /// nothing leased that the same consumer's next claim does not return
    /// (with the `lease_until` it was leased with). A driver either does
    /// not run the claim, undoes it, or keeps what it leased for that
    /// consumer.
    fn claim<'a>(&'a self, claim: Claim<'a>) -> BoxFuture<'a, Result<ClaimOutcome>>;

    /// Acks, nacks or extends one delivery. A nack of the final attempt
    /// dead-letters the message and returns the dead letter.
    fn settle<'a>(&'a self, settle: Settle<'a>) -> BoxFuture<'a, Result<Option<DeadLettered>>>;

    /// Ends every lease the consumer holds in the group: each message
    /// becomes deliverable again at once, or is dead-lettered if that was its
    /// final attempt. Returns the dead letters; nothing for a group that
    /// does not exist (any more).
    fn release<'a>(&'a self, release: Release<'a>) -> BoxFuture<'a, Result<Vec<DeadLettered>>>;

    /// Up to `limit` messages of the topic with a seq after `after` (and
    /// the key, if given), in seq order, changing nothing. It sees every
    /// commit made before it was called; a topic's seqs are given in
    /// commit order, so reading on from the last seq returned misses
    /// nothing committed later. A row plain SQL wrote that is not a message
    /// comes back with its reason ([`Record::undecodable`]), never as an
    /// error, so a reader goes on past it. A driver reads one key's
    /// messages through an index, not by scanning the topic.
    ///
    /// [`Record::undecodable`]: crate::Record::undecodable
    fn read<'a>(&'a self, read: Read<'a>) -> BoxFuture<'a, Result<Vec<Record>>>;

    /// Moves a group's position, atomically: the group forgets every
    /// delivery, lease and attempt count (a delivery out is no longer
    /// current: settling it gives [`Error::LeaseLost`](crate::Error::LeaseLost)),
    /// keeps its settings and its count of dead letters, starts a new
    /// generation ([`Claimed::generation`]: a delivery of an earlier one is
    /// never current, even once the same message is handed out again at the
    /// same attempt), and from now on sees the messages after
    /// `start_after`, each as new (attempt 1).
    fn seek<'a>(&'a self, seek: Seek<'a>) -> BoxFuture<'a, Result<()>>;

    /// Takes back dead letters of a group, atomically; the seqs (in the
    /// dead-letter topic) of those it took back, in order. It takes back
    /// only what the dead-letter topic still holds and no redrive or purge
    /// took back before, so a dead letter is taken back at most once (I8).
    /// A taken-back dead letter stays in the dead-letter topic (a log like
    /// any other: its own groups and reads see it, its retention lets it
    /// go) but is no longer one of the group's dead letters
    /// ([`Read::skip_taken_back`]). A redrive gives each message back to
    /// the group alone as new (attempt 0, deliverable now), after every
    /// message the group's topic holds: with a seq above every seq given
    /// so far, which the message keeps in its group (an ordered group
    /// delivers it in that seq's place, after the messages of the topic
    /// published before the redrive and before the later ones, even when
    /// retention took those before it; a per-key group delivers it after
    /// the messages of its key published before the redrive). It is not a
    /// message of the topic: reads, other groups, listeners, retention and
    /// the topic's counts do not see it, and it goes when the group settles
    /// it (an ack, a dead letter), seeks or is deleted. A group that does
    /// not exist is [`Error::UnknownGroup`](crate::Error::UnknownGroup),
    /// and nothing changes.
    fn redrive<'a>(&'a self, redrive: Redrive<'a>) -> BoxFuture<'a, Result<Vec<u64>>>;

    /// Deletes a group with its position, leases and attempt counts;
    /// whether it existed. Its messages and dead letters stay. A later
    /// claim for it is [`Error::UnknownGroup`](crate::Error::UnknownGroup);
    /// settling a delivery of it is
    /// [`Error::LeaseLost`](crate::Error::LeaseLost); a release of it
    /// returns nothing; subscribing again creates it anew.
    fn delete_group<'a>(&'a self, topic: &'a str, group: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// One step of deleting a topic, atomically: it gets a tombstone (an
    /// append to it, a group of it or naming it as dead-letter topic, and
    /// its retention are [`Error::TopicDeleted`](crate::Error::TopicDeleted)
    /// from then on, from any bus of the store, plain SQL included) and
    /// loses its groups (as [`delete_group`](Driver::delete_group) does),
    /// retention, remembered ids and up to `limit` of its messages; the bus
    /// runs it again until a step deletes fewer than `limit`. While the
    /// topic is the dead-letter topic of a group of another topic it is
    /// [`Error::TopicInUse`](crate::Error::TopicInUse) and changes nothing.
    /// With [`DeleteTopic::lift`], it lifts the deletion instead.
    fn delete_topic<'a>(&'a self, step: DeleteTopic<'a>) -> BoxFuture<'a, Result<TopicDeletion>>;

    /// Stores the topic's retention, in place of the one it had; the
    /// messages go at the next [`prune`](Driver::prune).
    fn set_retention<'a>(
        &'a self,
        topic: &'a str,
        retention: Retention,
    ) -> BoxFuture<'a, Result<()>>;

    /// Lets go of up to `limit` of the topic's oldest messages that its
    /// retention no longer keeps, in one step; how many went. Each group
    /// forgets them (a delivery of one that is out is no longer current)
    /// and counts those it had not acked or dead-lettered as
    /// [`GroupStats::pruned`]. Their ids may be published again.
    fn prune<'a>(&'a self, prune: Prune<'a>) -> BoxFuture<'a, Result<u64>>;

    /// The names of the topics that hold a message or a group, in order.
    fn topics(&self) -> BoxFuture<'_, Result<Vec<String>>>;

    /// Statistics of a topic and its groups at time `now`.
    fn stats<'a>(&'a self, topic: &'a str, now: Timestamp) -> BoxFuture<'a, Result<TopicStats>>;

    /// Closes this handle of the store: later calls through it may fail.
    /// The bus calls it when it closes. A driver whose clones (or several
    /// opens of one file) share a store flushes and closes the store when
    /// its last handle closes, and not before: closing one bus must not
    /// break another bus on the same store.
    fn close(&self) -> BoxFuture<'_, Result<()>>;

    /// The store's [`Wakeups`]. Every bus on a store waits and wakes through
    /// them, so a commit made through one bus wakes the subscriptions of the
    /// others at once. A driver returns the same `Wakeups` from each handle
    /// of one store: its clones, and (for a file) every driver on that file
    /// in this process. `None` (the default): each bus keeps its own, and
    /// only its own commits (and [`watch_external`](Driver::watch_external))
    /// wake its subscriptions.
    ///
    /// A driver that hands out its `Wakeups` also wakes them for every
    /// commit of an [`append`](Driver::append) itself
    /// ([`Wakeups::published`] with the count of new messages), when the
    /// commit happens: its caller may have stopped waiting by then (a
    /// publish dropped under a deadline), and nobody else would wake the
    /// waiting consumers (I11). The bus wakes them itself only for a driver
    /// that returns `None`.
    fn wakeups(&self) -> Option<Wakeups> {
        None
    }

    /// A future that completes when the store may have changed by a hand
    /// other than this driver's: another process, or plain SQL on another
    /// connection. A waiting subscription listens to it besides in-process
    /// commits and its timers; `None` (the default) when nothing but this
    /// driver writes. It may complete spuriously; it must not miss a commit
    /// made after it was created (a watch that starts its work late wakes
    /// its waiters once when it starts). The bus asks for it before each look
    /// at the store.
    fn watch_external(&self) -> Option<BoxFuture<'static, ()>> {
        None
    }

    /// Runs `task` to completion in the background on the driver's own
    /// runtime, if it has one; otherwise gives it back.
    ///
    /// The bus calls this only for work that `Drop` starts and cannot wait
    /// for (releasing a dropped subscription's leases) when that work did not
    /// finish at once. A driver whose calls always complete when first polled
    /// need not implement it. A driver on a runtime (sqlx on tokio, say) must:
    /// a task it gives back is only polled by later calls on the bus.
    fn spawn_background(&self, task: BoxFuture<'static, ()>) -> Option<BoxFuture<'static, ()>> {
        Some(task)
    }
}

/// Statistics of one group, as a driver assembles them: see [`GroupStats`]
/// for what each count means.
pub fn group_stats(
    group: String,
    ready: u64,
    in_flight: u64,
    acked_floor: u64,
    [dead_lettered, pruned]: [u64; 2],
    lag: Option<Duration>,
    settings: GroupSpec,
) -> GroupStats {
    GroupStats::new(
        group,
        [ready, in_flight, acked_floor, dead_lettered, pruned],
        lag,
        settings,
    )
}

/// [`GroupStats::lag`] at `now` of a group whose oldest unsettled message
/// was published at `published_at` (a driver's `None`: it has none).
pub fn lag(published_at: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    published_at.map(|at| Duration::from_millis(now.as_millis().saturating_sub(at.as_millis())))
}

/// Statistics of one topic and its groups, as a driver assembles them.
pub fn topic_stats(
    topic: String,
    last_seq: u64,
    messages: u64,
    groups: Vec<GroupStats>,
    retention: Retention,
) -> TopicStats {
    TopicStats::new(topic, (last_seq, messages), groups, retention)
}

/// How many of a topic's oldest messages its retention lets go of, as
/// every driver decides: `window` is the topic's oldest messages in seq
/// order (as many as the prune step may let go of), each as `(seq,
/// published_at, payload bytes)`; `count` and `bytes` are the whole
/// topic's; `floor` is the lowest acked floor of its groups (`None`: it
/// has none). Each rule lets go of a prefix of the topic; the answer is
/// the longest of them within the window.
pub fn prune_count(
    retention: &Retention,
    window: &[(u64, Timestamp, u64)],
    (count, bytes): (u64, u64),
    floor: Option<u64>,
    now: Timestamp,
) -> usize {
    let mut go = 0;
    if retention.is_until_consumed() {
        let floor = floor.unwrap_or(u64::MAX);
        go = go.max(window.partition_point(|(seq, ..)| *seq <= floor));
    }
    if let Some(max) = retention.get_max_messages() {
        go = go.max(usize::try_from(count.saturating_sub(max)).unwrap_or(usize::MAX));
    }
    if let Some(max) = retention.get_max_bytes() {
        let mut kept = bytes;
        let over = window
            .iter()
            .take_while(|(.., size)| {
                let over = kept > max;
                kept = kept.saturating_sub(*size);
                over
            })
            .count();
        go = go.max(over);
    }
    if let Some(age) = retention.max_age_millis() {
        let old = window
            .iter()
            .take_while(|(_, at, _)| at.as_millis().saturating_add(age) <= now.as_millis())
            .count();
        go = go.max(old);
    }
    go.min(window.len())
}

/// A message as a driver reads it back from storage: its parts as stored,
/// trusted to have been checked when they were published
/// ([`prepare_message`]).
pub fn stored_message(
    id: String,
    payload: Vec<u8>,
    metadata: BTreeMap<String, String>,
    key: Option<String>,
    deliver_at: Option<Timestamp>,
) -> Message {
    Message::from_parts(id, payload, metadata, key, deliver_at)
}

/// The same failure again, for another caller (one failed step answers
/// every call it held): closed, corrupt and driver errors keep their kind
/// and retryability; any other is [`Error::Internal`](crate::Error::Internal)
/// with its text.
pub fn copy_error(e: &crate::Error) -> crate::Error {
    use crate::{DriverError, Error};
    match e {
        Error::Closed => Error::Closed,
        Error::Corrupt(m) => Error::Corrupt(m.clone()),
        Error::Driver(d) if d.is_retryable() => DriverError::retryable(d.to_string()).into(),
        Error::Driver(d) => DriverError::fatal(d.to_string()).into(),
        other => Error::Internal(other.to_string()),
    }
}

/// A message read back from a topic, as a driver returns it from
/// [`Driver::read`]: `undecodable` says why a row written by plain SQL is
/// not a message (and `message` holds what could be read of it).
pub fn stored_record(seq: u64, message: Arc<Message>, undecodable: Option<String>) -> Record {
    Record::new(seq, message, undecodable)
}

pub use crate::message::prepare_message;

/// Metadata keys litebus writes into a dead letter.
pub mod dead_letter_keys {
    /// What every one of them starts with.
    pub const PREFIX: &str = "litebus.dead_letter.";
    /// The topic the message came from.
    pub const TOPIC: &str = "litebus.dead_letter.topic";
    /// The group that gave up on it.
    pub const GROUP: &str = "litebus.dead_letter.group";
    /// Its seq in the original topic.
    pub const SEQ: &str = "litebus.dead_letter.seq";
    /// Its id in the original topic.
    pub const ID: &str = "litebus.dead_letter.id";
    /// How many deliveries it had.
    pub const ATTEMPTS: &str = "litebus.dead_letter.attempts";
    /// The last error: a nack's reason, "lease expired" or "consumer released".
    pub const ERROR: &str = "litebus.dead_letter.error";
}

/// The dead letter every driver stores for a message a group gives up on: the
/// same payload, key and metadata, plus the `litebus.dead_letter.*` entries,
/// with the id [`dead_letter_id`] gives. A driver stores it under that id if
/// the dead-letter topic does not hold it yet, else under a generated one
/// ([`generate_id`]): a dead letter always lands (I8), whatever ids its
/// topic holds.
pub fn dead_letter_message(
    topic: &str,
    group: &str,
    seq: u64,
    attempts: u32,
    error: &str,
    original: &Message,
) -> Message {
    let mut metadata: BTreeMap<String, String> = original.metadata().clone();
    for (key, value) in [
        (dead_letter_keys::TOPIC, topic.to_owned()),
        (dead_letter_keys::GROUP, group.to_owned()),
        (dead_letter_keys::SEQ, seq.to_string()),
        (dead_letter_keys::ID, original.id().to_owned()),
        (dead_letter_keys::ATTEMPTS, attempts.to_string()),
        (
            dead_letter_keys::ERROR,
            cut(error, MAX_ERROR_LEN).to_owned(),
        ),
    ] {
        metadata.insert(key.to_owned(), value);
    }
    Message::from_parts(
        dead_letter_id(topic, group, seq),
        original.payload().to_vec(),
        metadata,
        original.key().map(str::to_owned),
        None,
    )
    .with_priority(original.priority())
}

/// The id of the dead letter of message `seq` of `topic` that `group` gave
/// up on: `<topic>/<group>/<seq>`, unique per topic, group and message, so
/// the dead letters of several groups do not deduplicate one another. When
/// that is longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN), the
/// `<topic>/<group>` part is cut and a hash of it added, so the id is
/// always a valid id and can be published again as it is.
pub fn dead_letter_id(topic: &str, group: &str, seq: u64) -> String {
    let full = format!("{topic}/{group}/{seq}");
    if full.len() <= crate::MAX_NAME_LEN {
        return full;
    }
    let head = format!("{topic}/{group}");
    let tail = format!("/{:016x}/{seq}", stable_hash(head.as_bytes()));
    // Topic and group names are ASCII, so any cut is on a char boundary.
    format!("{}{tail}", &head[..crate::MAX_NAME_LEN - tail.len()])
}

/// The default dead-letter topic of `topic`: `<topic>.dlq`, or, for a
/// topic too long for that, its first bytes, a hash of the whole name and
/// `.dlq`, so the name always fits.
pub fn default_dead_letter_topic(topic: &str) -> String {
    const SUFFIX: &str = ".dlq";
    if topic.len() + SUFFIX.len() <= crate::MAX_NAME_LEN {
        return format!("{topic}{SUFFIX}");
    }
    let hash = format!(".{:016x}{SUFFIX}", stable_hash(topic.as_bytes()));
    format!("{}{hash}", &topic[..crate::MAX_NAME_LEN - hash.len()])
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// FNV-1a, 64 bits: a hash that never changes between builds, platforms
/// and drivers, for names derived from other names.
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A new unique, time-sortable id, as the bus generates for a message
/// published without one: for a dead letter whose own id is taken.
pub fn generate_id(now: Timestamp) -> String {
    crate::message::next_id(now)
}

/// The longest last error a dead letter keeps, in bytes; a longer nack
/// reason is cut there (on a character boundary).
pub const MAX_ERROR_LEN: usize = 1024;

/// The last error of a dead letter whose final lease expired.
pub const LEASE_EXPIRED: &str = "lease expired";
/// The last error of a dead letter whose consumer went away at its final attempt.
pub const CONSUMER_RELEASED: &str = "consumer released";
/// The last error of a dead letter nacked without a reason.
pub const NACKED: &str = "nacked";
