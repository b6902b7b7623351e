//! Claims whose caller stopped waiting (a `recv` cut by a deadline or a
//! `select!`). The writer runs a claim on its own task, so a caller that goes
//! away cannot stop it half-way; what it leased is kept here for that
//! consumer's next claim, instead of staying leased to nobody until the
//! lease runs out. A claim whose caller left before it ran does not run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use event_listener::{Event, EventListener};
use litebus::driver::ClaimOutcome;

/// A consumer of a group: topic, group, consumer id.
pub(crate) type ConsumerKey = (String, String, String);

/// What abandoned claims leased, by consumer.
#[derive(Debug, Default)]
pub(crate) struct Unread {
    kept: Mutex<HashMap<ConsumerKey, ClaimOutcome>>,
    /// Fires when a claim is kept, so a consumer already waiting again
    /// looks at once.
    arrived: Event,
}

impl Unread {
    fn keep(&self, key: ConsumerKey, outcome: ClaimOutcome) {
        {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = kept.entry(key).or_default();
            entry.deliveries.extend(outcome.deliveries);
            entry.deliveries.sort_by_key(|d| d.seq);
            entry.dead_lettered.extend(outcome.dead_lettered);
        }
        self.arrived.notify(usize::MAX);
    }

    /// What abandoned claims of `key` leased, if anything.
    pub(crate) fn take(&self, key: &ConsumerKey) -> Option<ClaimOutcome> {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
    }

    /// Completes when a claim is kept.
    pub(crate) fn listen(&self) -> EventListener {
        self.arrived.listen()
    }
}

/// A claim's outcome on its way to its caller. Dropped unopened (its
/// caller stopped waiting), it is kept in [`Unread`].
pub(crate) struct Answer {
    outcome: Option<ClaimOutcome>,
    key: ConsumerKey,
    unread: Arc<Unread>,
}

impl Answer {
    pub(crate) fn new(outcome: ClaimOutcome, key: ConsumerKey, unread: Arc<Unread>) -> Self {
        Answer {
            outcome: Some(outcome),
            key,
            unread,
        }
    }

    /// The outcome, for the caller.
    pub(crate) fn open(mut self) -> ClaimOutcome {
        self.outcome.take().unwrap_or_default()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome.take()
            && (!outcome.deliveries.is_empty() || !outcome.dead_lettered.is_empty())
        {
            self.unread.keep(std::mem::take(&mut self.key), outcome);
        }
    }
}
