//! [`Wakeups`]: who waits for what in one store, shared by every bus on it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_listener::{Event, EventListener, IntoNotification};

use crate::clock::lock;
use crate::driver::ClaimOutcome;

/// The waiting subscriptions of one store, by topic and group.
///
/// Every [`Bus`](crate::Bus) on a store wakes and waits through the same
/// `Wakeups`, so a commit made through one bus wakes the subscriptions of
/// every other bus on that store. A driver hands it out from
/// [`Driver::wakeups`](crate::driver::Driver::wakeups); clones share it.
///
/// Wake-ups are counted: a publish of `n` messages wakes at most `n` waiting
/// consumers of each group of the topic, an ack or a nack one of its
/// group, so fifty idle consumers of one group are not all woken for one
/// message. A consumer that was woken and then stopped waiting before it
/// looked at the store passes its wake-up on to another.
#[derive(Clone, Default)]
pub struct Wakeups {
    topics: Arc<Mutex<HashMap<String, Arc<TopicWake>>>>,
}

/// The value of `map` under `key`, made if missing.
pub(crate) fn shared<T: Default>(map: &Mutex<HashMap<String, Arc<T>>>, key: &str) -> Arc<T> {
    let mut map = lock(map);
    if let Some(value) = map.get(key) {
        return value.clone();
    }
    let value = Arc::new(T::default());
    map.insert(key.to_owned(), value.clone());
    value
}

#[derive(Default)]
struct TopicWake {
    groups: Mutex<HashMap<String, Arc<Event>>>,
    /// Consumers waiting caught up, oldest first.
    waiting: Mutex<Vec<Arc<Waiting>>>,
    /// Fires at every commit of new messages to the topic, for its
    /// followers ([`Follow`](crate::Follow)).
    published: Event,
}

/// A consumer waiting for its group's next messages, having found nothing
/// deliverable: a publish may lease new messages to it in its own step (a
/// hand-off, [`Append::handoffs`](crate::driver::Append::handoffs)).
#[derive(Debug)]
pub(crate) struct Waiting {
    /// Its group.
    pub(crate) group: String,
    /// Its consumer id.
    pub(crate) consumer: String,
    /// Its lease length.
    pub(crate) lease: Duration,
    /// The most deliveries it takes at once (its prefetch).
    pub(crate) max: u32,
    /// Its group's backoff.
    pub(crate) backoff: crate::options::Backoff,
    /// Where what is leased to it goes.
    pub(crate) inbox: Inbox,
}

/// What a driver leased to a waiting consumer on its behalf (a hand-off),
/// kept for that consumer's next look: it gets it without a claim. Clones
/// share it.
#[derive(Clone, Default)]
pub struct Inbox(Arc<InboxInner>);

#[derive(Default)]
struct InboxInner {
    kept: Mutex<Option<ClaimOutcome>>,
    arrived: Event,
}

impl Inbox {
    /// Puts what was leased to the consumer (after the step that leased it
    /// committed) and wakes the consumer.
    pub fn deliver(&self, outcome: ClaimOutcome) {
        if outcome.deliveries.is_empty() && outcome.dead_lettered.is_empty() {
            return;
        }
        {
            let mut kept = lock(&self.0.kept);
            match kept.as_mut() {
                Some(old) => {
                    old.deliveries.extend(outcome.deliveries);
                    old.deliveries.sort_by_key(|d| d.seq);
                    if !outcome.ahead.is_empty() {
                        old.ahead = outcome.ahead;
                    }
                    old.dead_lettered.extend(outcome.dead_lettered);
                }
                None => *kept = Some(outcome),
            }
        }
        self.0.arrived.notify(usize::MAX);
    }

    /// Whether something was delivered since the last take.
    pub(crate) fn is_full(&self) -> bool {
        lock(&self.0.kept).is_some()
    }

    /// What was delivered since the last take.
    pub(crate) fn take(&self) -> Option<ClaimOutcome> {
        lock(&self.0.kept).take()
    }

    /// Fires at the next delivery.
    pub(crate) fn listen(&self) -> EventListener {
        self.0.arrived.listen()
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("full", &lock(&self.0.kept).is_some())
            .finish()
    }
}

/// A consumer's place among the waiting, given up when dropped.
pub(crate) struct WaitingGuard {
    topic: Arc<TopicWake>,
    waiting: Arc<Waiting>,
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        lock(&self.topic.waiting).retain(|w| !Arc::ptr_eq(w, &self.waiting));
    }
}

impl Wakeups {
    /// Wake-ups of a store nobody waits on yet.
    pub fn new() -> Self {
        Wakeups::default()
    }

    /// The event the consumers of one group wait on.
    pub(crate) fn group(&self, topic: &str, group: &str) -> Arc<Event> {
        shared(&shared(&self.topics, topic).groups, group)
    }

    /// Fires at the next commit of new messages to `topic`.
    pub(crate) fn published_listener(&self, topic: &str) -> EventListener {
        shared(&self.topics, topic).published.listen()
    }

    /// Counts `waiting` among the consumers of `topic` waiting caught up
    /// until the guard is dropped.
    pub(crate) fn wait_for(&self, topic: &str, waiting: Waiting) -> WaitingGuard {
        let topic = shared(&self.topics, topic);
        let waiting = Arc::new(waiting);
        lock(&topic.waiting).push(waiting.clone());
        WaitingGuard { topic, waiting }
    }

    /// The consumers of `topic` waiting caught up: the one that waited
    /// longest in each group.
    pub(crate) fn waiting(&self, topic: &str) -> Vec<Arc<Waiting>> {
        let Some(wake) = lock(&self.topics).get(topic).cloned() else {
            return Vec::new();
        };
        let waiting = lock(&wake.waiting);
        let mut first: Vec<Arc<Waiting>> = Vec::new();
        // One that was handed something already has it to look at.
        for w in waiting.iter().filter(|w| !w.inbox.is_full()) {
            if !first.iter().any(|f| f.group == w.group) {
                first.push(w.clone());
            }
        }
        first
    }

    /// `count` messages became deliverable in `topic`: wakes up to `count`
    /// more waiting consumers of each of its groups.
    pub fn published(&self, topic: &str, count: usize) {
        if count == 0 {
            return;
        }
        let wake = lock(&self.topics).get(topic).cloned();
        if let Some(wake) = wake {
            for event in lock(&wake.groups).values() {
                event.notify(count.additional());
            }
            wake.published.notify(usize::MAX);
        }
    }

    /// `count` messages of one group became deliverable (a nack, an ack that
    /// lets the next one of an ordered group go, a released lease): wakes up
    /// to `count` more of its waiting consumers.
    pub fn freed(&self, topic: &str, group: &str, count: usize) {
        if count == 0 {
            return;
        }
        let wake = lock(&self.topics).get(topic).cloned();
        if let Some(wake) = wake
            && let Some(event) = lock(&wake.groups).get(group)
        {
            event.notify(count.additional());
        }
    }

    /// Anything may have changed (another process committed): wakes every
    /// waiting consumer.
    pub fn everything(&self) {
        let topics: Vec<Arc<TopicWake>> = lock(&self.topics).values().cloned().collect();
        for wake in topics {
            for event in lock(&wake.groups).values() {
                event.notify(usize::MAX);
            }
            wake.published.notify(usize::MAX);
        }
    }

    /// Whether `self` and `other` are the same store's.
    pub fn same(&self, other: &Wakeups) -> bool {
        Arc::ptr_eq(&self.topics, &other.topics)
    }
}

impl fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wakeups")
            .field("topics", &lock(&self.topics).len())
            .finish()
    }
}

/// A wake-up taken by a consumer that has not yet looked at the store. If
/// it is dropped before [`Taken::used`] (its `recv` was cancelled), the
/// wake-up goes to another waiting consumer of the group, so none is lost.
pub(crate) struct Taken<'a> {
    event: Option<&'a Event>,
}

impl<'a> Taken<'a> {
    pub(crate) fn new(event: &'a Event) -> Self {
        Taken { event: Some(event) }
    }

    pub(crate) fn none() -> Self {
        Taken { event: None }
    }

    /// The consumer looked at the store: the wake-up served its purpose.
    pub(crate) fn used(mut self) {
        self.event = None;
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(event) = self.event.take() {
            event.notify(1.additional());
        }
    }
}
