//! [`Bus`]: the public face of litebus. It validates input, assigns ids,
//! calls the driver, and wakes whoever waits on a topic.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use event_listener::Event;

use crate::clock::{Clock, Timestamp, default_clock, lock};
use crate::driver::{
    Append, BoxFuture, DeadLettered, DeleteTopic, Driver, EnsureGroup, GroupSpec, Handoff, Prune,
    Read, Redrive, Release, Seek, TopicStats, Wakeups, default_dead_letter_topic,
};
use crate::error::{Error, NameKind, Result};
use crate::listener::{Listener, ListenerShared};
use crate::message::{Message, Outcome, check_label, check_name, next_id, prepare_message};
use crate::options::{BusOptions, GroupOptions, MAX_SEQ, PRUNE_BATCH, Retention, Start};
use crate::read::{DeadLetter, Follow, Record};
use crate::subscription::Subscription;
use crate::telemetry::{count, gauge, instrument, record, span};

/// A publish/subscribe bus over one storage [`Driver`].
///
/// Cheap to clone: clones share the driver, the clock and the wake-ups.
/// Several buses may share one store (clones of one driver, or several
/// drivers on one file): a commit made through any of them wakes the
/// subscriptions of all, when the driver shares its
/// [`Wakeups`](crate::driver::Wakeups) (every driver of this project does).
///
/// ```
/// use litebus::{Bus, BusOptions, GroupOptions, MemoryDriver, Message, Outcome};
/// # futures_lite::future::block_on(async {
/// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
/// let outcome = bus.publish("orders", Message::new("order #1").with_id("o-1")).await?;
/// assert_eq!(outcome, Outcome::Published { seq: 1 });
///
/// let billing = bus.subscribe("orders", "billing", GroupOptions::new()).await?;
/// let delivery = billing.recv().await?;
/// assert_eq!(delivery.message().payload(), b"order #1");
/// delivery.ack().await?;
/// # Ok::<(), litebus::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Arc<BusInner>,
}

pub(crate) struct BusInner {
    pub(crate) driver: Box<dyn Driver>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: BusOptions,
    closed: AtomicBool,
    /// Wakes this bus's waiting subscriptions when it closes.
    pub(crate) closing: Event,
    /// The first `close` finished (or was abandoned); later ones wait for it.
    close_done: AtomicBool,
    close_finished: Event,
    /// The store's wake-ups, shared with every other bus on it.
    pub(crate) wakeups: Wakeups,
    /// The bus wakes them after its calls: its driver has no store-wide
    /// wake-ups, which it would wake itself on each commit.
    wakes_itself: bool,
    topics: Mutex<HashMap<String, Arc<TopicSignal>>>,
    next_consumer: AtomicU64,
    consumers: Mutex<HashMap<u64, ConsumerRef>>,
    /// Releases begun by a dropped subscription that did not finish at once;
    /// driven by later calls and awaited by `close`.
    deferred: Mutex<Vec<BoxFuture<'static, ()>>>,
    /// Per topic: messages published or acked through this bus since its
    /// last prune step ([`BusOptions::prune_every`]).
    unpruned: Mutex<HashMap<String, u32>>,
    /// The tails of the audit chains this bus appends to.
    #[cfg(feature = "audit")]
    pub(crate) chains: crate::audit::Chains,
}

#[derive(Clone)]
struct ConsumerRef {
    topic: String,
    group: String,
    consumer: String,
}

/// The live listeners of one topic on this bus.
#[derive(Default)]
pub(crate) struct TopicSignal {
    listeners: Mutex<Vec<Weak<ListenerShared>>>,
}

/// How many of a publish's outcomes are duplicates (for its span and
/// counters).
#[cfg(any(feature = "tracing", feature = "metrics"))]
fn duplicates(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| o.is_duplicate()).count()
}

impl TopicSignal {
    fn broadcast(&self, seq: u64, message: &Arc<Message>) {
        let mut listeners = lock(&self.listeners);
        listeners.retain(|weak| match weak.upgrade() {
            Some(listener) => {
                listener.push(seq, message.clone());
                true
            }
            None => false,
        });
    }
}

impl Bus {
    /// Opens a bus on `driver`.
    ///
    /// Fails with [`Error::InvalidOptions`] when no clock is given and the
    /// target has no default (wasm32 without the `wasm` feature).
    pub fn open(driver: impl Driver, options: BusOptions) -> Result<Bus> {
        let clock = match options.clock.clone() {
            Some(clock) => clock,
            None => default_clock().ok_or_else(|| {
                Error::InvalidOptions(
                    "no clock: enable the `wasm` feature or pass BusOptions::clock".into(),
                )
            })?,
        };
        #[cfg(feature = "audit")]
        crate::audit::check_audited(&options.audited)?;
        let driver_wakes = driver.wakeups();
        let wakes_itself = driver_wakes.is_none();
        let wakeups = driver_wakes.unwrap_or_default();
        Ok(Bus {
            inner: Arc::new(BusInner {
                driver: Box::new(driver),
                clock,
                options,
                closed: AtomicBool::new(false),
                closing: Event::new(),
                close_done: AtomicBool::new(false),
                close_finished: Event::new(),
                wakeups,
                wakes_itself,
                topics: Mutex::new(HashMap::new()),
                next_consumer: AtomicU64::new(0),
                consumers: Mutex::new(HashMap::new()),
                deferred: Mutex::new(Vec::new()),
                unpruned: Mutex::new(HashMap::new()),
                #[cfg(feature = "audit")]
                chains: crate::audit::Chains::default(),
            }),
        })
    }

    /// Publishes one message; see [`publish_batch`](Bus::publish_batch).
    pub async fn publish(&self, topic: &str, message: Message) -> Result<Outcome> {
        let mut outcomes = self.publish_batch(topic, [message]).await?;
        Ok(outcomes.remove(0))
    }

    /// Publishes messages atomically and in order (I1): all are stored with
    /// increasing seqs, or none is. A message whose id the topic already
    /// holds, or that an earlier message of the batch has, is not stored and
    /// comes back as [`Outcome::Duplicate`] with the original's seq (I2).
    ///
    /// When the call returns `Ok`, waiting subscribers of the topic on every
    /// bus of the store have been woken (as many per group as there are new
    /// messages) and every listener of this bus has the new messages.
    pub async fn publish_batch(
        &self,
        topic: &str,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<Vec<Outcome>> {
        self.publish_inner(topic, messages, None).await
    }

    /// Like [`publish_batch`](Bus::publish_batch), but only if the topic's last
    /// seq is `expected_last` (0 for an empty topic): an event-store style
    /// append. Otherwise [`Error::Conflict`] and nothing is stored.
    pub async fn publish_batch_expecting(
        &self,
        topic: &str,
        expected_last: u64,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<Vec<Outcome>> {
        self.publish_inner(topic, messages, Some(expected_last))
            .await
    }

    async fn publish_inner(
        &self,
        topic: &str,
        messages: impl IntoIterator<Item = Message>,
        expected_last: Option<u64>,
    ) -> Result<Vec<Outcome>> {
        let inner = &self.inner;
        inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        let max_size = inner.options.max_message_size;
        let now = inner.clock.now();
        let batch = messages
            .into_iter()
            .map(|m| prepare_message(topic, m, max_size, now).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        if batch.is_empty() && expected_last.is_none() {
            return Ok(Vec::new());
        }
        inner.drive_deferred();
        // Consumers waiting caught up may get the new messages leased in
        // the publish's own step.
        let handoffs: Vec<Handoff> = inner
            .wakeups
            .waiting(topic)
            .into_iter()
            .map(|w| Handoff {
                group: w.group.clone(),
                consumer: w.consumer.clone(),
                now,
                lease_until: now + w.lease,
                max: w.max,
                backoff: w.backoff,
                inbox: w.inbox.clone(),
            })
            .collect();
        let span = span!(
            "litebus.publish",
            topic,
            messages = batch.len(),
            seq = tracing::field::Empty,
            duplicates = tracing::field::Empty,
        );
        let append = inner.driver.append(Append {
            topic,
            messages: &batch,
            expected_last,
            now,
            handoffs: &handoffs,
        });
        let outcomes = instrument!(span, append).await?;
        inner.appended(topic, &outcomes, &batch).await;
        #[cfg(feature = "tracing")]
        if let Some(new) = outcomes.iter().find(|o| !o.is_duplicate()) {
            span.record("seq", new.seq());
        }
        record!(span, "duplicates", duplicates(&outcomes));
        count!("litebus_published_total", outcomes.len() - duplicates(&outcomes), "topic" => topic);
        count!("litebus_duplicates_total", duplicates(&outcomes), "topic" => topic);
        #[cfg(feature = "audit")]
        inner
            .audit(topic, &crate::audit::published(&outcomes, &batch))
            .await?;
        Ok(outcomes)
    }

    /// Joins consumer group `group` of `topic`, creating it if new.
    ///
    /// Every group receives every message of its topic from its start on
    /// (I3); the subscriptions of one group compete for them (I4, I7).
    pub async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: GroupOptions,
    ) -> Result<Subscription> {
        let inner = &self.inner;
        inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        check_name(NameKind::Group, group)?;
        options.validate()?;
        let dead_letter = options
            .dead_letter
            .clone()
            .unwrap_or_else(|| default_dead_letter_topic(topic));
        check_name(NameKind::Topic, &dead_letter)?;
        if dead_letter == topic {
            return Err(Error::InvalidOptions(
                "the dead-letter topic must differ from the topic".into(),
            ));
        }
        let spec = GroupSpec {
            order: options.order,
            max_attempts: options.max_attempts,
            backoff: options.backoff,
            rate_limit: options.rate_limit,
            max_in_flight: options.max_in_flight,
            dead_letter,
        };
        let start_after = options.start.start_after()?;
        inner.drive_deferred();
        inner
            .driver
            .ensure_group(EnsureGroup {
                topic,
                group,
                spec: &spec,
                start_after,
            })
            .await?;
        let key = inner.next_consumer.fetch_add(1, Ordering::Relaxed);
        let consumer = next_id(inner.clock.now());
        lock(&inner.consumers).insert(
            key,
            ConsumerRef {
                topic: topic.to_owned(),
                group: group.to_owned(),
                consumer: consumer.clone(),
            },
        );
        Ok(Subscription::new(
            self.inner.clone(),
            inner.wakeups.group(topic, group),
            key,
            topic,
            group,
            consumer,
            &options,
        ))
    }

    /// A live, non-durable feed of the messages published to `topic` through
    /// this bus after this call. A listener that falls more than
    /// [`BusOptions::listener_capacity`] messages behind loses the oldest and
    /// is told how many with [`Live::Lagged`](crate::Live::Lagged).
    pub fn listen(&self, topic: &str) -> Result<Listener> {
        self.inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        let shared = Arc::new(ListenerShared::new(self.inner.options.listener_capacity));
        let signal = self.inner.signal(topic);
        lock(&signal.listeners).push(Arc::downgrade(&shared));
        Ok(Listener::new(shared))
    }

    /// Up to `limit` messages of `topic` from seq `from_seq` on (those
    /// with a seq at or above it), in seq order, without consuming them:
    /// no group sees a difference. Read on from the last seq returned + 1
    /// for the next page; an empty page means nothing more is stored yet
    /// ([`follow`](Bus::follow) waits for it). Messages come whatever
    /// their `deliver_at`.
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, MemoryDriver, Message};
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// bus.publish_batch("events", ["a", "b", "c"].map(Message::new)).await?;
    /// let page = bus.read("events", 2, 10).await?;
    /// let payloads: Vec<&[u8]> = page.iter().map(|r| r.message().payload()).collect();
    /// assert_eq!(payloads, [b"b", b"c"]);
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn read(&self, topic: &str, from_seq: u64, limit: usize) -> Result<Vec<Record>> {
        self.read_inner(topic, None, from_seq, limit, false).await
    }

    /// Like [`read`](Bus::read), for the messages of one key only: an event
    /// store's stream load (every event of one entity, in order), read
    /// through an index on the key, not by scanning the topic. Pair it with
    /// [`publish_batch_expecting`](Bus::publish_batch_expecting) to append.
    pub async fn read_key(
        &self,
        topic: &str,
        key: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Record>> {
        self.read_inner(topic, Some(key), from_seq, limit, false)
            .await
    }

    async fn read_inner(
        &self,
        topic: &str,
        key: Option<&str>,
        from_seq: u64,
        limit: usize,
        skip_taken_back: bool,
    ) -> Result<Vec<Record>> {
        let inner = &self.inner;
        let after = check_read(inner, topic, key, from_seq)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        inner.drive_deferred();
        inner
            .driver
            .read(Read {
                topic,
                after,
                key,
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                skip_taken_back,
            })
            .await
    }

    /// A durable feed of `topic` from seq `from_seq` on: what is stored
    /// first, then each message as it is committed through any bus on the
    /// store, with neither gaps nor repeats at the switch (catch-up, then
    /// live). It consumes nothing: see [`Follow`].
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, MemoryDriver, Message};
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// bus.publish("events", Message::new("stored")).await?;
    /// let mut follow = bus.follow("events", 1)?;
    /// assert_eq!(follow.recv().await?.message().payload(), b"stored");
    /// bus.publish("events", Message::new("live")).await?;
    /// assert_eq!(follow.recv().await?.message().payload(), b"live");
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn follow(&self, topic: &str, from_seq: u64) -> Result<Follow> {
        let after = check_read(&self.inner, topic, None, from_seq)?;
        Ok(Follow::new(self.inner.clone(), topic, None, after))
    }

    /// Like [`follow`](Bus::follow), for the messages of one key only.
    pub fn follow_key(&self, topic: &str, key: &str, from_seq: u64) -> Result<Follow> {
        let after = check_read(&self.inner, topic, Some(key), from_seq)?;
        Ok(Follow::new(self.inner.clone(), topic, Some(key), after))
    }

    /// The dead letters of group `group` of `topic` (I8): those its
    /// dead-letter topic holds from seq `from_seq` of that topic on, at most
    /// `limit`, each with where it came from, its attempts and its last
    /// error. A next page starts after the last one's
    /// [`record().seq()`](Record::seq). Messages of the dead-letter topic
    /// that are not this group's dead letters (another group's, or published
    /// there by hand) are passed over, so this reads the dead-letter topic
    /// through, in pages, until it has `limit` or is at the end. A group
    /// that does not exist is [`Error::UnknownGroup`] (a deleted group's dead
    /// letters stay in its dead-letter topic, for [`read`](Bus::read)).
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, GroupOptions, MemoryDriver, Message, NackOptions};
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// let sub = bus.subscribe("jobs", "workers", GroupOptions::new().max_attempts(1)).await?;
    /// bus.publish("jobs", Message::new("resize").with_id("job-7")).await?;
    /// let job = sub.recv().await?;
    /// job.nack(NackOptions::new().with_reason("image too large")).await?;
    /// let dead = bus.dead_letters("jobs", "workers", 1, 10).await?;
    /// assert_eq!((dead[0].id(), dead[0].attempts()), ("job-7", 1));
    /// assert_eq!(dead[0].error(), "image too large");
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn dead_letters(
        &self,
        topic: &str,
        group: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let inner = &self.inner;
        inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        check_name(NameKind::Group, group)?;
        let mut after = check_read(inner, topic, None, from_seq)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let dead_letter = self.group_settings(topic, group).await?.dead_letter;
        let mut found = Vec::new();
        while found.len() < limit {
            let (page, end) = self
                .dead_letter_page(&dead_letter, (topic, group), &mut after)
                .await?;
            let room = limit - found.len();
            found.extend(page.into_iter().take(room));
            if end {
                break;
            }
        }
        Ok(found)
    }

    /// Sends dead letters of group `group` of `topic` back to it (I8): each
    /// of its dead letters (as [`dead_letters`](Bus::dead_letters) lists
    /// them) that `select` chooses leaves that list and is delivered to the
    /// group again as new (its next delivery is attempt 1), to no other
    /// group: as if published now for that group alone, after every message
    /// the topic holds (an ordered group delivers it after those messages
    /// and before the ones published later; a per-key group, after the
    /// messages of its key published before the redrive). How many it sent
    /// back.
    ///
    /// Each page of dead letters is sent back in one atomic step: a dead
    /// letter is either listed or back in its group, never both and never
    /// lost, and one that another bus took back meanwhile is passed over.
    /// The dead letter stays in the dead-letter topic, whose reads and
    /// groups see it as before, until that topic's retention lets it go. The
    /// message sent back is not a message of `topic`: reads, listeners,
    /// other groups and retention do not see it, and it goes once the group
    /// settles it (or a [`seek`](Bus::seek) moves the group). A group that
    /// does not exist is [`Error::UnknownGroup`].
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, GroupOptions, MemoryDriver, Message, NackOptions, Order};
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// let options = GroupOptions::new().order(Order::Shared { max_in_flight: 8 }).max_attempts(1);
    /// let sub = bus.subscribe("jobs", "workers", options).await?;
    /// bus.publish("jobs", Message::new("resize").with_id("job-7")).await?;
    /// sub.recv().await?.nack(NackOptions::new().with_reason("disk full")).await?;
    ///
    /// // The disk has room again: every dead letter of the group goes back.
    /// assert_eq!(bus.redrive("jobs", "workers", |_| true).await?, 1);
    /// let again = sub.recv().await?;
    /// assert_eq!((again.message().id(), again.attempt()), ("job-7", 1));
    /// again.ack().await?;
    /// assert!(bus.dead_letters("jobs", "workers", 1, 10).await?.is_empty());
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn redrive<F>(&self, topic: &str, group: &str, select: F) -> Result<u64>
    where
        F: FnMut(&DeadLetter) -> bool,
    {
        self.take_back(topic, group, select, false).await
    }

    /// Gives up dead letters of group `group` of `topic`: each of its dead
    /// letters that `select` chooses leaves the list of
    /// [`dead_letters`](Bus::dead_letters) for good, and no redrive sends it
    /// back. How many it gave up. The messages stay in the dead-letter topic
    /// (a log, like any topic) until its retention lets them go: give it one
    /// ([`set_retention`](Bus::set_retention)) for their space to be reused.
    /// A group that does not exist is [`Error::UnknownGroup`].
    pub async fn purge_dead_letters<F>(&self, topic: &str, group: &str, select: F) -> Result<u64>
    where
        F: FnMut(&DeadLetter) -> bool,
    {
        self.take_back(topic, group, select, true).await
    }

    /// The next page of dead-letter topic `dead_letter` after seq `after`
    /// (which moves to its last seq), skipping what was taken back: the
    /// dead letters of `group` of `topic` in it, and whether it was the
    /// last page.
    async fn dead_letter_page(
        &self,
        dead_letter: &str,
        (topic, group): (&str, &str),
        after: &mut u64,
    ) -> Result<(Vec<DeadLetter>, bool)> {
        let page = self
            .read_inner(dead_letter, None, *after + 1, DEAD_LETTER_PAGE, true)
            .await?;
        let end = page.len() < DEAD_LETTER_PAGE;
        if let Some(last) = page.last() {
            *after = last.seq();
        }
        let listed = page
            .into_iter()
            .filter_map(|record| DeadLetter::of(record, topic, group))
            .collect();
        Ok((listed, end))
    }

    /// The stored settings of group `group` of `topic`, or
    /// [`Error::UnknownGroup`].
    async fn group_settings(&self, topic: &str, group: &str) -> Result<GroupSpec> {
        let stats = self.stats(topic).await?;
        match stats.groups.into_iter().find(|g| g.group == group) {
            Some(g) => Ok(g.settings),
            None => Err(Error::UnknownGroup {
                topic: topic.to_owned(),
                group: group.to_owned(),
            }),
        }
    }

    /// [`redrive`](Bus::redrive) and [`purge_dead_letters`](Bus::purge_dead_letters).
    async fn take_back<F>(
        &self,
        topic: &str,
        group: &str,
        mut select: F,
        purge: bool,
    ) -> Result<u64>
    where
        F: FnMut(&DeadLetter) -> bool,
    {
        let inner = &self.inner;
        inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        check_name(NameKind::Group, group)?;
        let settings = self.group_settings(topic, group).await?;
        let dead_letter = settings.dead_letter;
        let (mut after, mut total) = (0, 0);
        loop {
            let (page, end) = self
                .dead_letter_page(&dead_letter, (topic, group), &mut after)
                .await?;
            let letters: Vec<(u64, Arc<Message>)> = page
                .into_iter()
                .filter(|dead| select(dead))
                .map(|dead| (dead.record().seq(), Arc::new(dead.message_back())))
                .collect();
            if !letters.is_empty() {
                inner.drive_deferred();
                let done = inner
                    .driver
                    .redrive(Redrive {
                        topic,
                        group,
                        dead_letter: &dead_letter,
                        letters: &letters,
                        purge,
                        now: inner.clock.now(),
                    })
                    .await?;
                if !purge && !done.is_empty() {
                    inner.freed(topic, group, done.len());
                }
                total += done.len() as u64;
            }
            if end {
                break;
            }
        }
        Ok(total)
    }

    /// Moves group `group` of `topic` to a new position, as a consumer
    /// reset does: `Start::Beginning` (every message the topic holds again),
    /// `Start::End` (none of those it holds now) or `Start::AfterSeq(n)`.
    /// From then on the group sees each message after the position as new
    /// (attempt 1); every delivery out is no longer current (its ack is
    /// [`Error::LeaseLost`]); its settings and dead-letter count stay. It
    /// happens in one step, so it may run while consumers do; they get the
    /// messages from the new position at their next claim (what they had
    /// prefetched before it is not current either). A group that does not
    /// exist is [`Error::UnknownGroup`].
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, GroupOptions, MemoryDriver, Message, Start};
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// let sub = bus.subscribe("t", "g", GroupOptions::new()).await?;
    /// bus.publish("t", Message::new("once")).await?;
    /// sub.recv().await?.ack().await?;
    /// bus.seek("t", "g", Start::Beginning).await?;
    /// let again = sub.recv().await?;
    /// assert_eq!((again.message().payload(), again.attempt()), (&b"once"[..], 1));
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn seek(&self, topic: &str, group: &str, to: Start) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        check_name(NameKind::Group, group)?;
        let start_after = to.start_after()?;
        inner.drive_deferred();
        inner
            .driver
            .seek(Seek {
                topic,
                group,
                start_after,
            })
            .await?;
        inner.freed(topic, group, usize::MAX);
        Ok(())
    }

    /// Deletes group `group` of `topic`: its position, leases and attempt
    /// counts; whether it existed. The topic's messages and the group's
    /// dead letters stay. Its live subscriptions get [`Error::UnknownGroup`]
    /// from then on, and settling a delivery they hold is
    /// [`Error::LeaseLost`]; subscribing again creates the group anew, with
    /// the options and start of that subscription.
    pub async fn delete_group(&self, topic: &str, group: &str) -> Result<bool> {
        let inner = &self.inner;
        inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        check_name(NameKind::Group, group)?;
        inner.drive_deferred();
        let deleted = inner.driver.delete_group(topic, group).await?;
        inner.freed(topic, group, usize::MAX);
        Ok(deleted)
    }

    /// Deletes `topic`: its messages, its groups (as
    /// [`delete_group`](Bus::delete_group) does: their live subscriptions
    /// get [`Error::UnknownGroup`]), its retention and the ids its dedupe
    /// window remembers; whether it held a message or a group. It leaves a
    /// tombstone, so nothing silently brings it back: publishing to it,
    /// subscribing to it, naming it as a dead-letter topic and setting its
    /// retention are [`Error::TopicDeleted`] on every bus of the store (a
    /// plain SQL `INSERT` is refused too) until
    /// [`create_topic`](Bus::create_topic).
    ///
    /// The tombstone and the groups go in the first step; the messages in
    /// steps of at most [`PRUNE_BATCH`] (each its own transaction on a SQL
    /// store, so the store is never locked for long). If the call ends
    /// before the last step (a dropped future, a crash), the topic stays
    /// deleted with part of its messages: calling it again (or
    /// `create_topic`) finishes the job. A topic that is the dead-letter
    /// topic of a group of another topic is [`Error::TopicInUse`], and
    /// nothing changes: that group's dead letters must always land.
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, Error, GroupOptions, MemoryDriver, Message};
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// bus.publish("old-events", Message::new("a")).await?;
    /// assert!(bus.delete_topic("old-events").await?);
    /// assert!(bus.read("old-events", 0, 10).await?.is_empty());
    /// let again = bus.publish("old-events", Message::new("b")).await;
    /// assert!(matches!(again, Err(Error::TopicDeleted { .. })));
    /// bus.create_topic("old-events").await?;
    /// bus.publish("old-events", Message::new("b")).await?;
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn delete_topic(&self, topic: &str) -> Result<bool> {
        let held = self.delete_topic_steps(topic, false).await?;
        Ok(held.0)
    }

    /// Lifts the deletion of `topic` ([`delete_topic`](Bus::delete_topic)),
    /// so it can be published to and subscribed to again, empty; whether
    /// it was deleted. A topic that was never deleted needs no creating
    /// (publishing to it creates it) and is left as it is. Messages a
    /// deletion that did not finish left behind are deleted first.
    pub async fn create_topic(&self, topic: &str) -> Result<bool> {
        let was_deleted = self.delete_topic_steps(topic, true).await?;
        Ok(was_deleted.1)
    }

    /// Runs [`Driver::delete_topic`] until a step leaves no messages:
    /// whether the steps deleted a message or a group, and whether the
    /// topic was deleted before the first.
    async fn delete_topic_steps(&self, topic: &str, lift: bool) -> Result<(bool, bool)> {
        let inner = &self.inner;
        inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        inner.drive_deferred();
        let mut held = false;
        let mut was_deleted = None;
        loop {
            let step = DeleteTopic {
                topic,
                limit: PRUNE_BATCH,
                lift,
            };
            let done = inner.driver.delete_topic(step).await?;
            was_deleted.get_or_insert(done.was_deleted);
            held |= done.messages > 0 || !done.groups.is_empty();
            for group in &done.groups {
                inner.freed(topic, group, usize::MAX);
            }
            if done.messages < u64::from(PRUNE_BATCH) {
                return Ok((held, was_deleted.unwrap_or(false)));
            }
        }
    }

    /// Sets how long `topic` keeps its messages (see [`Retention`]), in
    /// place of what it had; stored with the topic, so every bus of the
    /// store follows it. Messages it no longer keeps go in the prune steps
    /// of later publishes and acks, or at once with [`prune`](Bus::prune).
    /// A rule of 0 is [`Error::InvalidOptions`].
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, MemoryDriver, Message, Retention};
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// bus.set_retention("metrics", Retention::new().max_messages(2)).await?;
    /// for n in 0..5 {
    ///     bus.publish("metrics", Message::new(format!("{n}"))).await?;
    /// }
    /// bus.prune("metrics").await?;
    /// let kept = bus.read("metrics", 0, 10).await?;
    /// assert_eq!(kept.iter().map(|r| r.message().payload()).collect::<Vec<_>>(), [b"3", b"4"]);
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn set_retention(&self, topic: &str, retention: Retention) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        retention.validate()?;
        inner.drive_deferred();
        inner.driver.set_retention(topic, retention).await
    }

    /// Lets go now of every message of `topic` that its [`Retention`] no
    /// longer keeps, in steps of at most [`PRUNE_BATCH`] messages (each its
    /// own transaction on a SQL store); how many went. Publishes and acks
    /// prune on their own ([`BusOptions::prune_every`]); this is for a topic
    /// nobody writes to, whose messages should still age out.
    pub async fn prune(&self, topic: &str) -> Result<u64> {
        let inner = &self.inner;
        inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        inner.drive_deferred();
        let mut total = 0;
        loop {
            let pruned = inner
                .driver
                .prune(Prune {
                    topic,
                    now: inner.now(),
                    limit: PRUNE_BATCH,
                })
                .await?;
            inner.pruned(topic, pruned);
            total += pruned;
            if pruned < u64::from(PRUNE_BATCH) {
                return Ok(total);
            }
        }
    }

    /// The names of the store's topics (those that hold a message or a
    /// group), in order; [`stats`](Bus::stats) gives each one's groups with
    /// their settings and how far behind they are.
    pub async fn topics(&self) -> Result<Vec<String>> {
        let inner = &self.inner;
        inner.check_open()?;
        inner.drive_deferred();
        inner.driver.topics().await
    }

    /// Statistics of `topic` and each of its groups: their settings, what
    /// each has ready and in flight (how far behind it is), its acked floor
    /// and its dead letters.
    ///
    /// With the `metrics` feature, each call also sets the gauges
    /// `litebus_topic_messages` (by topic) and `litebus_ready`,
    /// `litebus_in_flight`, `litebus_behind` (ready and in flight: the lag
    /// in messages), `litebus_oldest_age_seconds` (the lag in time) and
    /// `litebus_dead_lettered` (by topic and group) from what it read: call
    /// it on a timer for a dashboard of every process on the store.
    pub async fn stats(&self, topic: &str) -> Result<TopicStats> {
        let inner = &self.inner;
        inner.check_open()?;
        check_name(NameKind::Topic, topic)?;
        inner.drive_deferred();
        let stats = inner.driver.stats(topic, inner.clock.now()).await?;
        gauge!("litebus_topic_messages", stats.messages as f64, "topic" => topic);
        #[cfg(feature = "metrics")]
        for g in &stats.groups {
            let group = g.group.as_str();
            gauge!("litebus_ready", g.ready as f64, "topic" => topic, "group" => group);
            gauge!("litebus_in_flight", g.in_flight as f64, "topic" => topic, "group" => group);
            let behind = (g.ready + g.in_flight) as f64;
            gauge!("litebus_behind", behind, "topic" => topic, "group" => group);
            let age = g.lag.map_or(0.0, |d| d.as_secs_f64());
            gauge!("litebus_oldest_age_seconds", age, "topic" => topic, "group" => group);
            let dead = g.dead_lettered as f64;
            gauge!("litebus_dead_lettered", dead, "topic" => topic, "group" => group);
        }
        Ok(stats)
    }

    /// The bus's clock.
    pub fn clock(&self) -> &dyn Clock {
        &*self.inner.clock
    }

    /// Whether [`close`](Bus::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Closes the bus: waiting `recv`s of its subscriptions end with
    /// [`Error::Closed`], the leases of every live subscription are released
    /// (so another bus or process can take them), and this bus's handle of
    /// the driver is closed; other buses on the same store go on. Every later
    /// call returns [`Error::Closed`].
    ///
    /// Closing twice is harmless: a second `close`, even a concurrent one,
    /// returns once the first has released the leases. (If the first
    /// `close` is dropped before it finishes, the others return then, and
    /// the leases it did not release end when they run out.)
    pub async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            loop {
                let finished = inner.close_finished.listen();
                if inner.close_done.load(Ordering::Acquire) {
                    return Ok(());
                }
                finished.await;
            }
        }
        let _done = CloseDone(inner);
        inner.closing.notify(usize::MAX);
        let topics: Vec<Arc<TopicSignal>> = lock(&inner.topics).values().cloned().collect();
        for signal in &topics {
            for listener in lock(&signal.listeners).iter().filter_map(Weak::upgrade) {
                listener.close();
            }
        }
        // Released in the order they subscribed, so a close is deterministic.
        let mut consumers: Vec<(u64, ConsumerRef)> = lock(&inner.consumers).drain().collect();
        consumers.sort_unstable_by_key(|(key, _)| *key);
        let deferred: Vec<BoxFuture<'static, ()>> = std::mem::take(&mut *lock(&inner.deferred));
        for future in deferred {
            future.await;
        }
        let now = inner.clock.now();
        let mut first_error = None;
        let mut released = Vec::new();
        for (_, c) in consumers {
            released.push((c.topic.clone(), c.group.clone()));
            let release = Release {
                topic: &c.topic,
                group: &c.group,
                consumer: &c.consumer,
                now,
            };
            if let Err(e) = inner.release(release).await {
                first_error.get_or_insert(e);
            }
        }
        // The leases are free: other buses on the store may take them.
        for (topic, group) in released {
            inner.freed(&topic, &group, usize::MAX);
        }
        let closed = inner.driver.close().await;
        match first_error {
            Some(e) => Err(e),
            None => closed,
        }
    }
}

/// How many messages of a dead-letter topic [`Bus::dead_letters`] reads at a
/// time.
const DEAD_LETTER_PAGE: usize = 256;

/// Checks a read's input; the seq to read after.
fn check_read(inner: &BusInner, topic: &str, key: Option<&str>, from_seq: u64) -> Result<u64> {
    inner.check_open()?;
    check_name(NameKind::Topic, topic)?;
    if let Some(key) = key {
        check_label(NameKind::MessageKey, key)?;
    }
    if from_seq > MAX_SEQ {
        return Err(Error::InvalidOptions(format!(
            "read from seq {from_seq}: seqs end at {MAX_SEQ}"
        )));
    }
    Ok(from_seq.saturating_sub(1))
}

/// Marks the first `close` finished, even if it was dropped half-way, so
/// that no other `close` waits for ever.
struct CloseDone<'a>(&'a BusInner);

impl Drop for CloseDone<'_> {
    fn drop(&mut self) {
        self.0.close_done.store(true, Ordering::Release);
        self.0.close_finished.notify(usize::MAX);
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("capabilities", &self.inner.driver.capabilities())
            .field("clock", &self.inner.clock)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl BusInner {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn signal(&self, topic: &str) -> Arc<TopicSignal> {
        crate::wake::shared(&self.topics, topic)
    }

    /// Announces dead letters as any publish would be announced.
    /// What follows a committed append of `batch` to `topic` with
    /// `outcomes`: listeners get the new messages, waiting consumers are
    /// woken (unless the driver does it), and retention counts them.
    pub(crate) async fn appended(&self, topic: &str, outcomes: &[Outcome], batch: &[Arc<Message>]) {
        let signal = self.signal(topic);
        let mut published = 0;
        for (outcome, message) in outcomes.iter().zip(batch) {
            if let Outcome::Published { seq } = outcome {
                signal.broadcast(*seq, message);
                published += 1;
            }
        }
        if self.wakes_itself {
            self.wakeups.published(topic, published);
        }
        self.written(topic, published).await;
    }

    /// Ends a consumer's leases through the driver and announces what that
    /// dead-lettered.
    pub(crate) async fn release(&self, release: Release<'_>) -> Result<()> {
        let span = span!(
            "litebus.release",
            topic = release.topic,
            group = release.group,
            consumer = release.consumer,
            dead_lettered = tracing::field::Empty,
        );
        let dead = instrument!(span, self.driver.release(release)).await?;
        record!(span, "dead_lettered", dead.len());
        self.announce(&dead);
        // Its error is not the release's: the leases ended (the append's
        // failure is an event of its own).
        #[cfg(feature = "audit")]
        let _ = self.audit_dead_letters(&dead).await;
        Ok(())
    }

    pub(crate) fn announce(&self, dead: &[DeadLettered]) {
        crate::telemetry::dead_lettered(dead);
        for d in dead {
            let signal = self.signal(&d.topic);
            signal.broadcast(d.seq, &d.message);
            if self.wakes_itself {
                self.wakeups.published(&d.topic, 1);
            }
        }
    }

    /// `count` messages of a group became deliverable through a call of
    /// this bus: wakes its waiting consumers, unless the driver did at the
    /// commit (see [`Driver::wakeups`]).
    pub(crate) fn freed(&self, topic: &str, group: &str, count: usize) {
        if self.wakes_itself {
            self.wakeups.freed(topic, group, count);
        }
    }

    pub(crate) fn forget_consumer(&self, key: u64) {
        lock(&self.consumers).remove(&key);
    }

    /// Runs a release to completion if it completes at once (the memory
    /// driver's always do); otherwise keeps it to be driven by later calls.
    pub(crate) fn release_soon(self: &Arc<Self>, topic: String, group: String, consumer: String) {
        let inner = self.clone();
        let mut release: BoxFuture<'static, ()> = Box::pin(async move {
            let now = inner.now();
            let release = Release {
                topic: &topic,
                group: &group,
                consumer: &consumer,
                now,
            };
            // Its error is nobody's: the leases run out in time.
            let _ = inner.release(release).await;
            inner.freed(&topic, &group, usize::MAX);
        });
        if poll_once(&mut release).is_pending()
            && let Some(release) = self.driver.spawn_background(release)
        {
            lock(&self.deferred).push(release);
        }
    }

    /// Counts `messages` published or acked to `topic` through this bus,
    /// and runs a prune step of the topic once there have been
    /// [`BusOptions::prune_every`] since the last. The step's error is not
    /// the caller's (its publish or ack happened): the next step tries
    /// again.
    pub(crate) async fn written(&self, topic: &str, messages: usize) {
        if messages == 0 {
            return;
        }
        let limit = {
            let mut unpruned = lock(&self.unpruned);
            let count = unpruned.entry(topic.to_owned()).or_insert(0);
            *count = count.saturating_add(u32::try_from(messages).unwrap_or(u32::MAX));
            if *count < self.options.prune_every {
                return;
            }
            let limit = count.saturating_mul(2);
            unpruned.remove(topic);
            limit
        };
        let now = self.now();
        if let Ok(pruned) = self.driver.prune(Prune { topic, now, limit }).await {
            self.pruned(topic, pruned);
        }
    }

    /// A prune step let go of `count` messages of `topic`: a group whose
    /// delivery went may deliver the next at once.
    fn pruned(&self, topic: &str, count: u64) {
        if count > 0 && self.wakes_itself {
            self.wakeups.published(topic, usize::MAX);
        }
    }

    /// Gives every deferred release one more poll.
    pub(crate) fn drive_deferred(&self) {
        let mut deferred = lock(&self.deferred);
        if !deferred.is_empty() {
            deferred.retain_mut(|f| poll_once(f).is_pending());
        }
    }
}

fn poll_once(future: &mut BoxFuture<'static, ()>) -> Poll<()> {
    future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
}
