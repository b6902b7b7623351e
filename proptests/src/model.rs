//! The reference model: docs/design.md as a plain state machine.
//!
//! It shares no code with the drivers, only the public vocabulary. Every
//! message's state in every group is kept explicitly and every rule scans
//! everything, so it is slow and obviously right. Each rule names the
//! invariant it implements.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use litebus::Backoff;

use crate::ops::{
    ErrKind, Got, GroupChoice, GroupRow, Heard, LISTENER_CAPACITY, MsgSpec, Obs, Op, OrderChoice,
    RetentionChoice, StartChoice, SubSpec, TopicChoice, is_a_g1, message_id, payload, read_key,
};

/// One stored message.
#[derive(Debug, Clone)]
struct Msg {
    seq: u64,
    id: Option<String>,
    key: Option<String>,
    deliver_at: u64,
    payload: Vec<u8>,
    /// A shared group hands out higher priorities first.
    priority: u8,
    /// The clock at its publish (retention's `max_age`).
    published_at: u64,
    /// For a dead letter, what it says of the message that died.
    dead: Option<Dead>,
}

/// Where a dead letter came from (its `litebus.dead_letter.*` metadata).
#[derive(Debug, Clone)]
struct Dead {
    topic: String,
    group: String,
    seq: u64,
    attempts: u32,
    error: &'static str,
}

/// What a group knows of one message it has handed out at least once.
#[derive(Debug, Clone, Default)]
struct Handout {
    attempt: u32,
    retry_at: u64,
    /// (consumer index, lease end)
    lease: Option<(usize, u64)>,
    settled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ordered,
    /// Its cap on deliveries out at once, if any.
    PerKey(Option<u32>),
    Shared(u32),
}

#[derive(Debug, Clone)]
struct Group {
    mode: Mode,
    max_attempts: u32,
    /// I6: the wait before a failed message is delivered again.
    backoff: Backoff,
    /// At most `.0` deliveries per `.1` ms.
    rate_limit: Option<(u32, u64)>,
    /// The rate limit's window: when it opened, deliveries in it.
    window: (u64, u32),
    dead_letter: String,
    start_after: u64,
    handouts: BTreeMap<u64, Handout>,
    dead_lettered: u64,
    /// Messages retention let go of before the group settled them.
    pruned: u64,
    /// Given at creation and by each seek, from the store's count: a
    /// delivery is current only in the generation it was handed out in
    /// (I14), even once a deleted group is created again.
    generation: u64,
    /// I8: the seqs of the messages a redrive sent back to this group
    /// alone (in `all`, in no topic); each goes once settled.
    redriven: BTreeSet<u64>,
}

#[derive(Debug, Clone)]
struct Consumer {
    topic: String,
    group: String,
    lease_ms: u64,
    prefetch: usize,
    alive: bool,
    /// Which bus it belongs to (a reopen starts a new one).
    epoch: u32,
    /// Claimed, not yet handed to the caller: (seq, attempt, lease end,
    /// generation).
    buffer: VecDeque<(u64, u32, u64, u64)>,
    /// Handed to the caller, not yet acked or nacked: (seq, attempt,
    /// generation).
    held: Vec<(u64, u32, u64)>,
    /// Ordered groups: the delivery handed out and not settled through
    /// this consumer: (seq, attempt, lease end as the consumer knows it,
    /// generation).
    out: Option<(u64, u32, u64, u64)>,
    /// Ordered groups: the messages after it that the claim read ahead.
    ahead: VecDeque<u64>,
}

#[derive(Debug, Clone)]
struct Listener {
    topic: String,
    open: bool,
    items: VecDeque<(u64, Vec<u8>)>,
    lagged: u64,
}

/// The whole state of a bus and its store, plus what the last operation
/// observably did.
#[derive(Debug, Clone, Default)]
pub struct Model {
    now: u64,
    /// Seqs are one sequence across topics (I1 allows gaps in a topic).
    last_seq: u64,
    /// The last generation given to a group (at its creation, by a seek),
    /// store-wide.
    last_generation: u64,
    epoch: u32,
    next_payload: u64,
    topics: BTreeMap<String, Vec<Msg>>,
    /// Every message ever stored, by seq: what a consumer holds stays
    /// readable after retention let go of it.
    all: BTreeMap<u64, Msg>,
    /// Each topic's retention, once set.
    retention: BTreeMap<String, RetentionChoice>,
    /// Each topic's last seq that retention let go of.
    pruned_to: BTreeMap<String, u64>,
    /// Per topic, the ids of messages retention let go of within their
    /// dedupe window: (the original's seq, the window's end).
    remembered: BTreeMap<String, BTreeMap<String, (u64, u64)>>,
    groups: BTreeMap<(String, String), Group>,
    /// The deleted topics' tombstones.
    deleted: BTreeSet<String>,
    /// I8: the seqs of the dead letters a redrive or purge took back.
    taken_back: BTreeSet<u64>,
    consumers: Vec<Consumer>,
    listeners: Vec<Listener>,
    /// What the last applied operation did.
    pub last: Option<Obs>,
    /// Dead letters stored under a fresh id because theirs was taken.
    pub dead_letters_renamed: u64,
    /// Acks of an ordered group that took the next message read ahead.
    pub ordered_handovers: u64,
    /// Nacks that waited the group's backoff (a wait over zero).
    pub backoff_nacks: u64,
    /// Claims that found a message whose lease ran out still waiting the
    /// backoff after it.
    pub backoff_holds: u64,
    /// Claims that found a deliverable message behind a full window of
    /// the group's rate limit.
    pub rate_holds: u64,
    /// Deliveries of a message a redrive sent back.
    pub redriven_deliveries: u64,
    /// Those of them in an ordered group (a claim's, or an ack's that took
    /// the next message read ahead).
    pub ordered_redriven_deliveries: u64,
    /// Deliveries of a shared group that passed an earlier unsettled
    /// message of a lower priority.
    pub priority_passes: u64,
    /// Claims of a capped per-key group that its cap bounded.
    pub key_cap_holds: u64,
    /// The seq group `g1` of topic `a` last handed out ([`message_id`]).
    a_g1: u64,
}

/// The time both the model and the harness clock start at.
pub const START_MILLIS: u64 = 1_000_000;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b))
}

impl Model {
    /// A model of an empty store.
    pub fn new() -> Self {
        Model {
            now: START_MILLIS,
            ..Model::default()
        }
    }

    /// How many consumers were ever created.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Applies `op` and records what it observably did in `last`.
    pub fn apply(&mut self, op: &Op) {
        let obs = match op {
            Op::Publish(topic, spec) => self.publish(*topic, std::slice::from_ref(spec)),
            Op::PublishBatch(topic, specs) => self.publish(*topic, specs),
            Op::Subscribe(topic, group, spec) => self.subscribe(*topic, *group, *spec),
            // I11: a cut `recv` changes nothing the next receive sees.
            Op::Receive { consumer } | Op::CutReceive { consumer, .. } => self.receive(*consumer),
            Op::Ack { consumer, held } => self.settle(*consumer, *held, Settle::Ack),
            Op::Nack {
                consumer,
                held,
                delay_ms,
            } => self.settle(*consumer, *held, Settle::Nack(delay_ms.map(u64::from))),
            Op::Extend {
                consumer,
                held,
                by_ms,
            } => self.settle(*consumer, *held, Settle::Extend(u64::from(*by_ms))),
            Op::Advance(ms) => {
                self.now += u64::from(*ms);
                Obs::Done
            }
            Op::Drop { consumer } => self.drop_consumer(*consumer),
            Op::Listen(topic) => self.listen(*topic),
            Op::PollListener(listener) => self.poll_listener(*listener),
            Op::Stats(topic) => self.stats(*topic),
            Op::Read {
                topic,
                from,
                key,
                limit,
            } => self.read(
                *topic,
                u64::from(*from),
                key.map(read_key).as_deref(),
                usize::from(*limit),
            ),
            Op::Topics => self.topic_names(),
            Op::DeadLetters {
                topic,
                group,
                from,
                limit,
            } => self.dead_letters(*topic, *group, u64::from(*from), usize::from(*limit)),
            Op::Redrive {
                topic,
                group,
                pick,
                purge,
            } => self.take_back(*topic, *group, *pick, *purge),
            Op::Seek(topic, group, to) => self.seek(*topic, *group, *to),
            Op::DeleteGroup(topic, group) => self.delete_group(*topic, *group),
            Op::DeleteTopic(topic) => self.delete_topic(*topic),
            Op::CreateTopic(topic) => {
                if valid_name(topic.name()) {
                    Obs::Admin(Ok(self.deleted.remove(topic.name())))
                } else {
                    Obs::Admin(Err(ErrKind::InvalidName))
                }
            }
            Op::SetRetention(topic, rule) => self.set_retention(*topic, *rule),
            Op::Prune(topic) => {
                if valid_name(topic.name()) {
                    Obs::Pruned(Ok(self.prune_all(topic.name())))
                } else {
                    Obs::Pruned(Err(ErrKind::InvalidName))
                }
            }
            Op::Reopen => self.reopen(),
        };
        self.last = Some(obs);
    }

    /// The topic's last seq; what retention let go of counts (it never
    /// goes back).
    fn last_seq(&self, topic: &str) -> u64 {
        let pruned_to = self.pruned_to.get(topic).copied().unwrap_or(0);
        self.topics
            .get(topic)
            .and_then(|t| t.last())
            .map_or(pruned_to, |m| m.seq)
    }

    fn message(&self, _topic: &str, seq: u64) -> &Msg {
        self.all.get(&seq).expect("message")
    }

    /// Appends one message, deduplicating by id (I2), and tells the
    /// listeners of the topic.
    fn append(&mut self, topic: &str, mut msg: Msg) -> (bool, u64) {
        if let Some(seq) = msg.id.as_deref().and_then(|id| self.knows(topic, id)) {
            return (true, seq);
        }
        let log = self.topics.entry(topic.to_owned()).or_default();
        self.last_seq += 1;
        let seq = self.last_seq;
        msg.seq = seq;
        msg.published_at = self.now;
        let payload = msg.payload.clone();
        self.all.insert(seq, msg.clone());
        log.push(msg);
        for l in &mut self.listeners {
            if l.open && l.topic == topic {
                if l.items.len() >= LISTENER_CAPACITY {
                    l.items.pop_front();
                    l.lagged += 1;
                }
                l.items.push_back((seq, payload.clone()));
            }
        }
        (false, seq)
    }

    /// I2: the seq of the message with id `id`, kept, or let go of by
    /// retention within its dedupe window.
    fn knows(&self, topic: &str, id: &str) -> Option<u64> {
        let kept = self
            .topics
            .get(topic)
            .and_then(|log| log.iter().find(|m| m.id.as_deref() == Some(id)));
        kept.map(|m| m.seq).or_else(|| {
            self.remembered
                .get(topic)
                .and_then(|ids| ids.get(id))
                .filter(|(_, until)| *until > self.now)
                .map(|(seq, _)| *seq)
        })
    }

    /// I1: a batch is validated whole, then appended in order; I2 dedupe.
    fn publish(&mut self, topic: TopicChoice, specs: &[MsgSpec]) -> Obs {
        let msgs: Vec<(MsgSpec, Vec<u8>)> = specs
            .iter()
            .map(|s| {
                let p = payload(self.next_payload, s);
                self.next_payload += 1;
                (*s, p)
            })
            .collect();
        if !valid_name(topic.name()) {
            return Obs::Published(Err(ErrKind::InvalidName));
        }
        if msgs.iter().any(|(s, _)| s.too_large) {
            return Obs::Published(Err(ErrKind::MessageTooLarge));
        }
        if !msgs.is_empty() && self.deleted.contains(topic.name()) {
            return Obs::Published(Err(ErrKind::TopicDeleted));
        }
        let outcomes = msgs
            .into_iter()
            .map(|(s, payload)| {
                let msg = Msg {
                    seq: 0,
                    id: s.id.map(|i| message_id(i, self.a_g1)),
                    key: s.key.map(|k| format!("k{}", k % 3)),
                    deliver_at: s.delay_ms.map_or(0, |d| self.now + u64::from(d)),
                    payload,
                    priority: s.priority,
                    published_at: 0,
                    dead: None,
                };
                self.append(topic.name(), msg)
            })
            .collect::<Vec<_>>();
        // The bus prunes after each publish of new messages (the harness's
        // `prune_every(1)`): up to twice as many as it stored.
        let new = outcomes.iter().filter(|(duplicate, _)| !duplicate).count() as u64;
        if new > 0 {
            self.prune(topic.name(), 2 * new);
        }
        Obs::Published(Ok(outcomes))
    }

    fn subscribe(&mut self, topic: TopicChoice, group: GroupChoice, spec: SubSpec) -> Obs {
        let (topic, group) = (topic.name(), group.name());
        if !valid_name(topic) || !valid_name(group) {
            return Obs::Subscribed(Err(ErrKind::InvalidName));
        }
        let mode = match spec.order {
            OrderChoice::Ordered => Mode::Ordered,
            OrderChoice::PerKey => Mode::PerKey(None),
            OrderChoice::PerKeyCapped(n) => Mode::PerKey(Some(u32::from(n))),
            OrderChoice::Shared(n) => Mode::Shared(u32::from(n)),
        };
        if spec.lease_ms == 0
            || !spec.backoff.is_valid()
            || spec
                .rate_limit
                .is_some_and(|(max, period)| max == 0 || period == 0)
            || spec.max_attempts == 0
            || spec.prefetch == 0
            || mode == Mode::Shared(0)
            || mode == Mode::PerKey(Some(0))
        {
            return Obs::Subscribed(Err(ErrKind::InvalidOptions));
        }
        let dead_letter = format!("{topic}.dlq");
        let key = (topic.to_owned(), group.to_owned());
        if !self.groups.contains_key(&key)
            && (self.deleted.contains(topic) || self.deleted.contains(&dead_letter))
        {
            return Obs::Subscribed(Err(ErrKind::TopicDeleted));
        }
        let rate_limit = spec
            .rate_limit
            .map(|(max, period)| (u32::from(max), u64::from(period)));
        let start_after = match spec.start {
            StartChoice::Beginning => 0,
            StartChoice::End => self.last_seq(topic),
            StartChoice::AfterSeq(n) => u64::from(n),
        };
        match self.groups.get(&key) {
            // A group's settings are fixed at creation.
            Some(g)
                if g.mode != mode
                    || g.max_attempts != spec.attempts()
                    || g.backoff != spec.backoff.backoff()
                    || g.rate_limit != rate_limit
                    || g.dead_letter != dead_letter =>
            {
                return Obs::Subscribed(Err(ErrKind::InvalidOptions));
            }
            Some(_) => {}
            None => {
                self.last_generation += 1;
                self.groups.insert(
                    key,
                    Group {
                        mode,
                        max_attempts: spec.attempts(),
                        backoff: spec.backoff.backoff(),
                        rate_limit,
                        window: (0, 0),
                        dead_letter,
                        start_after,
                        handouts: BTreeMap::new(),
                        dead_lettered: 0,
                        pruned: 0,
                        generation: self.last_generation,
                        redriven: BTreeSet::new(),
                    },
                );
            }
        }
        self.consumers.push(Consumer {
            topic: topic.to_owned(),
            group: group.to_owned(),
            lease_ms: u64::from(spec.lease_ms),
            prefetch: usize::from(spec.prefetch),
            alive: true,
            epoch: self.epoch,
            buffer: VecDeque::new(),
            held: Vec::new(),
            out: None,
            ahead: VecDeque::new(),
        });
        Obs::Subscribed(Ok(()))
    }

    /// I8: moves a message to the group's dead-letter topic, with the id
    /// `<topic>/<group>/<seq>`, or a fresh id (one no publish here can
    /// repeat) when that topic holds the id already: a dead letter always
    /// lands. It is settled for the group.
    fn dead_letter(&mut self, topic: &str, group: &str, seq: u64, error: &'static str) {
        let g = self
            .groups
            .get_mut(&(topic.to_owned(), group.to_owned()))
            .expect("group");
        let h = g.handouts.entry(seq).or_default();
        h.settled = true;
        h.lease = None;
        let attempts = h.attempt;
        g.dead_lettered += 1;
        let dead_letter = g.dead_letter.clone();
        let id = format!("{topic}/{group}/{seq}");
        let taken = self.knows(&dead_letter, &id).is_some();
        if taken {
            self.dead_letters_renamed += 1;
        }
        let original = self.message(topic, seq);
        let msg = Msg {
            seq: 0,
            id: (!taken).then_some(id),
            key: original.key.clone(),
            deliver_at: 0,
            payload: original.payload.clone(),
            priority: original.priority,
            published_at: 0,
            dead: Some(Dead {
                topic: topic.to_owned(),
                group: group.to_owned(),
                seq,
                attempts,
                error,
            }),
        };
        self.append(&dead_letter, msg);
    }

    /// A claim for consumer `c` (I4, I6, I7, I8). An ordered group's
    /// claim also reads up to `prefetch - 1` messages after the one it
    /// delivers into the consumer's `ahead`.
    fn claim(&mut self, c: usize) -> Vec<(u64, u32, u64, u64)> {
        let now = self.now;
        let (topic, group) = (
            self.consumers[c].topic.clone(),
            self.consumers[c].group.clone(),
        );
        let key = (topic.clone(), group.clone());

        // I8: final attempts whose lease ran out go first, by lease end then seq.
        let g = &self.groups[&key];
        let mut expired: Vec<(u64, u64)> = g
            .handouts
            .iter()
            .filter_map(|(&seq, h)| match h.lease {
                Some((_, until)) if !h.settled && until <= now && h.attempt >= g.max_attempts => {
                    Some((until, seq))
                }
                _ => None,
            })
            .collect();
        expired.sort_unstable();
        for (_, seq) in expired {
            self.dead_letter(&topic, &group, seq, "lease expired");
        }

        // I8: a redriven message takes its place by its seq (above every
        // message the topic held at the redrive).
        let mut msgs = self.topics.get(&topic).cloned().unwrap_or_default();
        msgs.extend(
            self.groups[&key]
                .redriven
                .iter()
                .map(|seq| self.all[seq].clone()),
        );
        msgs.sort_by_key(|m| m.seq);
        let lease_until = now + self.consumers[c].lease_ms;
        // A shared group hands out higher priorities first, in seq order
        // within one; the other orders keep seq order.
        if matches!(self.groups[&key].mode, Mode::Shared(_)) {
            msgs.sort_by_key(|m| (std::cmp::Reverse(m.priority), m.seq));
        }
        let prefetch = self.consumers[c].prefetch;
        let g = self.groups.get_mut(&key).expect("group");
        let active = |h: &Handout| !h.settled && h.lease.is_some_and(|(_, until)| until > now);
        let in_flight = g.handouts.values().filter(|h| active(h)).count();
        let limit = match g.mode {
            Mode::Ordered => 1,
            Mode::PerKey(None) => prefetch,
            // I7: a shared group's cap, and a capped per-key group's, holds
            // across its consumers.
            Mode::PerKey(Some(max)) | Mode::Shared(max) => {
                (max as usize).saturating_sub(in_flight).min(prefetch)
            }
        };
        if matches!(g.mode, Mode::PerKey(Some(_))) && limit < prefetch {
            self.key_cap_holds += 1;
        }
        // The rate limit: a window opens at the first delivery after the
        // last one closed; it holds at most `max` deliveries.
        if let Some((_, period)) = g.rate_limit
            && (g.window.1 == 0 || now >= g.window.0 + period)
        {
            g.window = (now, 0);
        }
        let mut blocked_keys: Vec<String> = Vec::new();
        let mut claimed = Vec::new();
        for m in &msgs {
            if claimed.len() >= limit {
                break;
            }
            let seq = m.seq;
            // A redriven message is its group's whatever the group's
            // position (a seek past the topic's end, then a redrive, gives
            // it a seq at or below the position), as every driver has it.
            if seq <= g.start_after && !g.redriven.contains(&seq) {
                continue;
            }
            let h = g.handouts.get(&seq).cloned().unwrap_or_default();
            if h.settled {
                continue;
            }
            // I7: in PerKey, only the first unsettled message of a key is a
            // candidate; in Ordered, only the first unsettled message at all.
            if matches!(g.mode, Mode::PerKey(_))
                && let Some(k) = &m.key
            {
                if blocked_keys.contains(k) {
                    continue;
                }
                blocked_keys.push(k.clone());
            }
            // I7: the holder of an ordered group's unexpired lease that
            // claims again gets its delivery again.
            if g.mode == Mode::Ordered
                && let Some((holder, until)) = h.lease
                && holder == c
                && active(&h)
            {
                claimed.push((seq, h.attempt, until, g.generation));
                break;
            }
            // I6: a lease that ran out waits the backoff after its end.
            let waited = match h.lease {
                Some((_, until)) => until + g.backoff.delay_millis(seq, h.attempt) <= now,
                None => true,
            };
            if !waited && !active(&h) {
                self.backoff_holds += 1;
            }
            let deliverable = !active(&h) && waited && h.retry_at.max(m.deliver_at) <= now;
            let full = g.rate_limit.is_some_and(|(max, _)| g.window.1 >= max);
            if deliverable && full {
                // The window is full: nothing more until it closes.
                self.rate_holds += 1;
                break;
            }
            if deliverable {
                g.window.1 += u32::from(g.rate_limit.is_some());
                if g.redriven.contains(&seq) {
                    self.redriven_deliveries += 1;
                    if g.mode == Mode::Ordered {
                        self.ordered_redriven_deliveries += 1;
                    }
                }
                let h = g.handouts.entry(seq).or_default();
                h.attempt += 1;
                h.lease = Some((c, lease_until));
                claimed.push((seq, h.attempt, lease_until, g.generation));
            }
            if g.mode == Mode::Ordered {
                break;
            }
        }
        let ahead = match claimed.first() {
            Some(&(first, ..)) if g.mode == Mode::Ordered => msgs
                .iter()
                .map(|m| m.seq)
                .filter(|&seq| seq > first)
                .take(prefetch - 1)
                .collect(),
            _ => VecDeque::new(),
        };
        self.consumers[c].ahead = ahead;
        if matches!(g.mode, Mode::Shared(_)) {
            let unsettled = |m: &&Msg| {
                m.seq > g.start_after && !g.handouts.get(&m.seq).is_some_and(|h| h.settled)
            };
            let passes = claimed.iter().filter(|(seq, ..)| {
                let p = self.all[seq].priority;
                msgs.iter()
                    .filter(unsettled)
                    .any(|m| m.seq < *seq && m.priority < p)
            });
            self.priority_passes += passes.count() as u64;
        }
        claimed
    }

    fn is_ordered(&self, c: usize) -> bool {
        let consumer = &self.consumers[c];
        self.groups[&(consumer.topic.clone(), consumer.group.clone())].mode == Mode::Ordered
    }

    fn live_consumer(&self, c: u8) -> Option<usize> {
        if self.consumers.is_empty() {
            return None;
        }
        let c = usize::from(c) % self.consumers.len();
        self.consumers[c].alive.then_some(c)
    }

    fn receive(&mut self, c: u8) -> Obs {
        let Some(c) = self.live_consumer(c) else {
            return Obs::Skipped;
        };
        let now = self.now;
        // Prefetched deliveries whose lease ran out are skipped.
        while let Some((seq, attempt, until, generation)) = self.consumers[c].buffer.pop_front() {
            if until > now {
                return self.hand_out(c, (seq, attempt, until, generation));
            }
        }
        // I7: nothing more of an ordered group while the consumer's
        // delivery out is leased; once its lease ran out, the consumer
        // forgets it and what it read ahead.
        if let Some((_, _, until, _)) = self.consumers[c].out {
            if until > now {
                return Obs::Received(Ok(None));
            }
            self.consumers[c].out = None;
            self.consumers[c].ahead.clear();
        }
        let mut claimed = self.claim(c).into_iter();
        match claimed.next() {
            None => Obs::Received(Ok(None)),
            Some(delivery) => {
                self.consumers[c].buffer.extend(claimed);
                self.hand_out(c, delivery)
            }
        }
    }

    fn hand_out(&mut self, c: usize, delivery: (u64, u32, u64, u64)) -> Obs {
        let (seq, attempt, _, generation) = delivery;
        if self.is_ordered(c) {
            self.consumers[c].out = Some(delivery);
        }
        let consumer = &mut self.consumers[c];
        if is_a_g1(&consumer.topic, &consumer.group) {
            self.a_g1 = seq;
        }
        consumer.held.push((seq, attempt, generation));
        let topic = consumer.topic.clone();
        let payload = self.message(&topic, seq).payload.clone();
        Obs::Received(Ok(Some(Got {
            seq,
            attempt,
            payload,
        })))
    }

    /// I5: a delivery is current when its message is unsettled, leased, and
    /// its latest hand-out is this attempt.
    fn settle(&mut self, c: u8, held: u8, how: Settle) -> Obs {
        if self.consumers.is_empty() {
            return Obs::Skipped;
        }
        let c = usize::from(c) % self.consumers.len();
        let consumer = &mut self.consumers[c];
        if consumer.held.is_empty() {
            return Obs::Skipped;
        }
        let i = usize::from(held) % consumer.held.len();
        let (seq, attempt, generation) = if matches!(how, Settle::Extend(_)) {
            consumer.held[i]
        } else {
            consumer.held.remove(i)
        };
        if consumer.epoch != self.epoch {
            return Obs::Settled(Err(ErrKind::Closed));
        }
        let (topic, group) = (consumer.topic.clone(), consumer.group.clone());
        let now = self.now;
        // An ordered group's delivery out is settled through the consumer:
        // an ack takes the next message read ahead, if it is due.
        let out = consumer
            .out
            .is_some_and(|(s, a, _, g)| (s, a, g) == (seq, attempt, generation));
        let extend = matches!(how, Settle::Extend(_));
        let front = consumer.ahead.front().copied();
        let lease_ms = consumer.lease_ms;
        // A rate-limited group's deliveries all come from claims.
        let rate_limited = self
            .groups
            .get(&(topic.clone(), group.clone()))
            .is_some_and(|g| g.rate_limit.is_some());
        let next = front.filter(|&next| {
            out && matches!(how, Settle::Ack)
                && !rate_limited
                && self.message(&topic, next).deliver_at <= now
        });
        let result =
            self.settle_in_store(&topic, &group, (seq, attempt, generation), &how, next, c);
        let taken = next.filter(|_| out && matches!(result, Obs::Settled(Ok(()))));
        if let Some(next) = taken {
            self.ordered_handovers += 1;
            if self
                .groups
                .get(&(topic.clone(), group.clone()))
                .is_some_and(|g| g.redriven.contains(&next))
            {
                self.redriven_deliveries += 1;
                self.ordered_redriven_deliveries += 1;
            }
        }
        let consumer = &mut self.consumers[c];
        if out && !extend {
            consumer.out = None;
            match taken {
                Some(next) => {
                    consumer.ahead.pop_front();
                    consumer
                        .buffer
                        .push_front((next, 1, now + lease_ms, generation));
                }
                None => consumer.ahead.clear(),
            }
        }
        if let (true, Settle::Extend(by), Obs::Settled(Ok(())), Some(out)) =
            (out, &how, &result, consumer.out.as_mut())
        {
            out.2 = now + by;
        }
        // The bus prunes after each ack (`prune_every(1)`): up to two.
        if matches!((&how, &result), (Settle::Ack, Obs::Settled(Ok(())))) {
            self.prune(&topic, 2);
        }
        result
    }

    /// The store's side of a settle (I5, I6, I8); an ordered group's ack
    /// leases `next` to consumer `c`.
    fn settle_in_store(
        &mut self,
        topic: &str,
        group: &str,
        (seq, attempt, generation): (u64, u32, u64),
        how: &Settle,
        next: Option<u64>,
        c: usize,
    ) -> Obs {
        let now = self.now;
        let lease_ms = self.consumers[c].lease_ms;
        // A deleted group's deliveries are not current.
        let Some(g) = self.groups.get_mut(&(topic.to_owned(), group.to_owned())) else {
            return Obs::Settled(Err(ErrKind::LeaseLost));
        };
        // I14: nor are those from before a seek.
        if g.generation != generation {
            return Obs::Settled(Err(ErrKind::LeaseLost));
        }
        let max_attempts = g.max_attempts;
        let backoff = g.backoff;
        let Some(h) = g.handouts.get_mut(&seq) else {
            return Obs::Settled(Err(ErrKind::LeaseLost));
        };
        if h.settled || h.attempt != attempt || h.lease.is_none() {
            return Obs::Settled(Err(ErrKind::LeaseLost));
        }
        match *how {
            // I5
            Settle::Ack => {
                h.settled = true;
                h.lease = None;
                if let Some(next) = next {
                    let h = g.handouts.entry(next).or_default();
                    h.attempt += 1;
                    h.lease = Some((c, now + lease_ms));
                }
            }
            // I6, I8
            // I6: without a delay of its own, the group's backoff for the
            // attempt.
            Settle::Nack(delay) => {
                if h.attempt >= max_attempts {
                    self.dead_letter(topic, group, seq, "nacked");
                } else {
                    h.lease = None;
                    let wait = delay.unwrap_or_else(|| backoff.delay_millis(seq, attempt));
                    if delay.is_none() && wait > 0 {
                        self.backoff_nacks += 1;
                    }
                    h.retry_at = now + wait;
                }
            }
            Settle::Extend(by) => {
                if let Some(lease) = &mut h.lease {
                    lease.1 = now + by;
                }
            }
        }
        Obs::Settled(Ok(()))
    }

    /// I6/I8: a consumer that goes away gives back every lease it holds, by
    /// lease end then seq; final attempts are dead-lettered.
    fn release(&mut self, c: usize) {
        let consumer = &mut self.consumers[c];
        consumer.alive = false;
        consumer.buffer.clear();
        consumer.out = None;
        consumer.ahead.clear();
        let key = (consumer.topic.clone(), consumer.group.clone());
        let now = self.now;
        let g = &self.groups[&key];
        let mut leased: Vec<(u64, u64)> = g
            .handouts
            .iter()
            .filter_map(|(&seq, h)| match h.lease {
                Some((holder, until)) if holder == c && !h.settled => Some((until, seq)),
                _ => None,
            })
            .collect();
        leased.sort_unstable();
        for (_, seq) in leased {
            let g = self.groups.get_mut(&key).expect("group");
            let h = g.handouts.get_mut(&seq).expect("handout");
            if h.attempt >= g.max_attempts {
                self.dead_letter(&key.0, &key.1, seq, "consumer released");
            } else {
                h.lease = None;
                h.retry_at = now;
            }
        }
    }

    fn drop_consumer(&mut self, c: u8) -> Obs {
        match self.live_consumer(c) {
            Some(c) => {
                self.release(c);
                Obs::Done
            }
            None => Obs::Skipped,
        }
    }

    fn listen(&mut self, topic: TopicChoice) -> Obs {
        if valid_name(topic.name()) {
            self.listeners.push(Listener {
                topic: topic.name().to_owned(),
                open: true,
                items: VecDeque::new(),
                lagged: 0,
            });
        }
        Obs::Done
    }

    fn poll_listener(&mut self, l: u8) -> Obs {
        if self.listeners.is_empty() {
            return Obs::Skipped;
        }
        let n = self.listeners.len();
        let l = &mut self.listeners[usize::from(l) % n];
        let mut heard = Vec::new();
        if l.lagged > 0 {
            heard.push(Heard::Lagged(std::mem::take(&mut l.lagged)));
        }
        heard.extend(l.items.drain(..).map(|(seq, p)| Heard::Message(seq, p)));
        Obs::Heard(heard)
    }

    /// A read changes nothing: the topic's messages from seq `from` on
    /// (of one key), in seq order, at most `limit`.
    fn read(&self, topic: TopicChoice, from: u64, key: Option<&str>, limit: usize) -> Obs {
        let topic = topic.name();
        if !valid_name(topic) || key.is_some_and(str::is_empty) {
            return Obs::Read(Err(ErrKind::InvalidName));
        }
        let read = self
            .topics
            .get(topic)
            .into_iter()
            .flatten()
            .filter(|m| m.seq >= from && (key.is_none() || m.key.as_deref() == key))
            .take(limit)
            .map(|m| (m.seq, m.payload.clone()))
            .collect();
        Obs::Read(Ok(read))
    }

    /// I8: a group's dead letters, as its dead-letter topic holds them
    /// from seq `from` on; a limit of 0 asks for nothing, before the group
    /// is looked for.
    fn dead_letters(&self, topic: TopicChoice, group: GroupChoice, from: u64, limit: usize) -> Obs {
        let (topic, group) = (topic.name(), group.name());
        if !valid_name(topic) || !valid_name(group) {
            return Obs::DeadLetters(Err(ErrKind::InvalidName));
        }
        if limit == 0 {
            return Obs::DeadLetters(Ok(Vec::new()));
        }
        let Some(g) = self.groups.get(&(topic.to_owned(), group.to_owned())) else {
            return Obs::DeadLetters(Err(ErrKind::UnknownGroup));
        };
        let listed = self
            .topics
            .get(&g.dead_letter)
            .into_iter()
            .flatten()
            .filter(|m| m.seq >= from && !self.taken_back.contains(&m.seq))
            .filter_map(|m| {
                let dead = m.dead.as_ref()?;
                (dead.topic == topic && dead.group == group).then(|| {
                    (
                        m.seq,
                        m.payload.clone(),
                        dead.topic.clone(),
                        dead.seq,
                        dead.attempts,
                        dead.error.to_owned(),
                    )
                })
            })
            .take(limit)
            .collect();
        Obs::DeadLetters(Ok(listed))
    }

    /// I8: a redrive (or, with `purge`, a purge) of a group's dead letters
    /// as `dead_letters` lists them: all, or the `pick % count`-th. Each is
    /// taken back once; a redrive sends the message back to the group
    /// alone, with the next seq of the store, as new. How many.
    fn take_back(
        &mut self,
        topic: TopicChoice,
        group: GroupChoice,
        pick: Option<u8>,
        purge: bool,
    ) -> Obs {
        let (topic, group) = (topic.name(), group.name());
        if !valid_name(topic) || !valid_name(group) {
            return Obs::TakenBack(Err(ErrKind::InvalidName));
        }
        let key = (topic.to_owned(), group.to_owned());
        let Some(g) = self.groups.get(&key) else {
            return Obs::TakenBack(Err(ErrKind::UnknownGroup));
        };
        let listed: Vec<(u64, u64)> = self
            .topics
            .get(&g.dead_letter)
            .into_iter()
            .flatten()
            .filter(|m| !self.taken_back.contains(&m.seq))
            .filter_map(|m| {
                let dead = m.dead.as_ref()?;
                (dead.topic == topic && dead.group == group).then_some((m.seq, dead.seq))
            })
            .collect();
        let chosen: Vec<(u64, u64)> = match pick {
            None => listed,
            Some(_) if listed.is_empty() => Vec::new(),
            Some(n) => vec![listed[usize::from(n) % listed.len()]],
        };
        for &(letter, original) in &chosen {
            self.taken_back.insert(letter);
            if purge {
                continue;
            }
            let from = self.all[&original].clone();
            let dead_letter = &self.all[&letter];
            self.last_seq += 1;
            let seq = self.last_seq;
            let msg = Msg {
                seq,
                id: from.id,
                key: dead_letter.key.clone(),
                deliver_at: 0,
                payload: dead_letter.payload.clone(),
                priority: dead_letter.priority,
                published_at: self.now,
                dead: None,
            };
            self.all.insert(seq, msg);
            let g = self.groups.get_mut(&key).expect("group");
            g.redriven.insert(seq);
        }
        Obs::TakenBack(Ok(chosen.len() as u64))
    }

    /// The topics that hold a message or a group, in order.
    fn topic_names(&self) -> Obs {
        let mut names: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, msgs)| !msgs.is_empty())
            .map(|(name, _)| name.clone())
            .chain(self.groups.keys().map(|(topic, _)| topic.clone()))
            .collect();
        names.sort_unstable();
        names.dedup();
        Obs::Topics(Ok(names))
    }

    /// A seek: the group forgets every delivery and lease, and sees the
    /// messages after the position as new. Consumers keep what they hold
    /// (it is no longer current).
    fn seek(&mut self, topic: TopicChoice, group: GroupChoice, to: StartChoice) -> Obs {
        let (topic, group) = (topic.name(), group.name());
        if !valid_name(topic) || !valid_name(group) {
            return Obs::Admin(Err(ErrKind::InvalidName));
        }
        let start_after = match to {
            StartChoice::Beginning => 0,
            StartChoice::End => self.last_seq(topic),
            StartChoice::AfterSeq(n) => u64::from(n),
        };
        let Some(g) = self.groups.get_mut(&(topic.to_owned(), group.to_owned())) else {
            return Obs::Admin(Err(ErrKind::UnknownGroup));
        };
        g.handouts.clear();
        g.redriven.clear();
        g.start_after = start_after;
        self.last_generation += 1;
        g.generation = self.last_generation;
        Obs::Admin(Ok(true))
    }

    /// A group deleted: its state goes, then its live consumers close and
    /// release nothing; what they hold is no longer current.
    fn delete_group(&mut self, topic: TopicChoice, group: GroupChoice) -> Obs {
        let (topic, group) = (topic.name(), group.name());
        if !valid_name(topic) || !valid_name(group) {
            return Obs::Admin(Err(ErrKind::InvalidName));
        }
        Obs::Admin(Ok(self.drop_group(topic, group)))
    }

    /// Forgets a group and closes its live consumers, which release
    /// nothing; what they hold is no longer current. Whether it existed.
    fn drop_group(&mut self, topic: &str, group: &str) -> bool {
        let existed = self
            .groups
            .remove(&(topic.to_owned(), group.to_owned()))
            .is_some();
        for consumer in &mut self.consumers {
            if consumer.alive && consumer.topic == topic && consumer.group == group {
                consumer.alive = false;
                consumer.buffer.clear();
                consumer.out = None;
                consumer.ahead.clear();
            }
        }
        existed
    }

    /// A topic deleted, unless a group of another topic dead-letters into
    /// it: its messages, groups (as `delete_group`), retention and
    /// remembered ids go, and its tombstone stays; whether it held a
    /// message or a group.
    fn delete_topic(&mut self, topic: TopicChoice) -> Obs {
        let topic = topic.name();
        if !valid_name(topic) {
            return Obs::Admin(Err(ErrKind::InvalidName));
        }
        if self
            .groups
            .iter()
            .any(|((t, _), g)| t != topic && g.dead_letter == topic)
        {
            return Obs::Admin(Err(ErrKind::TopicInUse));
        }
        self.deleted.insert(topic.to_owned());
        let groups: Vec<String> = self
            .groups
            .keys()
            .filter(|(t, _)| t == topic)
            .map(|(_, g)| g.clone())
            .collect();
        for group in &groups {
            self.drop_group(topic, group);
        }
        let messages = self.topics.remove(topic).unwrap_or_default();
        self.retention.remove(topic);
        self.pruned_to.remove(topic);
        self.remembered.remove(topic);
        Obs::Admin(Ok(!messages.is_empty() || !groups.is_empty()))
    }

    fn stats(&self, topic: TopicChoice) -> Obs {
        let topic = topic.name();
        if !valid_name(topic) {
            return Obs::Stats(Err(ErrKind::InvalidName));
        }
        let last = self.last_seq(topic);
        let now = self.now;
        let groups: Vec<GroupRow> = self
            .groups
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, name), g)| {
                let settled = |seq: u64| g.handouts.get(&seq).is_some_and(|h| h.settled);
                let in_flight = g
                    .handouts
                    .values()
                    .filter(|h| !h.settled && h.lease.is_some_and(|(_, u)| u > now))
                    .count() as u64;
                let unsettled: Vec<&Msg> = self
                    .topics
                    .get(topic)
                    .into_iter()
                    .flatten()
                    .filter(|m| m.seq > g.start_after && !settled(m.seq))
                    .collect();
                // Everything before the first unsettled message is settled.
                let floor = unsettled
                    .first()
                    .map_or(g.start_after.max(last), |first| first.seq - 1);
                // Lag: how long the first unsettled has waited.
                let lag = unsettled.first().map(|m| now - m.published_at);
                // Redriven messages are unsettled until settled (in no
                // topic: neither the floor nor the lag counts them).
                let redriven = g.redriven.iter().filter(|&&seq| !settled(seq)).count();
                let unsettled = (unsettled.len() + redriven) as u64;
                (
                    name.clone(),
                    unsettled - in_flight,
                    in_flight,
                    floor,
                    g.dead_lettered,
                    g.pruned,
                    lag,
                )
            })
            .collect();
        let count = self.topics.get(topic).map_or(0, Vec::len) as u64;
        Obs::Stats(Ok((last, count, groups)))
    }

    fn set_retention(&mut self, topic: TopicChoice, rule: RetentionChoice) -> Obs {
        let topic = topic.name();
        if !valid_name(topic) {
            return Obs::Admin(Err(ErrKind::InvalidName));
        }
        let zero = rule.max_age_ms == Some(0)
            || rule.max_messages == Some(0)
            || rule.max_bytes == Some(0)
            || rule.dedupe_window_ms == Some(0);
        if zero {
            return Obs::Admin(Err(ErrKind::InvalidOptions));
        }
        if self.deleted.contains(topic) {
            return Obs::Admin(Err(ErrKind::TopicDeleted));
        }
        self.retention.insert(topic.to_owned(), rule);
        Obs::Admin(Ok(true))
    }

    /// `bus.prune`: steps of up to 1,000 until one lets go of fewer.
    fn prune_all(&mut self, topic: &str) -> u64 {
        let mut total = 0;
        loop {
            let pruned = self.prune(topic, u64::from(litebus::PRUNE_BATCH));
            total += pruned;
            if pruned < u64::from(litebus::PRUNE_BATCH) {
                return total;
            }
        }
    }

    /// One prune step: lets go of the longest run of the topic's oldest
    /// messages (at most `limit`) that a rule of its retention lets go of:
    /// those below every group's acked floor (`until_consumed`), those
    /// over the count or payload bytes kept (oldest first), those as old
    /// as `max_age`. Each group counts those it had not settled.
    fn prune(&mut self, topic: &str, limit: u64) -> u64 {
        let Some(rule) = self.retention.get(topic).copied() else {
            return 0;
        };
        let now = self.now;
        if let Some(ids) = self.remembered.get_mut(topic) {
            ids.retain(|_, (_, until)| *until > now);
        }
        let floors: Vec<u64> = self
            .groups
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|(_, g)| {
                let settled = |seq: u64| g.handouts.get(&seq).is_some_and(|h| h.settled);
                self.topics
                    .get(topic)
                    .into_iter()
                    .flatten()
                    .find(|m| m.seq > g.start_after && !settled(m.seq))
                    .map_or(u64::MAX, |m| m.seq - 1)
            })
            .collect();
        let Some(log) = self.topics.get_mut(topic) else {
            return 0;
        };
        let window = &log[..log.len().min(limit as usize)];
        let mut go = 0;
        if rule.until_consumed {
            let floor = floors.into_iter().min().unwrap_or(u64::MAX);
            go = go.max(window.iter().take_while(|m| m.seq <= floor).count());
        }
        if let Some(max) = rule.max_messages {
            go = go.max(log.len().saturating_sub(usize::from(max)));
        }
        if let Some(max) = rule.max_bytes {
            let mut bytes: u64 = log.iter().map(|m| m.payload.len() as u64).sum();
            let mut over = 0;
            while over < window.len() && bytes > u64::from(max) {
                bytes -= window[over].payload.len() as u64;
                over += 1;
            }
            go = go.max(over);
        }
        if let Some(age) = rule.max_age_ms {
            let old = window
                .iter()
                .take_while(|m| m.published_at + u64::from(age) <= now)
                .count();
            go = go.max(old);
        }
        let go = go.min(window.len());
        if go == 0 {
            return 0;
        }
        let went: Vec<Msg> = log.drain(..go).collect();
        if let Some(window) = rule.dedupe_window_ms {
            let ids = self.remembered.entry(topic.to_owned()).or_default();
            for m in &went {
                let until = m.published_at + u64::from(window);
                if let Some(id) = m.id.clone().filter(|_| until > now) {
                    ids.insert(id, (m.seq, until));
                }
            }
        }
        let gone: Vec<u64> = went.iter().map(|m| m.seq).collect();
        let cut = gone[go - 1];
        self.pruned_to.insert(topic.to_owned(), cut);
        for ((t, _), g) in &mut self.groups {
            if t != topic {
                continue;
            }
            g.pruned += gone
                .iter()
                .filter(|&&seq| {
                    seq > g.start_after && !g.handouts.get(&seq).is_some_and(|h| h.settled)
                })
                .count() as u64;
            let redriven = &g.redriven;
            g.handouts
                .retain(|&seq, _| seq > cut || redriven.contains(&seq));
        }
        go as u64
    }

    /// Closing releases every live consumer in the order they subscribed and
    /// closes every listener; the new bus has none of either.
    fn reopen(&mut self) -> Obs {
        for l in &mut self.listeners {
            l.open = false;
        }
        for c in 0..self.consumers.len() {
            if self.consumers[c].alive {
                self.release(c);
            }
        }
        self.epoch += 1;
        Obs::Done
    }
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Ack,
    /// Its delay; `None`: the group's backoff.
    Nack(Option<u64>),
    Extend(u64),
}
