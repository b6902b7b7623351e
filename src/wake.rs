//! [`Wakeups`]: who waits for what in one store, shared by every bus on it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use event_listener::{Event, IntoNotification};

use crate::clock::lock;

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
