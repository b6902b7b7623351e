//! [`Subscription`]: one consumer of a group, and the [`Delivery`] it hands out.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;

use event_listener::Event;

use crate::bus::BusInner;
use crate::clock::{Timestamp, lock};
use crate::driver::{Ahead, BoxFuture, Claim, Claimed, Next, Release, Settle, Settlement};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::options::{Backoff, GroupOptions, NackOptions, Order, RateLimit};
use crate::stream::{StreamState, next_backoff, wait_out};
use crate::telemetry::{count, instrument, record, span};
use crate::wake::{Inbox, Taken, Waiting};

/// One consumer of a consumer group: a stream of [`Delivery`]s.
///
/// Dropping it (or calling [`close`](Subscription::close)) releases every
/// delivery it still holds: they become deliverable again to the group with
/// the next attempt number (I6). Deliveries are prefetched in batches of
/// [`GroupOptions::prefetch`]; their leases run from the claim.
#[must_use = "a subscription receives nothing unless polled"]
pub struct Subscription {
    shared: Arc<Consumer>,
    /// The receive in progress when polled as a stream. In a mutex only to
    /// keep `Subscription: Sync`; it is reached through `&mut self`.
    next: Mutex<Option<BoxFuture<'static, Result<Delivery>>>>,
    /// The stream's state after errors: see [`Stream for Subscription`].
    stream: StreamState,
}

/// What a subscription and its deliveries share.
struct Consumer {
    bus: Arc<BusInner>,
    /// What this group's waiting consumers wait on, store-wide.
    wake: Arc<Event>,
    key: u64,
    topic: String,
    group: String,
    id: String,
    lease: Duration,
    prefetch: u32,
    backoff: Backoff,
    /// The group has a rate limit: its deliveries all come from claims,
    /// which count them (no hand-off, no next message taken with an ack).
    rate_limit: Option<RateLimit>,
    /// The group is `Ordered`: one delivery out at a time, the next ones
    /// read ahead and taken with each ack.
    ordered: bool,
    buffer: Mutex<Buffer>,
    /// Fires when this consumer's ordered delivery is settled, for its own
    /// waiting `recv` (the group's event may wake another consumer).
    settled: Event,
    /// What publishes leased to this consumer while it waited.
    inbox: Inbox,
    closed: AtomicBool,
}

/// What a consumer holds between claims.
#[derive(Default)]
struct Buffer {
    /// Claimed (leased), not yet handed out.
    ready: VecDeque<Delivery>,
    /// Ordered groups: the messages after the delivery out, read by the
    /// claim, not leased.
    ahead: VecDeque<Ahead>,
    /// Ordered groups: the delivery handed out and not yet settled.
    out: Option<Out>,
}

impl Buffer {
    fn clear(&mut self) {
        *self = Buffer::default();
    }

    /// The first ready delivery whose lease has not run out (one that ran
    /// out may belong to someone else already), as handed out now.
    fn pop_ready(&mut self, now: Timestamp, ordered: bool) -> Option<Delivery> {
        let delivery =
            std::iter::from_fn(|| self.ready.pop_front()).find(|d| d.lease_until() > now)?;
        if ordered {
            self.out = Some(Out::of(&delivery));
        }
        Some(delivery)
    }

    /// Whether `delivery` is the ordered delivery out.
    fn is_out(&self, delivery: &Delivery) -> bool {
        self.out
            .as_ref()
            .is_some_and(|o| o.identity() == delivery.identity())
    }
}

/// An ordered group's delivery out: while its lease runs, nothing else of
/// the group is deliverable to anyone (I7).
struct Out {
    seq: u64,
    attempt: u32,
    generation: u64,
    lease_until: Arc<AtomicU64>,
}

impl Out {
    fn of(delivery: &Delivery) -> Self {
        Out {
            seq: delivery.seq,
            attempt: delivery.attempt,
            generation: delivery.generation,
            lease_until: delivery.lease_until.clone(),
        }
    }

    fn identity(&self) -> (u64, u64, u32) {
        (self.generation, self.seq, self.attempt)
    }
}

impl Subscription {
    pub(crate) fn new(
        bus: Arc<BusInner>,
        wake: Arc<Event>,
        key: u64,
        topic: &str,
        group: &str,
        consumer: String,
        options: &GroupOptions,
    ) -> Self {
        Subscription {
            shared: Arc::new(Consumer {
                bus,
                wake,
                key,
                topic: topic.to_owned(),
                group: group.to_owned(),
                id: consumer,
                lease: options.lease,
                prefetch: options.prefetch,
                backoff: options.backoff,
                rate_limit: options.rate_limit,
                ordered: options.order == Order::Ordered,
                buffer: Mutex::new(Buffer::default()),
                settled: Event::new(),
                inbox: Inbox::default(),
                closed: AtomicBool::new(false),
            }),
            next: Mutex::new(None),
            stream: StreamState::default(),
        }
    }

    /// Waits for the next delivery.
    ///
    /// It returns as soon as a message is deliverable: a publish, a nack or a
    /// release through any bus on the store wakes it at once (another
    /// process's commit when the driver watches for them), and it sleeps on
    /// the bus clock until the next lease end or delay otherwise. Errors of the
    /// driver are returned and the subscription stays usable; after
    /// [`Bus::close`](crate::Bus::close) it returns [`Error::Closed`].
    ///
    /// # Cancel safety
    /// This method is cancel safe: dropped after any poll (under a
    /// deadline, in a `select!`), it leaves nothing leased that this
    /// subscription's next `recv` does not get. The conformance case
    /// `recv_is_cancel_safe` checks it on every driver.
    pub async fn recv(&self) -> Result<Delivery> {
        self.shared.clone().next_delivery().await
    }

    /// Returns a delivery if one is deliverable now, without waiting.
    /// Cancel safe, as [`recv`](Subscription::recv) is.
    pub async fn try_recv(&self) -> Result<Option<Delivery>> {
        match self.shared.fetch().await? {
            Fetched::Delivery(delivery) => Ok(Some(delivery)),
            Fetched::Nothing(_) => Ok(None),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.shared.group
    }

    /// This consumer's unique id, as its leases record it.
    pub fn consumer_id(&self) -> &str {
        &self.shared.id
    }

    /// The bus this subscription belongs to.
    pub(crate) fn bus(&self) -> &Arc<BusInner> {
        &self.shared.bus
    }

    /// Leaves the group, releasing every delivery this consumer holds and
    /// waiting until the store has recorded it.
    pub async fn close(self) -> Result<()> {
        let shared = self.shared.clone();
        if shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        drop(self);
        shared.bus.forget_consumer(shared.key);
        lock(&shared.buffer).clear();
        // The release below ends the leases of what was handed to it.
        shared.inbox.take();
        shared.bus.check_open()?;
        let now = shared.bus.now();
        shared
            .bus
            .release(Release {
                topic: &shared.topic,
                group: &shared.group,
                consumer: &shared.id,
                now,
            })
            .await?;
        shared.bus.freed(&shared.topic, &shared.group, usize::MAX);
        Ok(())
    }
}

/// What one look at the buffer and the store found.
enum Fetched {
    Delivery(Delivery),
    /// Nothing deliverable now; something may be at this time.
    Nothing(Option<Timestamp>),
}

impl Consumer {
    async fn next_delivery(self: Arc<Self>) -> Result<Delivery> {
        // A wake-up this consumer took and has not acted on yet: if this
        // future is dropped before the next look at the store, it passes
        // to another waiting consumer of the group.
        let mut taken = Taken::none();
        loop {
            // Armed before looking at the store, so no commit can slip
            // between the look and the wait.
            let changed = self.wake.listen();
            let settled = self.settled.listen();
            let handed = self.inbox.listen();
            let closing = self.bus.closing.listen();
            // Commits by other processes, watched from before the look at
            // the store so that none falls between the look and the wait.
            let external = self.bus.driver.watch_external();
            let fetched = self.fetch().await?;
            std::mem::replace(&mut taken, Taken::none()).used();
            let due = match fetched {
                Fetched::Delivery(delivery) => return Ok(delivery),
                Fetched::Nothing(due) => due,
            };
            // Caught up: a publish may lease its messages to this consumer
            // in its own step and put them in its inbox. (Not while it holds
            // its ordered group's delivery: it waits for that to be settled,
            // and a claim would give it that delivery again. Nor when its
            // group has a rate limit, which only claims count.)
            let holds_group = lock(&self.buffer).out.is_some();
            let _waiting = (!holds_group && self.rate_limit.is_none()).then(|| {
                self.bus.wakeups.wait_for(
                    &self.topic,
                    Waiting {
                        group: self.group.clone(),
                        consumer: self.id.clone(),
                        lease: self.lease,
                        backoff: self.backoff,
                        max: self.prefetch,
                        inbox: self.inbox.clone(),
                    },
                )
            });
            let woken = async {
                let changed = async {
                    futures_lite::future::or(changed, futures_lite::future::or(settled, handed))
                        .await;
                    true
                };
                let others = async {
                    match external {
                        Some(external) => futures_lite::future::or(closing, external).await,
                        None => closing.await,
                    }
                    false
                };
                futures_lite::future::or(changed, others).await
            };
            let by_group = match due {
                Some(due) => {
                    futures_lite::future::or(woken, async {
                        self.bus.clock.sleep_until(due).await;
                        false
                    })
                    .await
                }
                None => woken.await,
            };
            if by_group {
                taken = Taken::new(&self.wake);
            }
        }
    }

    async fn fetch(self: &Arc<Self>) -> Result<Fetched> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            self.bus.check_open()?;
            let now = self.bus.now();
            {
                let mut buffer = lock(&self.buffer);
                if let Some(delivery) = buffer.pop_ready(now, self.ordered) {
                    return Ok(Fetched::Delivery(delivery));
                }
                if let Some(out) = &buffer.out {
                    // I7: nothing else of an ordered group until the
                    // delivery out is settled or its lease runs out.
                    let until = Timestamp::from_millis(out.lease_until.load(Ordering::Acquire));
                    if until > now {
                        return Ok(Fetched::Nothing(Some(until)));
                    }
                    buffer.clear();
                }
            }
            // What a publish leased to this consumer while it waited comes
            // before a claim of its own.
            let lease_until = now + self.lease;
            let span = span!(
                "litebus.claim",
                topic = %self.topic,
                group = %self.group,
                consumer = %self.id,
                handed = tracing::field::Empty,
                deliveries = tracing::field::Empty,
                seq = tracing::field::Empty,
                attempt = tracing::field::Empty,
            );
            let outcome = if let Some(handed) = self.inbox.take() {
                // Leased to it by a publish, in the publish's own step.
                record!(span, "handed", true);
                handed
            } else {
                self.bus.drive_deferred();
                let claim = self.bus.driver.claim(Claim {
                    topic: &self.topic,
                    group: &self.group,
                    consumer: &self.id,
                    now,
                    lease_until,
                    max: self.prefetch,
                    backoff: self.backoff,
                    rate_limit: self.rate_limit,
                });
                instrument!(span, claim).await?
            };
            record!(span, "deliveries", outcome.deliveries.len());
            #[cfg(feature = "tracing")]
            if let Some(first) = outcome.deliveries.first() {
                record!(span, "seq", first.seq);
                record!(span, "attempt", first.attempt);
            }
            crate::telemetry::claimed(&self.topic, &self.group, &outcome.deliveries);
            if !outcome.dead_lettered.is_empty() {
                self.bus.announce(&outcome.dead_lettered);
                // Its error is not this claim's: the dead letters happened,
                // and what the claim leased waits for its consumer.
                #[cfg(feature = "audit")]
                let _ = self.bus.audit_dead_letters(&outcome.dead_lettered).await;
                // What the dead letters held back (the next message of an
                // ordered group, say) may be deliverable to others now.
                self.bus
                    .freed(&self.topic, &self.group, outcome.dead_lettered.len());
            }
            if outcome.deliveries.is_empty() {
                return Ok(Fetched::Nothing(outcome.next_due));
            }
            if !self.ordered && outcome.deliveries.len() >= self.prefetch as usize {
                // A full batch: there may be more for another consumer.
                self.bus.wakeups.freed(&self.topic, &self.group, 1);
            }
            let mut buffer = lock(&self.buffer);
            buffer.ready.extend(
                outcome
                    .deliveries
                    .into_iter()
                    .map(|c| Delivery::new(self.clone(), c)),
            );
            buffer.ahead = outcome.ahead.into();
            // A driver may hand over what an earlier, abandoned claim of this
            // consumer leased, whose lease may have run out since (a lease
            // this claim took is current, even at `Timestamp::MAX`).
            while buffer
                .ready
                .front()
                .is_some_and(|d| d.lease_until() != lease_until && d.lease_until() <= now)
            {
                buffer.ready.pop_front();
            }
            if let Some(delivery) = buffer.ready.pop_front() {
                if self.ordered {
                    buffer.out = Some(Out::of(&delivery));
                }
                return Ok(Fetched::Delivery(delivery));
            }
            buffer.ahead.clear();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let shared = &self.shared;
        if shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        shared.bus.forget_consumer(shared.key);
        lock(&shared.buffer).clear();
        shared.inbox.take();
        if !shared.bus.is_closed() {
            shared.bus.release_soon(
                shared.topic.clone(),
                shared.group.clone(),
                shared.id.clone(),
            );
        }
    }
}

/// The stream form of [`recv`](Subscription::recv).
///
/// It yields deliveries and ends when the bus (or the subscription) is
/// closed. A retryable error (a busy store, say) is yielded and the stream
/// goes on after a pause that doubles with each error in a row (10 ms up to
/// 1 s), so a loop over the stream never spins on a lasting failure. A fatal
/// error is yielded and then the stream ends.
impl Stream for Subscription {
    type Item = Result<Delivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let slot = this
            .next
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shared = &this.shared;
        this.stream.poll_next(slot, cx, |pause| {
            let shared = shared.clone();
            Box::pin(async move {
                wait_out(&shared.bus, pause).await;
                shared.next_delivery().await
            })
        })
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.shared.topic)
            .field("group", &self.shared.group)
            .field("consumer", &self.shared.id)
            .finish_non_exhaustive()
    }
}

/// One hand-out of a message to a consumer, under a lease until
/// [`lease_until`](Delivery::lease_until). Settle it with
/// [`ack`](Delivery::ack) or [`nack`](Delivery::nack); a delivery dropped
/// unsettled is handed out again when its lease ends or its subscription goes.
#[must_use = "an unsettled delivery is delivered again when its lease ends"]
pub struct Delivery {
    consumer: Arc<Consumer>,
    seq: u64,
    attempt: u32,
    /// Shared with the consumer's [`Out`] while this is its ordered
    /// delivery out.
    lease_until: Arc<AtomicU64>,
    message: Arc<Message>,
    /// The group's generation it was handed out in (a seek starts a new
    /// one): with `seq` and `attempt`, what the store knows it by.
    generation: u64,
}

impl Delivery {
    fn new(consumer: Arc<Consumer>, claimed: Claimed) -> Self {
        Delivery {
            consumer,
            seq: claimed.seq,
            attempt: claimed.attempt,
            lease_until: Arc::new(AtomicU64::new(claimed.lease_until.as_millis())),
            message: claimed.message,
            generation: claimed.generation,
        }
    }

    /// What the store knows this delivery by.
    fn identity(&self) -> (u64, u64, u32) {
        (self.generation, self.seq, self.attempt)
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message's position in its topic.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How many times the group has handed out this message, this one
    /// included (1 on first delivery).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the lease ends, on the bus clock.
    pub fn lease_until(&self) -> Timestamp {
        Timestamp::from_millis(self.lease_until.load(Ordering::Acquire))
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.consumer.topic
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.consumer.group
    }

    /// Marks the message done for this group: it is never delivered to the
    /// group again (I5). [`Error::LeaseLost`] if the lease is no longer
    /// current; then nothing changed.
    pub async fn ack(&self) -> Result<()> {
        self.settle(Settlement::Ack).await
    }

    /// Gives the message back: it is delivered again after `options.delay`
    /// (without one, after the group's [`Backoff`] for this attempt) with
    /// the next attempt number (I6), or moved to the dead-letter topic if
    /// this was the final attempt (I8).
    pub async fn nack(&self, options: NackOptions) -> Result<()> {
        let delay = options
            .delay
            .unwrap_or_else(|| self.consumer.backoff.delay(self.seq, self.attempt));
        let retry_at = self.consumer.bus.now() + delay;
        self.settle(Settlement::Nack {
            retry_at,
            reason: options.reason,
        })
        .await
    }

    /// Extends the lease to `by` from now; returns the new end.
    pub async fn extend(&self, by: Duration) -> Result<Timestamp> {
        let lease_until = self.consumer.bus.now() + by;
        self.settle(Settlement::Extend { lease_until }).await?;
        self.lease_until
            .store(lease_until.as_millis(), Ordering::Release);
        // A claim that gives an ordered consumer its delivery out again
        // (after a cut) makes another `Delivery` of the same identity: the
        // consumer's record of the one out learns the new lease end too.
        let buffer = lock(&self.consumer.buffer);
        if buffer.is_out(self)
            && let Some(out) = &buffer.out
        {
            out.lease_until
                .store(lease_until.as_millis(), Ordering::Release);
        }
        drop(buffer);
        Ok(lease_until)
    }

    /// Keeps the lease while this delivery is being worked on: each time a
    /// third of the subscription's lease is left, extends it by the whole
    /// lease (on the bus clock). Run it beside the work and drop it when the
    /// work is done (a [`Worker`](crate::Worker) does this for each
    /// handler); a process that dies stops heartbeating, and its lease runs
    /// out as usual (I6).
    ///
    /// The future ends only when an extension fails, with that error:
    /// [`Error::LeaseLost`] once the delivery is settled, or when the lease
    /// ran out and the group handed the message to another consumer;
    /// [`Error::Closed`] when the bus closes. Retryable errors of the store
    /// are tried again after a growing pause.
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, Error, GroupOptions, MemoryDriver, Message};
    /// use futures_lite::future;
    /// # future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// let sub = bus.subscribe("videos", "encoders", GroupOptions::new()).await?;
    /// bus.publish("videos", Message::new("cat.mov")).await?;
    /// let delivery = sub.recv().await?;
    /// let encode = async {
    ///     // Work that may outlast the lease.
    ///     Ok::<(), Error>(())
    /// };
    /// let heartbeat = async { Err(delivery.heartbeat().await) };
    /// future::or(encode, heartbeat).await?;
    /// delivery.ack().await?;
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn heartbeat(&self) -> Error {
        let bus = &self.consumer.bus;
        let lease = self.consumer.lease;
        let mut pause = None;
        loop {
            let now = bus.now();
            let wait = pause.unwrap_or_else(|| {
                let left = self.lease_until().saturating_duration_since(now);
                left.saturating_sub(lease / 3)
            });
            if !wait.is_zero() {
                let closing = bus.closing.listen();
                if let Err(e) = bus.check_open() {
                    return e;
                }
                futures_lite::future::or(bus.clock.sleep_until(now + wait), closing).await;
            }
            match self.extend(lease).await {
                Ok(_) => pause = None,
                Err(e) if e.is_retryable() => pause = Some(next_backoff(pause, "heartbeat", &e)),
                Err(e) => return e,
            }
        }
    }

    async fn settle(&self, settlement: Settlement) -> Result<()> {
        let consumer = &self.consumer;
        let bus = &consumer.bus;
        bus.check_open()?;
        bus.drive_deferred();
        let unblocks = !matches!(settlement, Settlement::Extend { .. });
        let acks = settlement == Settlement::Ack;
        let now = bus.now();
        // An ordered group's ack takes the next message read ahead (one
        // that is due) in the same step: the group stays with this
        // consumer, and the next `recv` needs no claim.
        let (out, next) = if consumer.ordered && unblocks {
            let buffer = lock(&consumer.buffer);
            let out = buffer.is_out(self);
            let next = buffer
                .ahead
                .front()
                .filter(|a| {
                    out && settlement == Settlement::Ack
                        && consumer.rate_limit.is_none()
                        && a.message.deliver_at().is_none_or(|t| t <= now)
                })
                .map(|a| a.seq);
            (out, next)
        } else {
            (false, None)
        };
        let lease_until = now + consumer.lease;
        // Cut before the answer: whether the step ran is unknown, so the
        // consumer forgets what it holds and its next claim asks the store
        // (which gives an ordered group's holder its delivery again).
        let mut forget = ForgetOnDrop(out.then_some(consumer));
        let span = span!(
            "litebus.settle",
            topic = %consumer.topic,
            group = %consumer.group,
            seq = self.seq,
            attempt = self.attempt,
            settlement = match &settlement {
                Settlement::Ack => "ack",
                Settlement::Nack { .. } => "nack",
                Settlement::Extend { .. } => "extend",
            },
        );
        let nacks = matches!(settlement, Settlement::Nack { .. });
        #[cfg(feature = "audit")]
        let audited = settlement.clone();
        let settle = bus.driver.settle(Settle {
            topic: &consumer.topic,
            group: &consumer.group,
            seq: self.seq,
            attempt: self.attempt,
            generation: self.generation,
            now,
            settlement,
            ordered: consumer.ordered,
            next: next.map(|seq| Next {
                consumer: &consumer.id,
                seq,
                lease_until,
            }),
            backoff: consumer.backoff,
        });
        let settled = instrument!(span, settle).await;
        forget.0 = None;
        crate::telemetry::settled(
            (&consumer.topic, &consumer.group),
            (self.seq, self.attempt),
            settled.as_ref().map(|_| (acks, nacks)),
        );
        let mut handed = false;
        if out {
            let mut buffer = lock(&consumer.buffer);
            buffer.out = None;
            match (&settled, next, buffer.ahead.pop_front()) {
                (Ok(_), Some(seq), Some(ahead)) if ahead.seq == seq => {
                    let delivery = Delivery::new(
                        consumer.clone(),
                        Claimed {
                            seq,
                            attempt: 1,
                            lease_until,
                            message: ahead.message,
                            generation: self.generation,
                        },
                    );
                    buffer.ready.push_front(delivery);
                    handed = true;
                    count!("litebus_delivered_total", 1, "topic" => &consumer.topic, "group" => &consumer.group);
                }
                _ => buffer.ahead.clear(),
            }
            drop(buffer);
            consumer.settled.notify(usize::MAX);
        }
        let dead = settled?;
        if let Some(dead) = &dead {
            bus.announce(std::slice::from_ref(dead));
        }
        if unblocks && !handed {
            // A nack makes the message deliverable again; an ack may let
            // the next of an ordered group (or a shared group's slot) go.
            bus.freed(&consumer.topic, &consumer.group, 1);
        }
        if acks {
            bus.written(&consumer.topic, 1).await;
        }
        #[cfg(feature = "audit")]
        {
            use crate::audit::Event;
            let (group, seq, attempt) = (consumer.group.as_str(), self.seq, self.attempt);
            let settled =
                (!matches!(audited, Settlement::Extend { .. })).then_some(Event::Settled {
                    group,
                    seq,
                    attempt,
                    settlement: &audited,
                });
            let events: Vec<Event> = settled
                .into_iter()
                .chain(dead.as_ref().map(Event::DeadLetter))
                .collect();
            // Last: the settle happened and its waiters are woken,
            // whatever the append of its rows does.
            bus.audit(&consumer.topic, &events).await?;
        }
        Ok(())
    }
}

/// Empties an ordered consumer's buffer if a settle is cut before its answer.
struct ForgetOnDrop<'a>(Option<&'a Arc<Consumer>>);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(consumer) = self.0 {
            lock(&consumer.buffer).clear();
            consumer.settled.notify(usize::MAX);
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.consumer.topic)
            .field("group", &self.consumer.group)
            .field("seq", &self.seq)
            .field("attempt", &self.attempt)
            .field("generation", &self.generation)
            .field("lease_until", &self.lease_until())
            .field("message", &self.message)
            .finish()
    }
}
