//! [`MemoryDriver`]: the whole contract in plain Rust data structures.
//!
//! It is the readable reference for the SQL drivers: each method takes the
//! store's one lock, so every call is atomic and calls are serialized.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::clock::{Timestamp, lock};
use crate::driver::{
    Ahead, Append, BoxFuture, CONSUMER_RELEASED, Capabilities, Claim, ClaimOutcome, Claimed,
    DeadLettered, DeleteTopic, Driver, EnsureGroup, GroupSpec, GroupStats, LEASE_EXPIRED, NACKED,
    Prune, Read, Redrive, Release, Seek, Settle, Settlement, TopicDeletion, TopicStats, Wakeups,
    dead_letter_message, generate_id, lag, prune_count,
};
use crate::error::{Error, Result};
use crate::message::{Message, Outcome};
use crate::options::{Backoff, Order, Retention};
use crate::read::Record;

/// A driver that keeps everything in memory: fast, not durable, available on
/// every target including wasm32.
///
/// Clones share one store, so a second [`Bus`](crate::Bus) opened on a clone
/// sees the same topics (the way a durable driver reopens a file), and a commit
/// through either wakes the subscriptions of both.
///
/// ```
/// use litebus::{Bus, BusOptions, MemoryDriver, Message};
/// # futures_lite::future::block_on(async {
/// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
/// bus.publish("greetings", Message::new("hi")).await?;
/// # Ok::<(), litebus::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryDriver {
    store: Arc<Mutex<Store>>,
    wakeups: Wakeups,
}

impl MemoryDriver {
    /// An empty store.
    pub fn new() -> Self {
        MemoryDriver::default()
    }

    /// Dead letters are new messages of their topics.
    fn dead_letters_wake(&self, dead: &[DeadLettered]) {
        for d in dead {
            self.wakeups.published(&d.topic, 1);
        }
    }
}

#[derive(Debug, Default)]
struct Store {
    /// The last seq given to any message: seqs are one sequence across
    /// topics, like a SQL table's row ids, so a topic's seqs have gaps.
    last_seq: u64,
    /// The last generation given to a group, store-wide: a group created
    /// again after a delete never has one its deliveries of before had.
    last_generation: u64,
    topics: HashMap<String, TopicLog>,
    /// The deleted topics' tombstones.
    deleted: HashSet<String>,
}

#[derive(Debug, Default)]
struct TopicLog {
    messages: Log,
    ids: HashMap<String, u64>,
    groups: BTreeMap<String, GroupState>,
    retention: Retention,
    /// The ids of messages retention let go of, within their dedupe
    /// window: the original's seq and the window's end.
    remembered: HashMap<String, (u64, Timestamp)>,
    /// The dead letters (of some group of another topic) that a redrive or
    /// purge took back: still messages of this topic, no longer listed.
    taken_back: BTreeSet<u64>,
}

/// A topic's messages in seq order, and the seqs of each key.
#[derive(Debug, Default)]
struct Log {
    rows: Vec<(u64, Arc<Message>)>,
    /// Each row's publish time.
    times: Vec<Timestamp>,
    /// The rows' payload bytes.
    bytes: u64,
    /// The last seq retention let go of: the topic's last seq never goes
    /// back.
    pruned_to: u64,
    /// Each key's seqs, oldest first: retention lets go of their fronts.
    by_key: HashMap<String, VecDeque<u64>>,
    /// The messages of a priority above 0, highest first, in seq order
    /// within one: a shared group's claim looks at these first.
    prioritized: BTreeSet<(Reverse<u8>, u64)>,
}

impl Log {
    fn push(&mut self, seq: u64, message: Arc<Message>, now: Timestamp) {
        if let Some(key) = message.key() {
            self.by_key
                .entry(key.to_owned())
                .or_default()
                .push_back(seq);
        }
        self.bytes += message.payload().len() as u64;
        if message.priority() > 0 {
            self.prioritized.insert((Reverse(message.priority()), seq));
        }
        self.rows.push((seq, message));
        self.times.push(now);
    }

    /// Lets go of the first `count` rows; their ids, seqs and publish times.
    fn drop_front(&mut self, count: usize) -> Vec<(String, u64, Timestamp)> {
        let gone: Vec<(u64, Arc<Message>)> = self.rows.drain(..count).collect();
        let times: Vec<Timestamp> = self.times.drain(..count).collect();
        let mut ids = Vec::with_capacity(count);
        for ((seq, message), at) in gone.into_iter().zip(times) {
            self.pruned_to = seq;
            self.bytes -= message.payload().len() as u64;
            self.prioritized.remove(&(Reverse(message.priority()), seq));
            if let Some(key) = message.key()
                && let Some(seqs) = self.by_key.get_mut(key)
            {
                // The log's front is each of its keys' front.
                debug_assert_eq!(seqs.front(), Some(&seq));
                seqs.pop_front();
                if seqs.is_empty() {
                    self.by_key.remove(key);
                }
            }
            ids.push((message.id().to_owned(), seq, at));
        }
        ids
    }

    fn last_seq(&self) -> u64 {
        self.rows.last().map_or(self.pruned_to, |(seq, _)| *seq)
    }

    /// The row at `seq`, which the log holds.
    fn row(&self, seq: u64) -> &(u64, Arc<Message>) {
        &self.rows[self.rows.partition_point(|(s, _)| *s < seq)]
    }

    /// The message at `seq`, which the log holds.
    fn get(&self, seq: u64) -> &Arc<Message> {
        &self.row(seq).1
    }

    /// The messages after `seq`, in order.
    fn after(&self, seq: u64) -> &[(u64, Arc<Message>)] {
        &self.rows[self.rows.partition_point(|(s, _)| *s <= seq)..]
    }

    /// The first message of `key` after seq `after`, up to seq `up_to`.
    fn next_of_key(&self, key: &str, after: u64, up_to: u64) -> Option<u64> {
        let seqs = self.by_key.get(key)?;
        seqs.get(seqs.partition_point(|&s| s <= after))
            .copied()
            .filter(|&s| s <= up_to)
    }
}

/// A per-key group's candidates: the first unsettled message of each key
/// and the unsettled messages without a key, among the messages up to
/// `tail`. A claim looks at these, not at every message behind a busy key;
/// settling a key's head makes the next message of its key (up to `tail`)
/// its head.
#[derive(Debug, Default)]
struct Heads {
    /// Every message up to it is a head, behind a head, or settled.
    tail: u64,
    /// The heads, by seq, with their keys.
    seqs: BTreeMap<u64, Option<String>>,
    /// Each key's head.
    by_key: HashMap<String, u64>,
}

impl Heads {
    /// Takes in the messages after `tail`.
    fn take_in(&mut self, log: &Log) {
        for (seq, message) in log.after(self.tail) {
            match message.key() {
                None => {
                    self.seqs.insert(*seq, None);
                }
                Some(key) if !self.by_key.contains_key(key) => {
                    self.by_key.insert(key.to_owned(), *seq);
                    self.seqs.insert(*seq, Some(key.to_owned()));
                }
                Some(_) => {}
            }
            self.tail = *seq;
        }
    }

    /// `seq` is settled: the next message of its key becomes the head.
    fn settled(&mut self, seq: u64, log: &Log) {
        if let Some(Some(key)) = self.seqs.remove(&seq) {
            self.by_key.remove(&key);
            if let Some(next) = log.next_of_key(&key, seq, self.tail) {
                self.by_key.insert(key.clone(), next);
                self.seqs.insert(next, Some(key));
            }
        }
    }
}

impl TopicLog {
    /// The seq of the message with id `id`, kept or remembered (I2).
    fn knows(&self, id: &str, now: Timestamp) -> Option<u64> {
        self.ids.get(id).copied().or_else(|| {
            self.remembered
                .get(id)
                .filter(|(_, until)| *until > now)
                .map(|(seq, _)| *seq)
        })
    }

    fn append(&mut self, last_seq: &mut u64, message: Arc<Message>, now: Timestamp) -> Outcome {
        if let Some(seq) = self.knows(message.id(), now) {
            return Outcome::Duplicate { seq };
        }
        self.remembered.remove(message.id());
        *last_seq += 1;
        let seq = *last_seq;
        self.ids.insert(message.id().to_owned(), seq);
        self.messages.push(seq, message, now);
        Outcome::Published { seq }
    }

    /// Lets go of up to `limit` of the oldest messages the retention no
    /// longer keeps; how many went.
    fn prune(&mut self, now: Timestamp, limit: u32) -> u64 {
        self.remembered.retain(|_, (_, until)| *until > now);
        if self.retention.keeps_everything() {
            return 0;
        }
        let log = &self.messages;
        let window: Vec<(u64, Timestamp, u64)> = log
            .rows
            .iter()
            .zip(&log.times)
            .take(limit as usize)
            .map(|((seq, m), at)| (*seq, *at, m.payload().len() as u64))
            .collect();
        let floor = self.groups.values().map(|g| g.floor).min();
        let count = (log.rows.len() as u64, log.bytes);
        let go = prune_count(&self.retention, &window, count, floor, now);
        if go == 0 {
            return 0;
        }
        let cut = window[go - 1].0;
        let gone: Vec<u64> = window[..go].iter().map(|(seq, ..)| *seq).collect();
        let window_ms = self.retention.dedupe_window_millis();
        for (id, seq, at) in self.messages.drop_front(go) {
            self.ids.remove(&id);
            let until = window_ms.map(|w| Timestamp::from_millis(at.as_millis().saturating_add(w)));
            if let Some(until) = until.filter(|until| *until > now) {
                self.remembered.insert(id, (seq, until));
            }
        }
        for group in self.groups.values_mut() {
            group.prune(cut, &gone, &self.messages);
        }
        self.taken_back = self.taken_back.split_off(&(cut + 1));
        go as u64
    }
}

#[derive(Debug)]
struct GroupState {
    spec: GroupSpec,
    /// Every message of the topic with a seq at or below is settled or
    /// before the start; the scan for deliverable messages starts above.
    floor: u64,
    /// Messages above the floor that were delivered at least once.
    entries: BTreeMap<u64, Entry>,
    /// Leases of unsettled messages, by end time.
    leases: BTreeSet<(Timestamp, u64)>,
    dead_lettered: u64,
    /// Messages retention let go of before the group settled them.
    pruned: u64,
    /// A per-key group's candidates.
    heads: Option<Heads>,
    /// Messages a redrive sent back to this group alone, by the seqs they
    /// were given (above every message of the topic then), until settled.
    redriven: Vec<(u64, Arc<Message>)>,
    /// Given at creation and by each seek, from the store's count
    /// (`Claimed::generation`).
    generation: u64,
    /// The rate limit's window: when it opened, deliveries in it.
    window: (Timestamp, u32),
}

#[derive(Debug)]
struct Entry {
    attempt: u32,
    retry_at: Timestamp,
    lease: Option<Lease>,
    settled: bool,
}

#[derive(Debug)]
struct Lease {
    consumer: String,
    until: Timestamp,
}

/// A dead letter decided inside a group, to be appended once the group's
/// borrow ends.
struct PendingDeadLetter {
    topic: String,
    message: Message,
}

impl GroupState {
    /// A group that sees the messages after `floor`, none delivered yet.
    fn new(spec: GroupSpec, floor: u64, [dead_lettered, pruned]: [u64; 2]) -> Self {
        let per_key = spec.order == Order::PerKey;
        GroupState {
            spec,
            floor,
            entries: BTreeMap::new(),
            leases: BTreeSet::new(),
            dead_lettered,
            pruned,
            heads: per_key.then(|| Heads {
                tail: floor,
                ..Heads::default()
            }),
            redriven: Vec::new(),
            generation: 0,
            window: (Timestamp::ZERO, 0),
        }
    }

    fn advance_floor(&mut self, log: &Log) {
        while let Some((seq, _)) = log.after(self.floor).first() {
            if !self.entries.get(seq).is_some_and(|e| e.settled) {
                break;
            }
            self.entries.remove(seq);
            self.floor = *seq;
        }
    }

    /// The messages `gone` (every one up to `cut`) left the topic: those
    /// not settled yet are counted as pruned, and the group forgets them.
    /// `log` is the topic without them.
    fn prune(&mut self, cut: u64, gone: &[u64], log: &Log) {
        let settled = |seq: &u64| self.entries.get(seq).is_some_and(|e| e.settled);
        self.pruned += gone
            .iter()
            .filter(|&seq| *seq > self.floor && !settled(seq))
            .count() as u64;
        let mut kept = self.entries.split_off(&(cut + 1));
        for (seq, _) in &self.redriven {
            if let Some(entry) = self.entries.remove(seq) {
                kept.insert(*seq, entry);
            }
        }
        self.entries = kept;
        let redriven = &self.redriven;
        self.leases
            .retain(|&(_, seq)| seq > cut || redriven.binary_search_by_key(&seq, |r| r.0).is_ok());
        self.floor = self.floor.max(cut);
        if let Some(heads) = &mut self.heads {
            let kept = heads.seqs.split_off(&(cut + 1));
            let tail = heads.tail.max(cut);
            heads.tail = tail;
            for key in std::mem::replace(&mut heads.seqs, kept)
                .into_values()
                .flatten()
            {
                heads.by_key.remove(&key);
                if let Some(next) = log.next_of_key(&key, cut, tail) {
                    heads.by_key.insert(key.clone(), next);
                    heads.seqs.insert(next, Some(key));
                }
            }
        }
        self.advance_floor(log);
    }

    fn end_lease(&mut self, seq: u64) {
        if let Some(entry) = self.entries.get_mut(&seq)
            && let Some(lease) = entry.lease.take()
        {
            self.leases.remove(&(lease.until, seq));
        }
    }

    /// A new delivery of `seq`: the next attempt, leased to `consumer`
    /// until `until`, and should the lease run out, deliverable again
    /// `backoff` after it.
    fn lease_to(&mut self, seq: u64, consumer: &str, until: Timestamp, backoff: Backoff) -> u32 {
        self.end_lease(seq);
        let entry = self.entries.entry(seq).or_insert(Entry {
            attempt: 0,
            retry_at: Timestamp::ZERO,
            lease: None,
            settled: false,
        });
        entry.attempt += 1;
        entry.retry_at = until + backoff.delay(seq, entry.attempt);
        entry.lease = Some(Lease {
            consumer: consumer.to_owned(),
            until,
        });
        let attempt = entry.attempt;
        self.leases.insert((until, seq));
        attempt
    }

    /// The message at `seq`: a redriven one, or one of the topic.
    fn message<'s>(&'s self, seq: u64, log: &'s Log) -> &'s Arc<Message> {
        match self.redriven.binary_search_by_key(&seq, |r| r.0) {
            Ok(at) => &self.redriven[at].1,
            Err(_) => log.get(seq),
        }
    }

    fn settle_entry(&mut self, seq: u64, log: &Log) {
        self.end_lease(seq);
        if let Ok(at) = self.redriven.binary_search_by_key(&seq, |r| r.0) {
            // A redriven message goes once settled.
            self.redriven.remove(at);
            self.entries.remove(&seq);
            return;
        }
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.settled = true;
        }
        if let Some(heads) = &mut self.heads {
            heads.settled(seq, log);
        }
        self.advance_floor(log);
    }

    fn dead_letter(
        &mut self,
        topic: &str,
        group: &str,
        seq: u64,
        error: &str,
        log: &Log,
    ) -> PendingDeadLetter {
        let attempt = self.entries.get(&seq).map_or(0, |e| e.attempt);
        let message = self.message(seq, log).clone();
        self.settle_entry(seq, log);
        self.dead_lettered += 1;
        PendingDeadLetter {
            topic: self.spec.dead_letter.clone(),
            message: dead_letter_message(topic, group, seq, attempt, error, &message),
        }
    }

    fn active_leases(&self, now: Timestamp) -> usize {
        self.leases.range((next_millis(now), 0)..).count()
    }
}

/// Rows of two runs in seq order, in seq order.
fn merged<'r>(
    a: impl Iterator<Item = &'r (u64, Arc<Message>)>,
    b: &'r [(u64, Arc<Message>)],
) -> impl Iterator<Item = &'r (u64, Arc<Message>)> {
    let (mut a, mut b) = (a.peekable(), b.iter().peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.0 < x.0 => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

fn next_millis(t: Timestamp) -> Timestamp {
    Timestamp::from_millis(t.as_millis().saturating_add(1))
}

fn unknown_group(topic: &str, group: &str) -> Error {
    Error::UnknownGroup {
        topic: topic.to_owned(),
        group: group.to_owned(),
    }
}

impl Store {
    fn group_mut<'s>(
        &'s mut self,
        topic: &str,
        group: &str,
    ) -> Result<(&'s Log, &'s mut GroupState)> {
        let log = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| unknown_group(topic, group))?;
        let state = log
            .groups
            .get_mut(group)
            .ok_or_else(|| unknown_group(topic, group))?;
        Ok((&log.messages, state))
    }

    /// Appends dead letters; one whose id its topic already holds is stored
    /// under a generated id, so it always lands (I8).
    fn append_dead_letters(
        &mut self,
        pending: Vec<PendingDeadLetter>,
        now: Timestamp,
    ) -> Vec<DeadLettered> {
        pending
            .into_iter()
            .map(|p| {
                let log = self.topics.entry(p.topic.clone()).or_default();
                let mut message = p.message;
                while log.knows(message.id(), now).is_some() {
                    message = message.with_id(generate_id(now));
                }
                let message = Arc::new(message);
                let seq = log.append(&mut self.last_seq, message.clone(), now).seq();
                DeadLettered {
                    topic: p.topic,
                    seq,
                    message,
                }
            })
            .collect()
    }

    fn refuse_deleted(&self, topic: &str) -> Result<()> {
        if self.deleted.contains(topic) {
            return Err(Error::TopicDeleted {
                topic: topic.to_owned(),
            });
        }
        Ok(())
    }

    fn append(&mut self, append: Append<'_>) -> Result<Vec<Outcome>> {
        self.refuse_deleted(append.topic)?;
        let log = self.topics.entry(append.topic.to_owned()).or_default();
        let actual = log.messages.last_seq();
        if let Some(expected) = append.expected_last
            && expected != actual
        {
            return Err(Error::Conflict { expected, actual });
        }
        Ok(append
            .messages
            .iter()
            .map(|m| log.append(&mut self.last_seq, m.clone(), append.now))
            .collect())
    }

    fn ensure_group(&mut self, req: EnsureGroup<'_>) -> Result<()> {
        self.refuse_deleted(req.topic)?;
        self.refuse_deleted(&req.spec.dead_letter)?;
        let log = self.topics.entry(req.topic.to_owned()).or_default();
        if let Some(existing) = log.groups.get(req.group) {
            if existing.spec != *req.spec {
                return Err(Error::InvalidOptions(format!(
                    "group {:?} of topic {:?} exists with {:?}, not {:?}",
                    req.group, req.topic, existing.spec, req.spec
                )));
            }
            return Ok(());
        }
        let floor = req.start_after.unwrap_or_else(|| log.messages.last_seq());
        self.last_generation += 1;
        let mut group = GroupState::new(req.spec.clone(), floor, [0, 0]);
        group.generation = self.last_generation;
        log.groups.insert(req.group.to_owned(), group);
        Ok(())
    }

    fn seek(&mut self, req: Seek<'_>) -> Result<()> {
        let generation = self.last_generation + 1;
        let (log, group) = self.group_mut(req.topic, req.group)?;
        let floor = req.start_after.unwrap_or_else(|| log.last_seq());
        let window = group.window;
        *group = GroupState::new(
            group.spec.clone(),
            floor,
            [group.dead_lettered, group.pruned],
        );
        group.generation = generation;
        // A seek does not reset the rate limit's count.
        group.window = window;
        self.last_generation = generation;
        Ok(())
    }

    fn delete_group(&mut self, topic: &str, group: &str) -> bool {
        self.topics
            .get_mut(topic)
            .is_some_and(|log| log.groups.remove(group).is_some())
    }

    /// Deletes a topic whole (a memory store has no long write to split),
    /// or lifts its deletion.
    fn delete_topic(&mut self, step: DeleteTopic<'_>) -> Result<TopicDeletion> {
        let was_deleted = self.deleted.contains(step.topic);
        if step.lift {
            self.deleted.remove(step.topic);
            return Ok(TopicDeletion {
                was_deleted,
                ..TopicDeletion::default()
            });
        }
        for (topic, log) in &self.topics {
            if let Some((group, _)) = log
                .groups
                .iter()
                .find(|(_, g)| g.spec.dead_letter == step.topic && topic != step.topic)
            {
                return Err(Error::TopicInUse {
                    topic: step.topic.to_owned(),
                    by_topic: topic.clone(),
                    by_group: group.clone(),
                });
            }
        }
        self.deleted.insert(step.topic.to_owned());
        let Some(log) = self.topics.remove(step.topic) else {
            return Ok(TopicDeletion {
                was_deleted,
                ..TopicDeletion::default()
            });
        };
        let mut groups: Vec<String> = log.groups.into_keys().collect();
        groups.sort_unstable();
        Ok(TopicDeletion {
            was_deleted,
            groups,
            messages: log.messages.rows.len() as u64,
        })
    }

    fn claim(&mut self, req: Claim<'_>) -> Result<ClaimOutcome> {
        let (messages, group) = self.group_mut(req.topic, req.group)?;
        let now = req.now;

        // Final attempts whose lease ran out leave for the dead-letter topic.
        let expired: Vec<u64> = group
            .leases
            .range(..(next_millis(now), 0))
            .map(|&(_, seq)| seq)
            .collect();
        let mut pending = Vec::new();
        for seq in expired {
            if group.entries[&seq].attempt >= group.spec.max_attempts {
                pending.push(group.dead_letter(req.topic, req.group, seq, LEASE_EXPIRED, messages));
            }
        }

        let limit = match group.spec.order {
            Order::Ordered => 1,
            Order::PerKey => match group.spec.max_in_flight {
                Some(max) => (max as usize).saturating_sub(group.active_leases(now)),
                None => usize::MAX,
            }
            .min(req.max as usize),
            Order::Shared { max_in_flight } => (max_in_flight as usize)
                .saturating_sub(group.active_leases(now))
                .min(req.max as usize),
        };
        // The rate limit's window: what is left of it.
        let window = req
            .rate_limit
            .map(|r| (r, r.allowed(now, group.window.0, group.window.1)));
        let ordered = group.spec.order == Order::Ordered;
        let mut deliveries = Vec::new();
        let mut next_due: Option<Timestamp> = None;
        let mut due = |t: Timestamp| next_due = Some(next_due.map_or(t, |d| d.min(t)));
        let mut keys_seen: HashSet<&str> = HashSet::new();
        let mut leased = 0;

        if limit == 0 {
            // A group at its in-flight limit: the earliest lease end frees a slot.
            if let Some(&(until, _)) = group.leases.range((next_millis(now), 0)..).next() {
                due(until);
            }
        } else {
            // A per-key group looks at its heads only.
            let heads: Vec<&(u64, Arc<Message>)>;
            let floor = group.floor;
            let shared = matches!(group.spec.order, Order::Shared { .. });
            let mut by_seq = messages.after(floor).iter();
            let mut lowest = by_seq.by_ref().filter(|(_, m)| m.priority() == 0);
            let topic_rows: &mut dyn Iterator<Item = &(u64, Arc<Message>)> =
                if let Some(h) = &mut group.heads {
                    h.take_in(messages);
                    heads = h.seqs.keys().map(|&seq| messages.row(seq)).collect();
                    &mut heads.iter().copied()
                } else if shared {
                    &mut lowest
                } else {
                    &mut by_seq
                };
            // Redriven messages take their places by seq (a per-key one
            // after its key's head if that came first).
            let (redriven, redriven_first): (Vec<_>, Vec<_>) = group
                .redriven
                .iter()
                .cloned()
                .partition(|(_, m)| !shared || m.priority() == 0);
            // A shared group hands out the higher priorities first (redriven
            // ones among them), in seq order within one.
            let mut first: Vec<&(u64, Arc<Message>)> = if shared {
                let topic = messages.prioritized.iter();
                let topic = topic.filter(|(_, seq)| *seq > floor);
                let mut rows: Vec<_> = topic.map(|(_, seq)| messages.row(*seq)).collect();
                rows.extend(redriven_first.iter());
                rows
            } else {
                Vec::new()
            };
            first.sort_by_key(|(seq, m)| (Reverse(m.priority()), *seq));
            for (seq, message) in first.into_iter().chain(merged(topic_rows, &redriven)) {
                let seq = *seq;
                let entry = group.entries.get(&seq);
                if entry.is_some_and(|e| e.settled) {
                    continue;
                }
                if group.spec.order == Order::PerKey
                    && let Some(key) = message.key()
                    && !keys_seen.insert(key)
                {
                    continue;
                }
                if let Some(lease) = entry.and_then(|e| e.lease.as_ref())
                    && lease.until > now
                {
                    if ordered && lease.consumer == req.consumer {
                        // The holder asks again (its ack, or a claim, was
                        // cut): the same delivery.
                        deliveries.push(Claimed {
                            seq,
                            attempt: entry.map_or(1, |e| e.attempt),
                            lease_until: lease.until,
                            message: message.clone(),
                            generation: group.generation,
                        });
                        break;
                    }
                    // Should it run out, the backoff after it.
                    due(lease.until.max(entry.map_or(lease.until, |e| e.retry_at)));
                    if ordered {
                        break;
                    }
                    continue;
                }
                let available_at = entry
                    .map_or(Timestamp::ZERO, |e| e.retry_at)
                    .max(message.deliver_at().unwrap_or(Timestamp::ZERO));
                if available_at > now {
                    due(available_at);
                    if ordered {
                        break;
                    }
                    continue;
                }
                if let Some((rate, (allowed, start, _))) = window
                    && leased >= allowed
                {
                    // The window is full: nothing more until it closes.
                    due(rate.closes(start));
                    break;
                }
                let attempt = group.lease_to(seq, req.consumer, req.lease_until, req.backoff);
                leased += 1;
                deliveries.push(Claimed {
                    seq,
                    attempt,
                    lease_until: req.lease_until,
                    message: message.clone(),
                    generation: group.generation,
                });
                if ordered || deliveries.len() >= limit {
                    break;
                }
            }
        }
        if let Some((_, (_, start, count))) = window
            && leased > 0
        {
            group.window = (start, count + leased);
        }
        // An ordered group's consumer reads ahead what comes next (the
        // redriven messages in their places).
        let ahead = match deliveries.first() {
            // (Not the messages a seek passed over: a redriven head may
            // be behind the group's position.)
            Some(first) if ordered => merged(
                messages.after(first.seq.max(group.floor)).iter(),
                &group.redriven,
            )
            .filter(|(seq, _)| *seq > first.seq)
            .take((req.max as usize).saturating_sub(1))
            .map(|(seq, message)| Ahead {
                seq: *seq,
                message: message.clone(),
            })
            .collect(),
            _ => Vec::new(),
        };
        let dead_lettered = self.append_dead_letters(pending, now);
        Ok(ClaimOutcome {
            ahead,
            next_due: if deliveries.is_empty() {
                next_due
            } else {
                None
            },
            deliveries,
            dead_lettered,
        })
    }

    fn settle(&mut self, req: Settle<'_>) -> Result<Option<DeadLettered>> {
        // A deleted group's deliveries are not current.
        let (messages, group) = self
            .group_mut(req.topic, req.group)
            .map_err(|_| Error::LeaseLost)?;
        if req.generation != group.generation {
            return Err(Error::LeaseLost);
        }
        let entry = group.entries.get_mut(&req.seq).ok_or(Error::LeaseLost)?;
        if entry.settled || entry.attempt != req.attempt || entry.lease.is_none() {
            return Err(Error::LeaseLost);
        }
        let pending = match req.settlement {
            Settlement::Ack => {
                group.settle_entry(req.seq, messages);
                if let Some(next) = req.next
                    && group.spec.order == Order::Ordered
                {
                    group.lease_to(next.seq, next.consumer, next.lease_until, req.backoff);
                }
                None
            }
            Settlement::Nack { retry_at, reason } => {
                if entry.attempt >= group.spec.max_attempts {
                    let error = reason.as_deref().unwrap_or(NACKED);
                    Some(group.dead_letter(req.topic, req.group, req.seq, error, messages))
                } else {
                    entry.retry_at = retry_at;
                    group.end_lease(req.seq);
                    None
                }
            }
            Settlement::Extend { lease_until } => {
                entry.retry_at = lease_until + req.backoff.delay(req.seq, entry.attempt);
                let lease = entry.lease.as_mut().ok_or(Error::LeaseLost)?;
                let old = std::mem::replace(&mut lease.until, lease_until);
                group.leases.remove(&(old, req.seq));
                group.leases.insert((lease_until, req.seq));
                None
            }
        };
        Ok(self
            .append_dead_letters(pending.into_iter().collect(), req.now)
            .pop())
    }

    fn release(
        &mut self,
        topic: &str,
        group_name: &str,
        consumer: &str,
        now: Timestamp,
    ) -> Vec<DeadLettered> {
        let Ok((messages, group)) = self.group_mut(topic, group_name) else {
            // A deleted group's consumers hold nothing.
            return Vec::new();
        };
        let held: Vec<u64> = group
            .leases
            .iter()
            .map(|&(_, seq)| seq)
            .filter(|seq| {
                group.entries[seq]
                    .lease
                    .as_ref()
                    .is_some_and(|l| l.consumer == consumer)
            })
            .collect();
        let mut pending = Vec::new();
        for seq in held {
            if group.entries[&seq].attempt >= group.spec.max_attempts {
                pending.push(group.dead_letter(
                    topic,
                    group_name,
                    seq,
                    CONSUMER_RELEASED,
                    messages,
                ));
            } else {
                group.end_lease(seq);
                if let Some(entry) = group.entries.get_mut(&seq) {
                    entry.retry_at = now;
                }
            }
        }
        self.append_dead_letters(pending, now)
    }

    /// Takes back dead letters (see [`Driver::redrive`]).
    fn redrive(&mut self, req: Redrive<'_>) -> Result<Vec<u64>> {
        if !self
            .topics
            .get(req.topic)
            .is_some_and(|log| log.groups.contains_key(req.group))
        {
            return Err(unknown_group(req.topic, req.group));
        }
        let Some(dead) = self.topics.get_mut(req.dead_letter) else {
            return Ok(Vec::new());
        };
        let mut done = Vec::new();
        for (seq, _) in req.letters {
            let held = dead
                .messages
                .rows
                .binary_search_by_key(seq, |r| r.0)
                .is_ok();
            if held && dead.taken_back.insert(*seq) {
                done.push(*seq);
            }
        }
        if req.purge || done.is_empty() {
            return Ok(done);
        }
        done.sort_unstable();
        let mut last_seq = self.last_seq;
        let (_, group) = self.group_mut(req.topic, req.group)?;
        for (seq, message) in req.letters {
            if done.binary_search(seq).is_ok() {
                last_seq += 1;
                group.redriven.push((last_seq, message.clone()));
            }
        }
        self.last_seq = last_seq;
        Ok(done)
    }

    fn stats(&self, topic: &str, now: Timestamp) -> TopicStats {
        let Some(log) = self.topics.get(topic) else {
            return TopicStats::new(topic.to_owned(), (0, 0), Vec::new(), Retention::new());
        };
        let last_seq = log.messages.last_seq();
        let groups = log
            .groups
            .iter()
            .map(|(name, g)| {
                let settled = |seq: &u64| g.entries.get(seq).is_some_and(|e| e.settled);
                let pending = log.messages.after(g.floor);
                // Redriven messages are unsettled until they go.
                let unsettled = pending.iter().filter(|(seq, _)| !settled(seq)).count() as u64
                    + g.redriven.len() as u64;
                let in_flight = g.active_leases(now) as u64;
                // Everything before the first unsettled message is settled.
                let first = pending.iter().position(|(seq, _)| !settled(seq));
                let acked_floor = first.map_or(g.floor.max(last_seq), |i| pending[i].0 - 1);
                // `pending` is the log's tail: its times are the same tail.
                let times = &log.messages.times[log.messages.rows.len() - pending.len()..];
                let oldest = first.map(|i| times[i]);
                GroupStats::new(
                    name.clone(),
                    [
                        unsettled - in_flight,
                        in_flight,
                        acked_floor,
                        g.dead_lettered,
                        g.pruned,
                    ],
                    lag(oldest, now),
                    g.spec.clone(),
                )
            })
            .collect();
        let count = log.messages.rows.len() as u64;
        TopicStats::new(topic.to_owned(), (last_seq, count), groups, log.retention)
    }
}

impl Store {
    fn read(&self, read: Read<'_>) -> Vec<Record> {
        let Some(topic) = self.topics.get(read.topic) else {
            return Vec::new();
        };
        let log = &topic.messages;
        let limit = read.limit as usize;
        let record =
            |(seq, message): &(u64, Arc<Message>)| Record::new(*seq, message.clone(), None);
        let listed = |seq: u64| !(read.skip_taken_back && topic.taken_back.contains(&seq));
        match read.key {
            None => log
                .after(read.after)
                .iter()
                .filter(|(seq, _)| listed(*seq))
                .take(limit)
                .map(record)
                .collect(),
            Some(key) => {
                let Some(seqs) = log.by_key.get(key) else {
                    return Vec::new();
                };
                seqs.range(seqs.partition_point(|&s| s <= read.after)..)
                    .take(limit)
                    .map(|&seq| record(log.row(seq)))
                    .collect()
            }
        }
    }
}

impl Driver for MemoryDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    fn append<'a>(&'a self, append: Append<'a>) -> BoxFuture<'a, Result<Vec<Outcome>>> {
        Box::pin(async move {
            let mut store = lock(&self.store);
            let outcomes = store.append(append)?;
            let new = outcomes.iter().filter(|o| !o.is_duplicate()).count();
            if new > 0 {
                // Each waiting consumer gets what its claim would get now,
                // in the same step (the store's one lock).
                for h in append.handoffs {
                    let claimed = store.claim(Claim {
                        topic: append.topic,
                        group: &h.group,
                        consumer: &h.consumer,
                        now: h.now,
                        lease_until: h.lease_until,
                        max: h.max,
                        backoff: h.backoff,
                        rate_limit: None,
                    });
                    if let Ok(outcome) = claimed {
                        if !outcome.dead_lettered.is_empty() {
                            let count = outcome.dead_lettered.len();
                            self.wakeups.freed(append.topic, &h.group, count);
                            self.dead_letters_wake(&outcome.dead_lettered);
                        }
                        h.inbox.deliver(outcome);
                    }
                }
            }
            drop(store);
            self.wakeups.published(append.topic, new);
            Ok(outcomes)
        })
    }

    fn ensure_group<'a>(&'a self, group: EnsureGroup<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { lock(&self.store).ensure_group(group) })
    }

    fn claim<'a>(&'a self, claim: Claim<'a>) -> BoxFuture<'a, Result<ClaimOutcome>> {
        Box::pin(async move {
            let outcome = lock(&self.store).claim(claim)?;
            if !outcome.dead_lettered.is_empty() {
                // What the dead letters held back may be deliverable now.
                let count = outcome.dead_lettered.len();
                self.wakeups.freed(claim.topic, claim.group, count);
                self.dead_letters_wake(&outcome.dead_lettered);
            }
            Ok(outcome)
        })
    }

    fn settle<'a>(&'a self, settle: Settle<'a>) -> BoxFuture<'a, Result<Option<DeadLettered>>> {
        Box::pin(async move {
            let (topic, group) = (settle.topic, settle.group);
            // An ack that took the next message kept the group busy.
            let wakes = match settle.settlement {
                Settlement::Ack => settle.next.is_none(),
                Settlement::Nack { .. } => true,
                Settlement::Extend { .. } => false,
            };
            let dead = lock(&self.store).settle(settle)?;
            if wakes {
                self.wakeups.freed(topic, group, 1);
            }
            self.dead_letters_wake(dead.as_slice());
            Ok(dead)
        })
    }

    fn release<'a>(&'a self, release: Release<'a>) -> BoxFuture<'a, Result<Vec<DeadLettered>>> {
        Box::pin(async move {
            let Release {
                topic,
                group,
                consumer,
                now,
            } = release;
            let dead = lock(&self.store).release(topic, group, consumer, now);
            self.wakeups.freed(topic, group, usize::MAX);
            self.dead_letters_wake(&dead);
            Ok(dead)
        })
    }

    fn stats<'a>(&'a self, topic: &'a str, now: Timestamp) -> BoxFuture<'a, Result<TopicStats>> {
        Box::pin(async move { Ok(lock(&self.store).stats(topic, now)) })
    }

    fn seek<'a>(&'a self, seek: Seek<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            lock(&self.store).seek(seek)?;
            // Its messages may be deliverable at once.
            self.wakeups.freed(seek.topic, seek.group, usize::MAX);
            Ok(())
        })
    }

    fn redrive<'a>(&'a self, redrive: Redrive<'a>) -> BoxFuture<'a, Result<Vec<u64>>> {
        Box::pin(async move {
            let done = lock(&self.store).redrive(redrive)?;
            if !redrive.purge {
                self.wakeups.freed(redrive.topic, redrive.group, done.len());
            }
            Ok(done)
        })
    }

    fn delete_group<'a>(&'a self, topic: &'a str, group: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let deleted = lock(&self.store).delete_group(topic, group);
            // Its waiting consumers learn that it is gone.
            self.wakeups.freed(topic, group, usize::MAX);
            Ok(deleted)
        })
    }

    fn read<'a>(&'a self, read: Read<'a>) -> BoxFuture<'a, Result<Vec<Record>>> {
        Box::pin(async move { Ok(lock(&self.store).read(read)) })
    }

    fn set_retention<'a>(
        &'a self,
        topic: &'a str,
        retention: Retention,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut store = lock(&self.store);
            store.refuse_deleted(topic)?;
            store.topics.entry(topic.to_owned()).or_default().retention = retention;
            Ok(())
        })
    }

    fn delete_topic<'a>(&'a self, step: DeleteTopic<'a>) -> BoxFuture<'a, Result<TopicDeletion>> {
        Box::pin(async move {
            let done = lock(&self.store).delete_topic(step)?;
            // The waiting consumers of its groups learn that they are gone.
            for group in &done.groups {
                self.wakeups.freed(step.topic, group, usize::MAX);
            }
            Ok(done)
        })
    }

    fn prune<'a>(&'a self, prune: Prune<'a>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut store = lock(&self.store);
            let pruned = store
                .topics
                .get_mut(prune.topic)
                .map_or(0, |log| log.prune(prune.now, prune.limit));
            drop(store);
            if pruned > 0 {
                // A group whose delivery went may deliver the next at once.
                self.wakeups.published(prune.topic, usize::MAX);
            }
            Ok(pruned)
        })
    }

    fn topics(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(async move {
            let store = lock(&self.store);
            let mut names: Vec<String> = store
                .topics
                .iter()
                .filter(|(_, t)| !t.messages.rows.is_empty() || !t.groups.is_empty())
                .map(|(name, _)| name.clone())
                .collect();
            names.sort_unstable();
            Ok(names)
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn wakeups(&self) -> Option<Wakeups> {
        Some(self.wakeups.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A per-key group's claims look at one message per key, not at the
    /// backlog behind busy keys: 1,000 messages on 4 keys leave 4 heads,
    /// and each ack makes the next message of its key the head, so all
    /// 1,000 come out, each key in order.
    #[test]
    fn a_per_key_group_looks_at_one_message_per_key() {
        let mut store = Store::default();
        let spec = GroupSpec {
            order: Order::PerKey,
            max_attempts: 5,
            backoff: Backoff::none(),
            rate_limit: None,
            max_in_flight: None,
            dead_letter: "t.dlq".into(),
        };
        store
            .ensure_group(EnsureGroup {
                topic: "t",
                group: "g",
                spec: &spec,
                start_after: Some(0),
            })
            .unwrap();
        let messages: Vec<Arc<Message>> = (0..1000)
            .map(|i| {
                Arc::new(
                    Message::new("m")
                        .with_id(format!("{i}"))
                        .with_key(format!("k{}", i % 4)),
                )
            })
            .collect();
        store
            .append(Append {
                topic: "t",
                messages: &messages,
                expected_last: None,
                now: Timestamp::ZERO,
                handoffs: &[],
            })
            .unwrap();
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut acked = 0;
        loop {
            let claimed = store
                .claim(Claim {
                    topic: "t",
                    group: "g",
                    consumer: "c",
                    now: Timestamp::ZERO,
                    lease_until: Timestamp::from_millis(1000),
                    max: 100,
                    backoff: Backoff::none(),
                    rate_limit: None,
                })
                .unwrap()
                .deliveries;
            if claimed.is_empty() {
                break;
            }
            let heads = &store.topics["t"].groups["g"].heads;
            assert_eq!(heads.as_ref().map(|h| h.seqs.len()), Some(claimed.len()));
            assert!(claimed.len() <= 4, "{} at once", claimed.len());
            for d in claimed {
                let key = d.message.key().unwrap().to_owned();
                assert!(last.insert(key, d.seq).is_none_or(|before| before < d.seq));
                store
                    .settle(Settle {
                        topic: "t",
                        group: "g",
                        seq: d.seq,
                        attempt: d.attempt,
                        generation: d.generation,
                        now: Timestamp::ZERO,
                        settlement: Settlement::Ack,
                        ordered: false,
                        next: None,
                        backoff: Backoff::none(),
                    })
                    .unwrap();
                acked += 1;
            }
        }
        assert_eq!(acked, 1000);
    }
}
