//! The operations both the model and a real bus perform, and what each
//! observably did.
//!
//! Indices (`consumer`, `held`, `listener`) pick from what exists, modulo its
//! count, so any sequence of operations is meaningful: the property tests
//! generate them with proptest, the fuzz targets with `arbitrary`.

use proptest::prelude::*;

/// A topic: two real ones, their dead-letter topics, and an invalid name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TopicChoice {
    /// `a`
    A,
    /// `b`
    B,
    /// `a.dlq`
    ADlq,
    /// `b.dlq`
    BDlq,
    /// `bad topic` (a space is not allowed)
    Invalid,
}

impl TopicChoice {
    /// The topic's name.
    pub fn name(self) -> &'static str {
        match self {
            TopicChoice::A => "a",
            TopicChoice::B => "b",
            TopicChoice::ADlq => "a.dlq",
            TopicChoice::BDlq => "b.dlq",
            TopicChoice::Invalid => "bad topic",
        }
    }
}

/// A group: two real ones and an invalid name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum GroupChoice {
    /// `g1`
    G1,
    /// `g2`
    G2,
    /// `bad group`
    Invalid,
}

impl GroupChoice {
    /// The group's name.
    pub fn name(self) -> &'static str {
        match self {
            GroupChoice::G1 => "g1",
            GroupChoice::G2 => "g2",
            GroupChoice::Invalid => "bad group",
        }
    }
}

/// One message to publish. Its payload is `p<n>` for the n-th message spec
/// of the run, so every payload tells which publish it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct MsgSpec {
    /// The id [`message_id`] makes of it, or a generated id.
    pub id: Option<u8>,
    /// `k<key % 3>`.
    pub key: Option<u8>,
    /// Not delivered before now + this many ms.
    pub delay_ms: Option<u16>,
    /// A payload over the harness's limit.
    pub too_large: bool,
    /// `Message::with_priority` (0: the default).
    pub priority: u8,
}

/// The ordering mode of a new subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum OrderChoice {
    /// `Order::Ordered`
    Ordered,
    /// `Order::PerKey`
    PerKey,
    /// `Order::PerKey` with `GroupOptions::max_in_flight` (0 is invalid).
    PerKeyCapped(u8),
    /// `Order::Shared { max_in_flight }` (0 is invalid).
    Shared(u8),
}

/// Where a new group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum StartChoice {
    /// `Start::Beginning`
    Beginning,
    /// `Start::End`
    End,
    /// `Start::AfterSeq(n)`
    AfterSeq(u8),
}

/// The options of a subscription. Zeros are invalid and must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SubSpec {
    /// Ordering mode.
    pub order: OrderChoice,
    /// `max_attempts`; `u8::MAX` stands for `unlimited_attempts` (see
    /// [`SubSpec::attempts`]).
    pub max_attempts: u8,
    /// Lease in ms.
    pub lease_ms: u16,
    /// Prefetch.
    pub prefetch: u8,
    /// Start.
    pub start: StartChoice,
    /// The group's backoff.
    pub backoff: BackoffChoice,
    /// The group's rate limit: at most `.0` deliveries per `.1` ms (a 0 is
    /// invalid).
    pub rate_limit: Option<(u8, u16)>,
}

/// A group's backoff: `Backoff::exponential(base_ms, max_ms)` with
/// `jitter_pct / 100` jitter; zeros are `Backoff::none()`. A base over its
/// max or a jitter over 100 % is invalid and must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct BackoffChoice {
    /// The first wait, in ms.
    pub base_ms: u16,
    /// The longest wait, in ms.
    pub max_ms: u16,
    /// The jitter, in percent.
    pub jitter_pct: u8,
}

impl BackoffChoice {
    /// The backoff it stands for.
    pub fn backoff(&self) -> litebus::Backoff {
        let ms = |v: u16| std::time::Duration::from_millis(u64::from(v));
        litebus::Backoff::exponential(ms(self.base_ms), ms(self.max_ms))
            .jitter(f64::from(self.jitter_pct) / 100.0)
    }

    /// Whether a subscription must refuse it.
    pub fn is_valid(&self) -> bool {
        self.base_ms <= self.max_ms && self.jitter_pct <= 100
    }
}

impl SubSpec {
    /// The `max_attempts` this spec asks for: `u8::MAX` is unlimited
    /// (`u32::MAX`).
    pub fn attempts(&self) -> u32 {
        match self.max_attempts {
            u8::MAX => u32::MAX,
            n => u32::from(n),
        }
    }
}

/// One operation on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// `bus.publish`
    Publish(TopicChoice, MsgSpec),
    /// `bus.publish_batch`
    PublishBatch(TopicChoice, Vec<MsgSpec>),
    /// `bus.subscribe`: a new consumer.
    Subscribe(TopicChoice, GroupChoice, SubSpec),
    /// `subscription.try_recv` on a live consumer.
    Receive {
        /// Which consumer.
        consumer: u8,
    },
    /// `subscription.recv` on a live consumer, dropped after `polls % 4`
    /// polls if it has not finished (as a deadline or a `select!` drops
    /// it), then `try_recv`: the model says a plain receive. A cut `recv`
    /// leaves nothing leased that the next receive does not get (I11).
    CutReceive {
        /// Which consumer.
        consumer: u8,
        /// Polls before the cut.
        polls: u8,
    },
    /// `delivery.ack` on a held delivery (which is then forgotten).
    Ack {
        /// Which consumer.
        consumer: u8,
        /// Which of its held deliveries.
        held: u8,
    },
    /// `delivery.nack` (then forgotten).
    Nack {
        /// Which consumer.
        consumer: u8,
        /// Which of its held deliveries.
        held: u8,
        /// Delay in ms; `None`: the group's backoff.
        delay_ms: Option<u16>,
    },
    /// `delivery.extend` (kept).
    Extend {
        /// Which consumer.
        consumer: u8,
        /// Which of its held deliveries.
        held: u8,
        /// New lease from now, in ms (0 is allowed: it ends the lease now).
        by_ms: u16,
    },
    /// Move the manual clock forward.
    Advance(u16),
    /// A live consumer leaves its group (`Subscription::close`).
    Drop {
        /// Which consumer.
        consumer: u8,
    },
    /// `bus.listen`
    Listen(TopicChoice),
    /// Drain a listener without waiting.
    PollListener(u8),
    /// `bus.stats`
    Stats(TopicChoice),
    /// `bus.read` (or `bus.read_key` of `k<key % 3>`, or of an invalid
    /// key when `key` is 255): messages from seq `from`, at most `limit`.
    Read {
        /// The topic.
        topic: TopicChoice,
        /// The first seq.
        from: u8,
        /// Only this key's messages.
        key: Option<u8>,
        /// The most messages.
        limit: u8,
    },
    /// `bus.topics`
    Topics,
    /// `bus.dead_letters` of a group: its dead letters from seq `from` of
    /// its dead-letter topic, at most `limit`.
    DeadLetters {
        /// The topic.
        topic: TopicChoice,
        /// The group.
        group: GroupChoice,
        /// The first seq of the dead-letter topic.
        from: u8,
        /// The most dead letters.
        limit: u8,
    },
    /// `bus.redrive` (or, with `purge`, `bus.purge_dead_letters`) of a
    /// group's dead letters: all of them, or the `pick % count`-th as
    /// `dead_letters` lists them.
    Redrive {
        /// The topic.
        topic: TopicChoice,
        /// The group.
        group: GroupChoice,
        /// One dead letter, or all.
        pick: Option<u8>,
        /// Give them up rather than send them back.
        purge: bool,
    },
    /// `bus.seek`: move a group's position.
    Seek(TopicChoice, GroupChoice, StartChoice),
    /// `bus.delete_group`, then `close` of the group's live subscriptions
    /// (they hold nothing any more).
    DeleteGroup(TopicChoice, GroupChoice),
    /// `bus.delete_topic`, then `close` of the live subscriptions of its
    /// groups.
    DeleteTopic(TopicChoice),
    /// `bus.create_topic`: lifts a deletion.
    CreateTopic(TopicChoice),
    /// `bus.set_retention` of the rules given (a 0 is refused).
    SetRetention(TopicChoice, RetentionChoice),
    /// `bus.prune`
    Prune(TopicChoice),
    /// Close the bus and open a new one on the same store.
    Reopen,
}

/// A topic's retention: each rule set or not (0 is a bad value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RetentionChoice {
    /// `until_consumed`
    pub until_consumed: bool,
    /// `max_age`, in ms.
    pub max_age_ms: Option<u16>,
    /// `max_messages`
    pub max_messages: Option<u8>,
    /// `max_bytes`
    pub max_bytes: Option<u8>,
    /// `dedupe_window`, in ms.
    pub dedupe_window_ms: Option<u16>,
}

impl RetentionChoice {
    /// The retention it stands for.
    pub fn retention(&self) -> litebus::Retention {
        let mut r = litebus::Retention::new();
        if self.until_consumed {
            r = r.until_consumed();
        }
        if let Some(ms) = self.max_age_ms {
            r = r.max_age(std::time::Duration::from_millis(u64::from(ms)));
        }
        if let Some(n) = self.max_messages {
            r = r.max_messages(u64::from(n));
        }
        if let Some(n) = self.max_bytes {
            r = r.max_bytes(u64::from(n));
        }
        if let Some(ms) = self.dedupe_window_ms {
            r = r.dedupe_window(std::time::Duration::from_millis(u64::from(ms)));
        }
        r
    }
}

/// The error kinds the tests tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrKind {
    /// `Error::Closed`
    Closed,
    /// `Error::InvalidName`
    InvalidName,
    /// `Error::MessageTooLarge`
    MessageTooLarge,
    /// `Error::InvalidOptions`
    InvalidOptions,
    /// `Error::LeaseLost`
    LeaseLost,
    /// `Error::UnknownGroup`
    UnknownGroup,
    /// `Error::TopicDeleted`
    TopicDeleted,
    /// `Error::TopicInUse`
    TopicInUse,
    /// Anything else (never expected from a healthy driver).
    Other,
}

impl From<&litebus::Error> for ErrKind {
    fn from(e: &litebus::Error) -> Self {
        match e {
            litebus::Error::Closed => ErrKind::Closed,
            litebus::Error::InvalidName { .. } => ErrKind::InvalidName,
            litebus::Error::MessageTooLarge { .. } => ErrKind::MessageTooLarge,
            litebus::Error::InvalidOptions(_) => ErrKind::InvalidOptions,
            litebus::Error::LeaseLost => ErrKind::LeaseLost,
            litebus::Error::UnknownGroup { .. } => ErrKind::UnknownGroup,
            litebus::Error::TopicDeleted { .. } => ErrKind::TopicDeleted,
            litebus::Error::TopicInUse { .. } => ErrKind::TopicInUse,
            _ => ErrKind::Other,
        }
    }
}

/// A delivery as observed: seq, attempt and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// Seq in its topic.
    pub seq: u64,
    /// Attempt.
    pub attempt: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

/// What a listener yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A message: seq and payload.
    Message(u64, Vec<u8>),
    /// `Live::Lagged(n)`
    Lagged(u64),
}

/// A group's statistics: name, ready, in flight, acked floor, dead-lettered.
pub type GroupRow = (String, u64, u64, u64, u64, u64, Option<u64>);

/// A dead letter as [`Obs::DeadLetters`] shows it: (seq in the dead-letter
/// topic, payload, topic, seq, attempts, last error).
pub type DeadRow = (u64, Vec<u8>, String, u64, u32, String);

/// What an operation observably did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Obs {
    /// The operation had nothing to act on (no such consumer, no held delivery).
    Skipped,
    /// Outcomes of a publish, as (duplicate?, seq).
    Published(Result<Vec<(bool, u64)>, ErrKind>),
    /// A subscribe.
    Subscribed(Result<(), ErrKind>),
    /// A receive.
    Received(Result<Option<Got>, ErrKind>),
    /// An ack, nack or extend.
    Settled(Result<(), ErrKind>),
    /// A listener drained.
    Heard(Vec<Heard>),
    /// How many messages a prune let go of.
    Pruned(Result<u64, ErrKind>),
    /// Stats: last seq, messages, groups.
    Stats(Result<(u64, u64, Vec<GroupRow>), ErrKind>),
    /// A read: seq and payload of each message.
    Read(Result<Vec<(u64, Vec<u8>)>, ErrKind>),
    /// The topics listed.
    Topics(Result<Vec<String>, ErrKind>),
    /// Dead letters listed: each one's seq in its dead-letter topic,
    /// payload, then the topic, seq, attempts and last error of the message
    /// that died (not its id: a generated one is unknown to the model).
    DeadLetters(Result<Vec<DeadRow>, ErrKind>),
    /// A seek (`true`) or a group deleted (whether it existed).
    Admin(Result<bool, ErrKind>),
    /// How many dead letters a redrive or purge took back.
    TakenBack(Result<u64, ErrKind>),
    /// Done (advance, drop, listen, reopen).
    Done,
}

/// The largest message the harness bus accepts; a `too_large` payload alone
/// exceeds it, and no other message reaches it (payload `p<n>`, an id of at
/// most 26 bytes, a 2-byte key).
pub const MAX_MESSAGE_SIZE: usize = 64;

/// The id of a message spec's `id`: `m0` … `m5` for 0–5; above, the id of
/// the dead letter that group `g1` of topic `a` would make of the message
/// `id - 6` seqs before `a_g1`, the seq it last handed out (`a/g1/<seq>`):
/// published to `a.dlq`, it takes a likely dead letter's id before it lands.
pub fn message_id(id: u8, a_g1: u64) -> String {
    if id < 6 {
        format!("m{id}")
    } else {
        format!("a/g1/{}", a_g1.saturating_sub(u64::from(id - 6)))
    }
}

/// Whether a consumer of `topic`/`group` hands out what [`message_id`]
/// names.
pub fn is_a_g1(topic: &str, group: &str) -> bool {
    (topic, group) == (TopicChoice::A.name(), GroupChoice::G1.name())
}

/// The key `bus.read_key` reads for an [`Op::Read`] key: `k<key % 3>`, or
/// an empty key (invalid) for 255.
pub fn read_key(key: u8) -> String {
    if key == u8::MAX {
        String::new()
    } else {
        format!("k{}", key % 3)
    }
}

/// How many unread messages a listener holds.
pub const LISTENER_CAPACITY: usize = 4;

/// The payload of the n-th message spec of a run.
pub fn payload(n: u64, spec: &MsgSpec) -> Vec<u8> {
    let mut p = format!("p{n}").into_bytes();
    if spec.too_large {
        p.resize(MAX_MESSAGE_SIZE + 1, b'.');
    }
    p
}

/// The topics `DeleteTopic` and `CreateTopic` name: `a` (whose groups
/// most ops aim at) rarely.
fn deletable() -> impl Strategy<Value = TopicChoice> {
    prop_oneof![
        1 => Just(TopicChoice::A),
        2 => Just(TopicChoice::B),
        2 => Just(TopicChoice::ADlq),
        1 => Just(TopicChoice::BDlq),
        1 => Just(TopicChoice::Invalid),
    ]
}

fn topic() -> impl Strategy<Value = TopicChoice> {
    prop_oneof![
        6 => Just(TopicChoice::A),
        3 => Just(TopicChoice::B),
        2 => Just(TopicChoice::ADlq),
        1 => Just(TopicChoice::BDlq),
        1 => Just(TopicChoice::Invalid),
    ]
}

fn msg_spec() -> impl Strategy<Value = MsgSpec> {
    (
        proptest::option::weighted(0.5, prop_oneof![4 => 0u8..6, 1 => 6u8..16]),
        proptest::option::weighted(0.4, 0u8..3),
        proptest::option::weighted(0.15, 0u16..3000),
        proptest::bool::weighted(0.05),
        prop_oneof![6 => Just(0u8), 1 => 1u8..3, 1 => Just(u8::MAX)],
    )
        .prop_map(|(id, key, delay_ms, too_large, priority)| MsgSpec {
            id,
            key,
            delay_ms,
            too_large,
            priority,
        })
}

fn group() -> impl Strategy<Value = GroupChoice> {
    prop_oneof![
        5 => Just(GroupChoice::G1),
        3 => Just(GroupChoice::G2),
        1 => Just(GroupChoice::Invalid),
    ]
}

fn start() -> impl Strategy<Value = StartChoice> {
    prop_oneof![
        3 => Just(StartChoice::Beginning),
        1 => Just(StartChoice::End),
        1 => (0u8..6).prop_map(StartChoice::AfterSeq),
    ]
}

/// Few choices, so that later subscribers of a group usually match it.
fn backoff() -> impl Strategy<Value = BackoffChoice> {
    let choice = |base_ms, max_ms, jitter_pct| BackoffChoice {
        base_ms,
        max_ms,
        jitter_pct,
    };
    prop_oneof![
        8 => Just(BackoffChoice::default()),
        2 => Just(choice(700, 700, 0)),
        2 => Just(choice(300, 2400, 50)),
        1 => Just(choice(2000, 1000, 0)),
        1 => Just(choice(100, 100, 150)),
    ]
}

fn sub_spec() -> impl Strategy<Value = SubSpec> {
    (
        // Concentrated choices, so that later subscribers of a group usually
        // match its stored settings and join it.
        prop_oneof![
            3 => Just(OrderChoice::Ordered),
            2 => Just(OrderChoice::PerKey),
            1 => Just(OrderChoice::PerKeyCapped(2)),
            3 => Just(OrderChoice::Shared(2)),
            1 => (0u8..4).prop_map(OrderChoice::Shared),
            1 => Just(OrderChoice::PerKeyCapped(0)),
        ],
        prop_oneof![12 => Just(2u8), 2 => 1u8..4, 1 => Just(u8::MAX), 1 => Just(0u8)],
        prop_oneof![10 => 500u16..3000, 1 => Just(0u16)],
        prop_oneof![10 => 1u8..4, 1 => Just(0u8)],
        start(),
        backoff(),
        prop_oneof![
            10 => Just(None),
            2 => Just(Some((2, 1000))),
            1 => Just(Some((1, 3000))),
            1 => Just(Some((0, 1000))),
        ],
    )
        .prop_map(
            |(order, max_attempts, lease_ms, prefetch, start, backoff, rate_limit)| SubSpec {
                order,
                max_attempts,
                lease_ms,
                prefetch,
                start,
                backoff,
                rate_limit,
            },
        )
}

/// A strategy for operations, weighted towards those that move messages.
pub fn op() -> impl Strategy<Value = Op> {
    let idx = any::<u8>;
    prop_oneof![
        8 => (topic(), msg_spec()).prop_map(|(t, m)| Op::Publish(t, m)),
        // The dead-letter id of a message being handed out, taken in its
        // dead-letter topic before the message may be dead-lettered.
        3 => (6u8..8).prop_map(|id| Op::Publish(
            TopicChoice::ADlq,
            MsgSpec { id: Some(id), key: None, delay_ms: None, too_large: false, priority: 0 },
        )),
        2 => (topic(), proptest::collection::vec(msg_spec(), 0..5))
            .prop_map(|(t, m)| Op::PublishBatch(t, m)),
        3 => (topic(), group(), sub_spec())
            .prop_map(|(t, g, s)| Op::Subscribe(t, g, s)),
        12 => idx().prop_map(|consumer| Op::Receive { consumer }),
        3 => (idx(), idx()).prop_map(|(consumer, polls)| Op::CutReceive { consumer, polls }),
        6 => (idx(), idx()).prop_map(|(consumer, held)| Op::Ack { consumer, held }),
        3 => (idx(), idx(), prop_oneof![Just(None), Just(Some(0u16)), (1u16..2000).prop_map(Some)])
            .prop_map(|(consumer, held, delay_ms)| Op::Nack { consumer, held, delay_ms }),
        1 => (idx(), idx(), 0u16..4000)
            .prop_map(|(consumer, held, by_ms)| Op::Extend { consumer, held, by_ms }),
        4 => prop_oneof![1u16..1000, 1000u16..4000].prop_map(Op::Advance),
        1 => idx().prop_map(|consumer| Op::Drop { consumer }),
        1 => topic().prop_map(Op::Listen),
        2 => idx().prop_map(Op::PollListener),
        2 => topic().prop_map(Op::Stats),
        2 => (
            topic(),
            0u8..12,
            proptest::option::weighted(0.4, prop_oneof![10 => 0u8..3, 1 => Just(u8::MAX)]),
            prop_oneof![1 => Just(0u8), 8 => 1u8..6, 2 => Just(u8::MAX)],
        )
            .prop_map(|(topic, from, key, limit)| Op::Read { topic, from, key, limit }),
        1 => Just(Op::Topics),
        4 => (
            topic(),
            group(),
            prop_oneof![5 => Just(0u8), 1 => 0u8..40],
            prop_oneof![1 => Just(0u8), 8 => 1u8..6, 2 => Just(u8::MAX)],
        )
            .prop_map(|(topic, group, from, limit)| Op::DeadLetters { topic, group, from, limit }),
        // Mostly on `a`, where most groups, and so dead letters, are.
        4 => (
            prop_oneof![6 => Just(TopicChoice::A), 1 => topic()],
            group(),
            proptest::option::weighted(0.5, any::<u8>()),
            proptest::bool::weighted(0.3),
        )
            .prop_map(|(topic, group, pick, purge)| Op::Redrive { topic, group, pick, purge }),
        1 => (topic(), group(), start()).prop_map(|(t, g, s)| Op::Seek(t, g, s)),
        1 => (topic(), group()).prop_map(|(t, g)| Op::DeleteGroup(t, g)),
        // Rare, and lifted more often than made: a deleted topic refuses
        // most of what the other ops do.
        1 => deletable().prop_map(Op::DeleteTopic),
        4 => deletable().prop_map(Op::CreateTopic),
        // Mostly on `b`: retention on `a` would take the messages whose
        // dead letters the ops above aim at.
        1 => (
            prop_oneof![1 => Just(TopicChoice::A), 4 => Just(TopicChoice::B), 1 => topic()],
            retention(),
        )
            .prop_map(|(t, r)| Op::SetRetention(t, r)),
        1 => topic().prop_map(Op::Prune),
        1 => Just(Op::Reopen),
    ]
}

/// Sequences about dead letters taken back: a one-attempt shared, per-key
/// or ordered group `g1` of `a` first (its failures are dead letters at once),
/// then [`op`]s mixed with more nacks and with redrives and purges of that
/// group. ([`op`] alone makes few dead letters where a redrive can send
/// them back.)
pub fn redrive_ops() -> impl Strategy<Value = Vec<Op>> {
    let first = (
        prop_oneof![
            Just(OrderChoice::Shared(2)),
            Just(OrderChoice::PerKey),
            Just(OrderChoice::Ordered)
        ],
        1u8..4,
    )
        .prop_map(|(order, prefetch)| {
            let spec = SubSpec {
                order,
                max_attempts: 1,
                lease_ms: 1000,
                prefetch,
                start: StartChoice::Beginning,
                backoff: BackoffChoice::default(),
                rate_limit: None,
            };
            Op::Subscribe(TopicChoice::A, GroupChoice::G1, spec)
        });
    // Consumer 0 is the first subscriber of `g1`.
    let held = any::<u8>;
    let step = prop_oneof![
        4 => op(),
        3 => msg_spec().prop_map(|m| Op::Publish(TopicChoice::A, m)),
        4 => Just(Op::Receive { consumer: 0 }),
        3 => held().prop_map(|held| Op::Nack { consumer: 0, held, delay_ms: None }),
        1 => held().prop_map(|held| Op::Ack { consumer: 0, held }),
        2 => (proptest::option::weighted(0.5, any::<u8>()), proptest::bool::weighted(0.2))
            .prop_map(|(pick, purge)| Op::Redrive {
                topic: TopicChoice::A,
                group: GroupChoice::G1,
                pick,
                purge,
            }),
    ];
    (first, proptest::collection::vec(step, 1..60))
        .prop_map(|(first, rest)| std::iter::once(first).chain(rest).collect())
}

fn retention() -> impl Strategy<Value = RetentionChoice> {
    (
        proptest::bool::weighted(0.5),
        proptest::option::weighted(0.3, prop_oneof![10 => 1u16..5000, 1 => Just(0u16)]),
        proptest::option::weighted(0.4, prop_oneof![10 => 1u8..8, 1 => Just(0u8)]),
        proptest::option::weighted(0.3, prop_oneof![10 => 2u8..30, 1 => Just(0u8)]),
        proptest::option::weighted(0.4, prop_oneof![10 => 1u16..8000, 1 => Just(0u16)]),
    )
        .prop_map(
            |(until_consumed, max_age_ms, max_messages, max_bytes, dedupe_window_ms)| {
                RetentionChoice {
                    until_consumed,
                    max_age_ms,
                    max_messages,
                    max_bytes,
                    dedupe_window_ms,
                }
            },
        )
}
