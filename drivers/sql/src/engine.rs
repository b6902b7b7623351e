//! The commit engine every SQL driver runs: callers queue their calls as
//! plain data, and whoever holds the connection's turn runs what waits as
//! one transaction (group commit). A driver supplies a [`Backend`]: how to
//! get a connection and how a write transaction begins.
//!
//! - **Order.** Calls run in the order they were made (each is queued when
//!   the driver method is called, before its future is first polled), so a
//!   release started by dropping a subscription lands before any later ack
//!   of the same message.
//! - **Turns.** The turn is an `async_lock::Mutex` (runtime-free,
//!   cancel-safe). It holds the transaction in progress as a future: a
//!   caller that stops waiting half-way through a transaction leaves it
//!   there, and the next holder of the turn drives it on from where it was.
//!   No transaction is ever cut in half, and no caller waits on one that
//!   nobody drives. Callers take the turn with `try_lock` and, when it is
//!   taken, wait for an event that wakes every waiting caller when it is
//!   let go, rather than queueing on the mutex: the mutex hands the turn to
//!   one queued waiter, and a call future polled with a no-op waker (the
//!   bus polls calls it runs in the background that way) would take that
//!   hand-off and never use it, stalling every other caller.
//! - **Who drives.** On an engine made with [`Engine::new`] the callers
//!   themselves take turns (no runtime needed: turso, wasm32); with
//!   [`Engine::pumped`] one task of the driver's runtime runs
//!   [`Engine::pump`] and callers only wait for their answers (sqlx, whose
//!   futures need its runtime).
//! - **Backpressure.** At most [`QUEUE_LIMIT`] calls wait at once; a call
//!   beyond that waits for room before it is queued.
//! - **Group commit.** One transaction takes up to [`MAX_BATCH`] calls.
//!   Consecutive publishes to a topic share one duplicate check and one
//!   multi-row `INSERT`; consecutive acks of a group share one `DELETE`
//!   where `RETURNING` is cheap. A caller hears back only after the commit,
//!   so a returned publish is durable.
//! - **Failure.** A call failing with an error known to have written
//!   nothing (lease lost, conflict, bad options, unknown group) fails alone.
//!   One failing in the engine rolls the transaction back, which then runs
//!   again with a `SAVEPOINT` around each call: the failing call is rolled
//!   back alone and gets its error, the others commit. If `BEGIN` or
//!   `COMMIT` fails, every call of the transaction gets that error.
//!   A call that panics (a bug) stops the engine: every call waiting gets
//!   an error and later ones `Error::Closed`, so nobody waits forever.
//! - **Fast path.** A lone publish of at most [`ONE_STATEMENT_APPEND`]
//!   messages is one `INSERT` that commits by itself (where `RETURNING` is
//!   slow, followed by a read of `last_insert_rowid()`); if the topic holds
//!   one of its ids, the unique index refuses it whole and it runs again in
//!   a transaction with its duplicate check.
//! - **Cancel safety.** A call whose caller left before it ran does not run.
//!   A claim whose caller left after it ran keeps what it leased for that
//!   consumer's next claim (see [`Unread`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_lock::{Semaphore, SemaphoreGuardArc};
use event_listener::{Event, EventListener};
use litebus::driver::{
    Append, BoxFuture, Claim, ClaimOutcome, DeadLettered, DeleteTopic, EnsureGroup, GroupSpec,
    Handoff, Inbox, Next, Prune, Read, Redrive, Release, Seek, Settle, Settlement, TopicDeletion,
    TopicStats, Wakeups, copy_error,
};
use litebus::{
    Backoff, DriverError, Error, Message, Order, Outcome, RateLimit, Record, Result, Retention,
    Timestamp,
};

use crate::{Conn, Dialect, ONE_STATEMENT_APPEND};

/// An event of feature `tracing` at `$level`, as `tracing::event!` takes
/// fields and message; nothing (its arguments not evaluated) without it.
macro_rules! event {
    ($level:ident, $($rest:tt)*) => {
        #[cfg(feature = "tracing")]
        tracing::$level!(target: "litebus", $($rest)*);
    };
}

/// The most calls one transaction takes.
pub const MAX_BATCH: usize = 256;
/// The most calls waiting at once; more wait for room.
pub const QUEUE_LIMIT: usize = 4096;

/// What a driver gives the engine.
pub trait Backend: Send + Sync + 'static {
    /// A connection for one transaction.
    type Connection: Conn + Send + 'static;

    /// A connection to run the next transaction on.
    fn connect(&self) -> BoxFuture<'_, Result<Self::Connection>>;

    /// The statement that begins a write transaction.
    fn begin(&self) -> &'static str {
        "BEGIN IMMEDIATE"
    }
}

/// A consumer of a group: topic, group, consumer id.
pub type ConsumerKey = (String, String, String);

/// A call, as plain data so that it can run again.
enum Work {
    Publish {
        topic: String,
        messages: Vec<Arc<Message>>,
        expected_last: Option<u64>,
        now: Timestamp,
        /// Consumers waiting caught up, to lease new messages to.
        handoffs: Vec<Handoff>,
    },
    EnsureGroup {
        topic: String,
        group: String,
        spec: GroupSpec,
        start_after: Option<u64>,
    },
    Claim {
        key: ConsumerKey,
        now: Timestamp,
        lease_until: Timestamp,
        max: u32,
        backoff: Backoff,
        rate_limit: Option<RateLimit>,
    },
    Settle {
        topic: String,
        group: String,
        seq: u64,
        attempt: u32,
        generation: u64,
        now: Timestamp,
        settlement: Settlement,
        ordered: bool,
        /// An ordered group's next message, taken with the ack: consumer,
        /// seq, lease end.
        next: Option<(String, u64, Timestamp)>,
        backoff: Backoff,
    },
    Release {
        key: ConsumerKey,
        now: Timestamp,
    },
    Stats {
        topic: String,
        now: Timestamp,
    },
    Read {
        topic: String,
        after: u64,
        key: Option<String>,
        limit: u32,
        skip_taken_back: bool,
    },
    Seek {
        topic: String,
        group: String,
        start_after: Option<u64>,
    },
    DeleteGroup {
        topic: String,
        group: String,
    },
    Redrive {
        topic: String,
        group: String,
        dead_letter: String,
        letters: Vec<(u64, Arc<Message>)>,
        purge: bool,
        now: Timestamp,
    },
    DeleteTopic {
        topic: String,
        limit: u32,
        lift: bool,
    },
    SetRetention {
        topic: String,
        retention: Retention,
    },
    Prune {
        topic: String,
        now: Timestamp,
        limit: u32,
    },
    Topics,
    Migrate,
    /// A statement in a transaction of its own.
    Execute(String),
    /// A statement outside any transaction (a pragma, a checkpoint).
    Plain(String),
}

impl Work {
    fn lone_publish(&self) -> Option<Append<'_>> {
        match self {
            Work::Publish {
                topic,
                messages,
                expected_last: None,
                now,
                handoffs,
            } if messages.len() <= ONE_STATEMENT_APPEND && handoffs.is_empty() => Some(Append {
                topic,
                messages,
                expected_last: None,
                now: *now,
                handoffs: &[],
            }),
            _ => None,
        }
    }

    /// A claim's call as the steps take it.
    fn claim(&self) -> Option<Claim<'_>> {
        match self {
            Work::Claim {
                key,
                now,
                lease_until,
                max,
                backoff,
                rate_limit,
            } => Some(Claim {
                topic: &key.0,
                group: &key.1,
                consumer: &key.2,
                now: *now,
                lease_until: *lease_until,
                max: *max,
                backoff: *backoff,
                rate_limit: *rate_limit,
            }),
            _ => None,
        }
    }

    /// Calls that share statements with their neighbours of the same kind.
    fn merge_kind(&self, cheap_returning: bool) -> Option<u8> {
        match self {
            Work::Publish {
                expected_last: None,
                handoffs,
                ..
            } if handoffs.is_empty() => Some(0),
            Work::Settle {
                settlement: Settlement::Ack,
                ordered: false,
                ..
            } if cheap_returning => Some(1),
            _ => None,
        }
    }
}

/// What a call gives back.
enum Answer {
    Published(Vec<Outcome>),
    /// A publish that leased new messages to waiting consumers: what each
    /// got, for its inbox once committed.
    PublishedHanded(Vec<Outcome>, Vec<(Inbox, ClaimOutcome)>),
    Claimed(ClaimOutcome),
    Settled(Option<DeadLettered>),
    Released(Vec<DeadLettered>),
    Stats(TopicStats),
    Read(Vec<Record>),
    Deleted(bool),
    TopicDeleted(TopicDeletion),
    Topics(Vec<String>),
    /// The seqs of the dead letters a redrive or purge took back.
    TakenBack(Vec<u64>),
    Changed(u64),
    Done,
}

enum State {
    Queued,
    Answered(Result<Answer>),
    Taken,
    Abandoned,
}

struct Job {
    work: Work,
    state: Mutex<State>,
    done: Event,
    /// Room in the queue, given back when the call is over.
    _room: SemaphoreGuardArc,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Job {
    fn abandoned(&self) -> bool {
        matches!(*lock(&self.state), State::Abandoned)
    }

    /// Gives the caller its answer; if the caller has gone, keeps what a
    /// claim leased for the consumer's next claim.
    fn answer(&self, answer: Result<Answer>, unread: &Unread) {
        let mut state = lock(&self.state);
        if let State::Queued = *state {
            *state = State::Answered(answer);
            drop(state);
            self.done.notify(usize::MAX);
        } else {
            drop(state);
            self.keep(answer, unread);
        }
    }

    fn keep(&self, answer: Result<Answer>, unread: &Unread) {
        if let (Ok(Answer::Claimed(outcome)), Work::Claim { key, .. }) = (answer, &self.work) {
            unread.keep(key.clone(), outcome);
        }
    }
}

/// Claims whose caller stopped waiting (a `recv` cut by a deadline or a
/// `select!`), by consumer: given to that consumer's next claim instead of
/// staying leased to nobody until the lease runs out.
#[derive(Debug, Default)]
pub struct Unread {
    kept: Mutex<HashMap<ConsumerKey, ClaimOutcome>>,
    /// Fires when a claim is kept, so a consumer already waiting again
    /// looks at once.
    arrived: Event,
}

impl Unread {
    fn keep(&self, key: ConsumerKey, outcome: ClaimOutcome) {
        if outcome.deliveries.is_empty() && outcome.dead_lettered.is_empty() {
            return;
        }
        {
            let mut kept = lock(&self.kept);
            let entry = kept.entry(key).or_default();
            // In the order they were claimed (a shared group's: by
            // priority), the latest delivery of each message where it
            // first came (an ordered group's holder that claims again gets
            // its delivery again).
            let mut at: HashMap<u64, usize> = entry
                .deliveries
                .iter()
                .enumerate()
                .map(|(i, d)| (d.seq, i))
                .collect();
            for d in outcome.deliveries {
                match at.get(&d.seq) {
                    Some(&i) if entry.deliveries[i].attempt >= d.attempt => {}
                    Some(&i) => entry.deliveries[i] = d,
                    None => {
                        at.insert(d.seq, entry.deliveries.len());
                        entry.deliveries.push(d);
                    }
                }
            }
            if !outcome.ahead.is_empty() {
                entry.ahead = outcome.ahead;
            }
            entry.dead_lettered.extend(outcome.dead_lettered);
        }
        self.arrived.notify(usize::MAX);
    }

    fn take(&self, key: &ConsumerKey) -> Option<ClaimOutcome> {
        lock(&self.kept).remove(key)
    }

    /// A group moved or went: the deliveries kept for its consumers are no
    /// longer current (their dead letters, committed, are still told).
    fn forget_group(&self, topic: &str, group: &str) {
        for ((t, g, _), kept) in lock(&self.kept).iter_mut() {
            if t == topic && g == group {
                kept.deliveries.clear();
                kept.ahead.clear();
            }
        }
    }
}

/// The transaction in progress, owned by the turn.
type Step = Option<BoxFuture<'static, ()>>;

struct Inner<B: Backend> {
    backend: B,
    queue: Mutex<VecDeque<Arc<Job>>>,
    room: Arc<Semaphore>,
    turn: async_lock::Mutex<Step>,
    /// The turn was let go.
    freed: Event,
    /// Something was queued (for the pump) or the engine closed.
    queued: Event,
    /// Callers wait for a pump instead of driving.
    pumped: bool,
    closed: AtomicBool,
    unread: Unread,
    orders: Orders,
    /// The store's wake-ups: a committed publish wakes waiting consumers
    /// here, whether or not its caller is still there to do it.
    wakeups: Wakeups,
}

/// The commit engine of one store. Cheap to clone; clones share it.
pub struct Engine<B: Backend> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for Engine<B> {
    fn clone(&self) -> Self {
        Engine {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Backend> std::fmt::Debug for Engine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("queued", &lock(&self.inner.queue).len())
            .field("pumped", &self.inner.pumped)
            .field("closed", &self.inner.closed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// Waits for a job's answer; marks the job abandoned if dropped first.
struct Waiter<B: Backend> {
    inner: Arc<Inner<B>>,
    job: Arc<Job>,
}

impl<B: Backend> Drop for Waiter<B> {
    fn drop(&mut self) {
        let mut state = lock(&self.job.state);
        if matches!(*state, State::Taken) {
            return;
        }
        let old = std::mem::replace(&mut *state, State::Abandoned);
        drop(state);
        if let State::Answered(answer) = old {
            self.job.keep(answer, &self.inner.unread);
        }
    }
}

impl<B: Backend> Waiter<B> {
    async fn wait(&self) -> Result<Answer> {
        loop {
            let done = self.job.done.listen();
            {
                let mut state = lock(&self.job.state);
                if matches!(*state, State::Answered(_))
                    && let State::Answered(answer) = std::mem::replace(&mut *state, State::Taken)
                {
                    return answer;
                }
            }
            if self.inner.pumped {
                done.await;
                continue;
            }
            if unwakeable().await {
                // Polled by one that cannot be woken (the bus polls calls it
                // runs in the background so): drive only while that needs
                // no wake-up, else leave the turn to others and the answer
                // for a later poll.
                if let Some(turn) = self.inner.turn.try_lock()
                    && Inner::drive_now(&self.inner, turn)
                {
                    continue;
                }
                done.await;
                continue;
            }
            if let Some(turn) = self.inner.turn.try_lock() {
                Inner::drive(&self.inner, turn).await;
                continue;
            }
            // Armed before the second look, so a turn let go in between
            // is not missed.
            let freed = self.inner.freed.listen();
            if let Some(turn) = self.inner.turn.try_lock() {
                Inner::drive(&self.inner, turn).await;
                continue;
            }
            futures_lite::future::or(freed, done).await;
        }
    }
}

impl<B: Backend> Inner<B> {
    /// [`Inner::drive`] for a poller that cannot be woken: polls again as
    /// long as the transaction asks to be polled again while it is polled;
    /// otherwise lets the turn go, leaving the transaction in it for the
    /// next holder (as a caller that stopped waiting does). Whether it
    /// finished.
    fn drive_now(this: &Arc<Self>, turn: async_lock::MutexGuard<'_, Step>) -> bool {
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::Release);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = std::task::Waker::from(flag.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut driving = std::pin::pin!(Inner::drive(this, turn));
        loop {
            flag.0.store(false, Ordering::Release);
            if driving.as_mut().poll(&mut cx).is_ready() {
                return true;
            }
            if !flag.0.load(Ordering::Acquire) {
                return false;
            }
        }
    }

    /// Runs the transaction in progress, or else one of what waits.
    async fn drive(this: &Arc<Self>, turn: async_lock::MutexGuard<'_, Step>) {
        let mut turn = Turn {
            guard: Some(turn),
            freed: &this.freed,
        };
        let Some(step) = turn.guard.as_deref_mut() else {
            return;
        };
        if step.is_none() {
            let batch = this.take_batch();
            if batch.is_empty() {
                return;
            }
            *step = Some(Box::pin(run_batch(this.clone(), batch)));
        }
        if let Some(running) = step.as_mut() {
            running.await;
        }
        *step = None;
    }

    /// The next transaction's calls: up to [`MAX_BATCH`], and a statement
    /// outside any transaction alone.
    fn take_batch(&self) -> Vec<Arc<Job>> {
        let mut queue = lock(&self.queue);
        let mut batch = Vec::new();
        while let Some(job) = queue.front() {
            let plain = matches!(job.work, Work::Plain(_));
            if batch.len() == MAX_BATCH || (plain && !batch.is_empty()) {
                break;
            }
            if let Some(job) = queue.pop_front() {
                batch.push(job);
            }
            if plain {
                break;
            }
        }
        batch
    }

    fn is_idle(&self) -> bool {
        lock(&self.queue).is_empty()
    }
}

impl<B: Backend> Engine<B> {
    /// An engine whose callers take turns driving it (no runtime needed),
    /// waking the consumers of the store's `wakeups` on each commit.
    pub fn new(backend: B, wakeups: Wakeups) -> Self {
        Engine::with(backend, wakeups, false)
    }

    /// An engine driven by [`Engine::pump`], which the driver runs on its
    /// runtime; callers only wait for their answers.
    pub fn pumped(backend: B, wakeups: Wakeups) -> Self {
        Engine::with(backend, wakeups, true)
    }

    fn with(backend: B, wakeups: Wakeups, pumped: bool) -> Self {
        Engine {
            inner: Arc::new(Inner {
                backend,
                queue: Mutex::new(VecDeque::new()),
                room: Arc::new(Semaphore::new(QUEUE_LIMIT)),
                turn: async_lock::Mutex::new(None),
                freed: Event::new(),
                queued: Event::new(),
                pumped,
                closed: AtomicBool::new(false),
                unread: Unread::default(),
                orders: Orders::default(),
                wakeups,
            }),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    /// Runs queued calls until [`Engine::close`] and then the last of them.
    pub async fn pump(self) {
        let inner = self.inner;
        loop {
            let queued = inner.queued.listen();
            if inner.is_idle() {
                if inner.closed.load(Ordering::Acquire) {
                    // A transaction left in the turn is finished first.
                    let turn = inner.turn.lock().await;
                    Inner::drive(&inner, turn).await;
                    if inner.is_idle() {
                        return;
                    }
                    continue;
                }
                queued.await;
                continue;
            }
            let turn = inner.turn.lock().await;
            Inner::drive(&inner, turn).await;
        }
    }

    /// Refuses further calls. On an engine whose callers drive it, runs
    /// what is queued; a pumped one's pump does, then ends.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.queued.notify(usize::MAX);
        if self.inner.pumped {
            return;
        }
        loop {
            let turn = self.inner.turn.lock().await;
            let busy = turn.is_some();
            Inner::drive(&self.inner, turn).await;
            if !busy && self.inner.is_idle() {
                return;
            }
        }
    }

    /// Completes when a claim whose caller left is kept for its consumer.
    pub fn kept(&self) -> EventListener {
        self.inner.unread.arrived.listen()
    }

    /// Queues `work` now and waits for its answer.
    fn submit(&self, work: Work) -> BoxFuture<'static, Result<Answer>> {
        let inner = self.inner.clone();
        if inner.closed.load(Ordering::Acquire) {
            return Box::pin(async { Err(Error::Closed) });
        }
        let mut work = Some(work);
        let queued = inner
            .room
            .try_acquire_arc()
            .and_then(|room| work.take().map(|work| enqueue(&inner, work, room)));
        Box::pin(async move {
            let job = match (queued, work) {
                (Some(job), _) => job,
                (None, Some(work)) => {
                    let room = inner.room.acquire_arc().await;
                    if inner.closed.load(Ordering::Acquire) {
                        return Err(Error::Closed);
                    }
                    enqueue(&inner, work, room)
                }
                (None, None) => return Err(Error::Internal("a call was queued twice".into())),
            };
            Waiter { inner, job }.wait().await
        })
    }

    /// [`Driver::append`](litebus::driver::Driver::append).
    pub fn append(&self, append: Append<'_>) -> BoxFuture<'static, Result<Vec<Outcome>>> {
        self.ask(
            Work::Publish {
                topic: append.topic.to_owned(),
                messages: append.messages.to_vec(),
                expected_last: append.expected_last,
                now: append.now,
                handoffs: append.handoffs.to_vec(),
            },
            |answer| match answer {
                Answer::Published(v) => Some(v),
                _ => None,
            },
        )
    }

    /// [`Driver::ensure_group`](litebus::driver::Driver::ensure_group).
    pub fn ensure_group(&self, group: EnsureGroup<'_>) -> BoxFuture<'static, Result<()>> {
        self.done(Work::EnsureGroup {
            topic: group.topic.to_owned(),
            group: group.group.to_owned(),
            spec: group.spec.clone(),
            start_after: group.start_after,
        })
    }

    /// [`Driver::claim`](litebus::driver::Driver::claim). What an earlier
    /// claim of this consumer leased after its caller left comes first.
    pub fn claim(&self, claim: Claim<'_>) -> BoxFuture<'static, Result<ClaimOutcome>> {
        let key = (
            claim.topic.to_owned(),
            claim.group.to_owned(),
            claim.consumer.to_owned(),
        );
        if let Some(kept) = self.inner.unread.take(&key) {
            return Box::pin(async move { Ok(kept) });
        }
        self.ask(
            Work::Claim {
                key,
                now: claim.now,
                lease_until: claim.lease_until,
                max: claim.max,
                backoff: claim.backoff,
                rate_limit: claim.rate_limit,
            },
            |answer| match answer {
                Answer::Claimed(v) => Some(v),
                _ => None,
            },
        )
    }

    /// [`Driver::settle`](litebus::driver::Driver::settle).
    pub fn settle(&self, settle: Settle<'_>) -> BoxFuture<'static, Result<Option<DeadLettered>>> {
        self.ask(
            Work::Settle {
                topic: settle.topic.to_owned(),
                group: settle.group.to_owned(),
                seq: settle.seq,
                attempt: settle.attempt,
                generation: settle.generation,
                now: settle.now,
                settlement: settle.settlement,
                ordered: settle.ordered,
                next: settle
                    .next
                    .map(|n| (n.consumer.to_owned(), n.seq, n.lease_until)),
                backoff: settle.backoff,
            },
            |answer| match answer {
                Answer::Settled(v) => Some(v),
                _ => None,
            },
        )
    }

    /// [`Driver::release`](litebus::driver::Driver::release). Claims kept
    /// for the consumer are released with it.
    pub fn release(&self, release: Release<'_>) -> BoxFuture<'static, Result<Vec<DeadLettered>>> {
        let key = (
            release.topic.to_owned(),
            release.group.to_owned(),
            release.consumer.to_owned(),
        );
        self.inner.unread.take(&key);
        self.ask(
            Work::Release {
                key,
                now: release.now,
            },
            |answer| match answer {
                Answer::Released(v) => Some(v),
                _ => None,
            },
        )
    }

    /// [`Driver::stats`](litebus::driver::Driver::stats), in call order:
    /// they see every call made before them.
    pub fn stats(&self, topic: &str, now: Timestamp) -> BoxFuture<'static, Result<TopicStats>> {
        self.ask(
            Work::Stats {
                topic: topic.to_owned(),
                now,
            },
            |answer| match answer {
                Answer::Stats(v) => Some(v),
                _ => None,
            },
        )
    }

    /// [`Driver::read`](litebus::driver::Driver::read), in call order: it
    /// sees every call made before it. Queued alone, it is one `SELECT`
    /// outside any transaction.
    pub fn read(&self, read: Read<'_>) -> BoxFuture<'static, Result<Vec<Record>>> {
        self.ask(
            Work::Read {
                topic: read.topic.to_owned(),
                after: read.after,
                key: read.key.map(str::to_owned),
                limit: read.limit,
                skip_taken_back: read.skip_taken_back,
            },
            |answer| match answer {
                Answer::Read(v) => Some(v),
                _ => None,
            },
        )
    }

    /// [`Driver::topics`](litebus::driver::Driver::topics).
    pub fn topics(&self) -> BoxFuture<'static, Result<Vec<String>>> {
        self.ask(Work::Topics, |answer| match answer {
            Answer::Topics(v) => Some(v),
            _ => None,
        })
    }

    /// [`Driver::seek`](litebus::driver::Driver::seek).
    pub fn seek(&self, seek: Seek<'_>) -> BoxFuture<'static, Result<()>> {
        self.done(Work::Seek {
            topic: seek.topic.to_owned(),
            group: seek.group.to_owned(),
            start_after: seek.start_after,
        })
    }

    /// [`Driver::redrive`](litebus::driver::Driver::redrive).
    pub fn redrive(&self, r: Redrive<'_>) -> BoxFuture<'static, Result<Vec<u64>>> {
        self.ask(
            Work::Redrive {
                topic: r.topic.to_owned(),
                group: r.group.to_owned(),
                dead_letter: r.dead_letter.to_owned(),
                letters: r.letters.to_vec(),
                purge: r.purge,
                now: r.now,
            },
            |answer| match answer {
                Answer::TakenBack(v) => Some(v),
                _ => None,
            },
        )
    }

    /// [`Driver::delete_group`](litebus::driver::Driver::delete_group).
    pub fn delete_group(&self, topic: &str, group: &str) -> BoxFuture<'static, Result<bool>> {
        self.ask(
            Work::DeleteGroup {
                topic: topic.to_owned(),
                group: group.to_owned(),
            },
            |answer| match answer {
                Answer::Deleted(v) => Some(v),
                _ => None,
            },
        )
    }

    /// [`Driver::delete_topic`](litebus::driver::Driver::delete_topic).
    pub fn delete_topic(&self, step: DeleteTopic<'_>) -> BoxFuture<'static, Result<TopicDeletion>> {
        self.ask(
            Work::DeleteTopic {
                topic: step.topic.to_owned(),
                limit: step.limit,
                lift: step.lift,
            },
            |answer| match answer {
                Answer::TopicDeleted(v) => Some(v),
                _ => None,
            },
        )
    }

    /// [`Driver::set_retention`](litebus::driver::Driver::set_retention).
    pub fn set_retention(
        &self,
        topic: &str,
        retention: Retention,
    ) -> BoxFuture<'static, Result<()>> {
        self.done(Work::SetRetention {
            topic: topic.to_owned(),
            retention,
        })
    }

    /// [`Driver::prune`](litebus::driver::Driver::prune).
    pub fn prune(&self, prune: Prune<'_>) -> BoxFuture<'static, Result<u64>> {
        self.ask(
            Work::Prune {
                topic: prune.topic.to_owned(),
                now: prune.now,
                limit: prune.limit,
            },
            |answer| match answer {
                Answer::Changed(v) => Some(v),
                _ => None,
            },
        )
    }

    /// Creates or upgrades the schema ([`crate::migrate`]).
    pub fn migrate(&self) -> BoxFuture<'static, Result<()>> {
        self.done(Work::Migrate)
    }

    /// Runs one statement in a transaction of its own; how many rows it
    /// changed.
    pub fn execute(&self, sql: &str) -> BoxFuture<'static, Result<u64>> {
        self.ask(Work::Execute(sql.to_owned()), |answer| match answer {
            Answer::Changed(v) => Some(v),
            _ => None,
        })
    }

    /// Runs one statement outside any transaction (a pragma, a
    /// checkpoint), between two transactions.
    pub fn plain(&self, sql: &str) -> BoxFuture<'static, Result<()>> {
        self.done(Work::Plain(sql.to_owned()))
    }

    fn done(&self, work: Work) -> BoxFuture<'static, Result<()>> {
        self.ask(work, |answer| matches!(answer, Answer::Done).then_some(()))
    }

    /// Queues `work` now; its answer, as `pick` reads it.
    fn ask<T: Send + 'static>(
        &self,
        work: Work,
        pick: fn(Answer) -> Option<T>,
    ) -> BoxFuture<'static, Result<T>> {
        let answer = self.submit(work);
        Box::pin(async move { pick(answer.await?).ok_or_else(mismatch) })
    }
}

/// Whether this future is polled with a waker that wakes nobody.
async fn unwakeable() -> bool {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(cx.waker().will_wake(std::task::Waker::noop()))
    })
    .await
}

fn mismatch() -> Error {
    Error::Internal("a call got another call's answer".into())
}

fn enqueue<B: Backend>(inner: &Inner<B>, work: Work, room: SemaphoreGuardArc) -> Arc<Job> {
    let job = Arc::new(Job {
        work,
        state: Mutex::new(State::Queued),
        done: Event::new(),
        _room: room,
    });
    lock(&inner.queue).push_back(job.clone());
    inner.queued.notify(usize::MAX);
    job
}

/// Errors after which a call is known to have written nothing.
fn is_clean(e: &Error) -> bool {
    matches!(
        e,
        Error::LeaseLost
            | Error::Conflict { .. }
            | Error::InvalidOptions(_)
            | Error::UnknownGroup { .. }
            | Error::InvalidName { .. }
            | Error::MessageTooLarge { .. }
            | Error::TopicDeleted { .. }
            | Error::TopicInUse { .. }
    )
}

/// Each call of a transaction that did not commit gets why.
fn rolled_back(e: &Error) -> Error {
    let message = format!("transaction rolled back: {e}");
    if e.is_retryable() || !matches!(e, Error::Driver(_)) {
        DriverError::retryable(message).into()
    } else {
        DriverError::fatal(message).into()
    }
}

/// The turn, held: let go when dropped, and every waiting caller woken.
/// Emptied if the transaction in it panicked (a future that panicked must
/// not be polled again).
struct Turn<'a> {
    guard: Option<async_lock::MutexGuard<'a, Step>>,
    freed: &'a Event,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            if std::thread::panicking() {
                *guard = None;
            }
            drop(guard);
        }
        self.freed.notify(usize::MAX);
    }
}

/// Ends the engine if a transaction panics (a bug in litebus): its calls
/// and every call queued get `Error::Internal`, later calls `Error::Closed`,
/// so nobody waits forever for work that will not run.
struct PanicGuard<'a, B: Backend> {
    inner: &'a Inner<B>,
    jobs: &'a [Arc<Job>],
}

impl<B: Backend> Drop for PanicGuard<'_, B> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.inner.closed.store(true, Ordering::Release);
        let queued: Vec<Arc<Job>> = lock(&self.inner.queue).drain(..).collect();
        for job in self.jobs.iter().chain(&queued) {
            let e = Error::Internal("a call panicked in the engine, which has stopped".into());
            job.answer(Err(e), &self.inner.unread);
        }
        self.inner.queued.notify(usize::MAX);
    }
}

async fn run_batch<B: Backend>(inner: Arc<Inner<B>>, batch: Vec<Arc<Job>>) {
    // Calls whose callers left before they ran do not run. A claim whose
    // consumer has a claim kept (one it cut after it ran, answered before
    // this batch began) gets that one: checked here, when it runs, not only
    // when it was made, since the cut claim may have been running then.
    let jobs: Vec<Arc<Job>> = batch
        .into_iter()
        .filter(|job| !job.abandoned())
        .filter(|job| match &job.work {
            Work::Claim { key, .. } => match inner.unread.take(key) {
                Some(kept) => {
                    job.answer(Ok(Answer::Claimed(kept)), &inner.unread);
                    false
                }
                None => true,
            },
            _ => true,
        })
        .collect();
    if jobs.is_empty() {
        return;
    }
    let _guard = PanicGuard {
        inner: &inner,
        jobs: &jobs,
    };
    let answers = run_jobs(&inner, &jobs).await;
    for (job, mut answer) in jobs.iter().zip(answers) {
        // Committed: what was leased to waiting consumers goes to their
        // inboxes, and new messages wake waiting consumers, even if the
        // publish's caller stopped waiting (I11).
        if let Ok(Answer::PublishedHanded(outcomes, handed)) = answer {
            for (inbox, outcome) in handed {
                inbox.deliver(outcome);
            }
            answer = Ok(Answer::Published(outcomes));
        }
        if let Ok(answer) = &answer {
            wake(&inner.wakeups, &job.work, answer);
        }
        job.answer(answer, &inner.unread);
    }
}

/// Wakes the consumers a committed call made work for (I11): the store
/// does it at the commit, since the caller may have stopped waiting.
fn wake(wakeups: &Wakeups, work: &Work, answer: &Answer) {
    let dead_letters = |dead: &[DeadLettered]| {
        for d in dead {
            wakeups.published(&d.topic, 1);
        }
    };
    match (work, answer) {
        (Work::Publish { topic, .. }, Answer::Published(outcomes)) => {
            let new = outcomes.iter().filter(|o| !o.is_duplicate()).count();
            wakeups.published(topic, new);
        }
        (
            Work::Settle {
                topic,
                group,
                settlement,
                next,
                ..
            },
            Answer::Settled(dead),
        ) => {
            // An ack that took the next message kept the group busy.
            let handed = *settlement == Settlement::Ack && next.is_some();
            if !matches!(settlement, Settlement::Extend { .. }) && !handed {
                wakeups.freed(topic, group, 1);
            }
            dead_letters(dead.as_slice());
        }
        (Work::Release { key, .. }, Answer::Released(dead)) => {
            wakeups.freed(&key.0, &key.1, usize::MAX);
            dead_letters(dead);
        }
        (Work::Claim { key, .. }, Answer::Claimed(outcome))
            if !outcome.dead_lettered.is_empty() =>
        {
            // What the dead letters held back may be deliverable now.
            wakeups.freed(&key.0, &key.1, outcome.dead_lettered.len());
            dead_letters(&outcome.dead_lettered);
        }
        // A group moved (its messages may be deliverable at once) or went
        // (its waiting consumers learn it).
        (Work::Seek { topic, group, .. } | Work::DeleteGroup { topic, group }, _) => {
            wakeups.freed(topic, group, usize::MAX);
        }
        // Redriven messages are deliverable at once.
        (
            Work::Redrive {
                topic,
                group,
                purge: false,
                ..
            },
            Answer::TakenBack(done),
        ) if !done.is_empty() => {
            wakeups.freed(topic, group, done.len());
        }
        // The groups of a deleted topic went.
        (Work::DeleteTopic { topic, .. }, Answer::TopicDeleted(done)) => {
            for group in &done.groups {
                wakeups.freed(topic, group, usize::MAX);
            }
        }
        // A group whose delivery went may deliver the next at once.
        (Work::Prune { topic, .. }, Answer::Changed(pruned)) if *pruned > 0 => {
            wakeups.published(topic, usize::MAX);
        }
        _ => {}
    }
}

/// Each group's order, once a claim read it (an order never changes while
/// the group lives; a deleted group is forgotten), so that a claim reads
/// its group and its candidates in one statement.
#[derive(Debug, Default)]
struct Orders(Mutex<HashMap<(String, String), Order>>);

/// What the steps of a transaction share with the engine.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    unread: &'a Unread,
    orders: &'a Orders,
}

impl Ctx<'_> {
    /// A deleted group: what was kept for its consumers and its order go.
    fn forget_group(self, topic: &str, group: &str) {
        self.unread.forget_group(topic, group);
        lock(&self.orders.0).remove(&(topic.to_owned(), group.to_owned()));
    }
}

impl<B: Backend> Inner<B> {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            unread: &self.unread,
            orders: &self.orders,
        }
    }
}

async fn run_jobs<B: Backend>(inner: &Inner<B>, jobs: &[Arc<Job>]) -> Vec<Result<Answer>> {
    let mut conn = match inner.backend.connect().await {
        Ok(conn) => conn,
        Err(e) => return jobs.iter().map(|_| Err(copy_error(&e))).collect(),
    };
    if conn.dialect() != Dialect::Postgres {
        return run_together(inner, &mut conn, jobs).await;
    }
    let mut apart = claims_apart(&mut conn, jobs, inner.ctx()).await;
    if apart.iter().all(Option::is_none) {
        return run_together(inner, &mut conn, jobs).await;
    }
    let rest: Vec<Arc<Job>> = jobs
        .iter()
        .zip(&apart)
        .filter(|(_, answer)| answer.is_none())
        .map(|(job, _)| job.clone())
        .collect();
    let mut rest = if rest.is_empty() {
        Vec::new()
    } else {
        run_together(inner, &mut conn, &rest).await
    }
    .into_iter();
    apart
        .iter_mut()
        .map(|answer| {
            answer.take().unwrap_or_else(|| {
                rest.next()
                    .unwrap_or_else(|| Err(Error::Internal("a call ran without an answer".into())))
            })
        })
        .collect()
}

/// The claims of `jobs` that a claim apart answers (PostgreSQL:
/// [`crate::claim_apart`], each a transaction of its own that waits only
/// for claims of its group and transactions that hold the whole store),
/// before the rest of the batch: a claim of a shared group before which
/// the batch has only claims, reads, and acks and extensions of other
/// groups, none of which it could meet (calls run in call order: an ack
/// of a lease that ran out, run first, is not beaten by a claim made
/// after it). `None` for the others.
async fn claims_apart(
    conn: &mut dyn Conn,
    jobs: &[Arc<Job>],
    ctx: Ctx<'_>,
) -> Vec<Option<Result<Answer>>> {
    let mut answers = Vec::with_capacity(jobs.len());
    let mut in_order = true;
    // The groups settled earlier in the batch.
    let mut settled: Vec<(&str, &str)> = Vec::new();
    for job in jobs {
        let mut answer = None;
        match &job.work {
            Work::Claim { key, .. } if settled.contains(&(key.0.as_str(), key.1.as_str())) => {}
            Work::Claim {
                key,
                rate_limit: None,
                ..
            } if in_order => {
                let group = (key.0.clone(), key.1.clone());
                let shared = matches!(lock(&ctx.orders.0).get(&group), Some(Order::Shared { .. }));
                if let (true, Some(claim)) = (shared, job.work.claim()) {
                    answer = crate::claim_apart(conn, claim)
                        .await
                        .transpose()
                        .map(|claimed| claimed.map(Answer::Claimed));
                }
            }
            Work::Claim { .. } | Work::Read { .. } => {}
            Work::Settle {
                topic,
                group,
                settlement: Settlement::Ack | Settlement::Extend { .. },
                ..
            } => settled.push((topic, group)),
            _ => in_order = false,
        }
        answers.push(answer);
    }
    answers
}

/// Whether `jobs` are two or more acks that [`ack_many`] runs as one
/// statement: merged acks (see `Work::merge_kind`) of one group and
/// generation, no more than one `DELETE` takes.
fn one_ack_statement(jobs: &[Arc<Job>], slow_returning: bool) -> bool {
    let Some(Work::Settle {
        topic,
        group,
        generation,
        ..
    }) = jobs.first().map(|job| &job.work)
    else {
        return false;
    };
    jobs.len() > 1
        && jobs.len() <= crate::ACK_CHUNK
        && jobs.iter().all(|job| {
            job.work.merge_kind(!slow_returning) == Some(1)
                && matches!(&job.work, Work::Settle { topic: t, group: g, generation: n, .. }
                    if t == topic && g == group && n == generation)
        })
}

/// Runs `jobs` in one transaction (or a lone call as one statement).
async fn run_together<B: Backend>(
    inner: &Inner<B>,
    conn: &mut B::Connection,
    jobs: &[Arc<Job>],
) -> Vec<Result<Answer>> {
    let conn: &mut dyn Conn = conn;
    if let [job] = jobs {
        if let Work::Plain(sql) = &job.work {
            return vec![plain(conn, sql).await];
        }
        if let Work::Settle {
            settlement: Settlement::Ack | Settlement::Extend { .. },
            ..
        }
        | Work::Read { .. } = &job.work
        {
            // One statement, atomic by itself: no transaction around it.
            return vec![run_one(conn, &job.work, inner.ctx()).await];
        }
        if let Work::Prune { topic, .. } = &job.work {
            // A topic without retention (most of them) answers from one
            // `SELECT` outside any transaction, without taking the write lock.
            match crate::has_retention(conn, topic).await {
                Ok(false) => return vec![Ok(Answer::Changed(0))],
                Ok(true) => {}
                Err(e) => return vec![Err(e)],
            }
        }
        if let Some(append) = job.work.lone_publish() {
            match crate::insert_new(conn, append).await {
                Err(e) if crate::is_known_id(&e) => {}
                result => return vec![result.map(Answer::Published)],
            }
        }
    }
    if one_ack_statement(jobs, conn.slow_returning()) {
        // Acks of one group: one `DELETE`, atomic by itself (as a lone
        // ack's): no transaction around it, nor the write lock.
        return match ack_many(conn, jobs).await {
            Ok(answers) => answers,
            Err(e) => jobs.iter().map(|_| Err(copy_error(&e))).collect(),
        };
    }
    let begin = inner.backend.begin();
    let first = transaction(conn, begin, jobs, inner.ctx(), false);
    #[cfg(feature = "tracing")]
    let first = tracing::Instrument::instrument(
        first,
        tracing::debug_span!("litebus.transaction", calls = jobs.len(), isolated = false),
    );
    if let Some(answers) = first.await {
        return answers;
    }
    let again = transaction(conn, begin, jobs, inner.ctx(), true);
    #[cfg(feature = "tracing")]
    let again = tracing::Instrument::instrument(
        again,
        tracing::debug_span!("litebus.transaction", calls = jobs.len(), isolated = true),
    );
    again.await.unwrap_or_else(|| {
        jobs.iter()
            .map(|_| Err(Error::Internal("an isolated transaction ran again".into())))
            .collect()
    })
}

async fn plain(conn: &mut dyn Conn, sql: &str) -> Result<Answer> {
    conn.query(sql, Vec::new()).await.map(|_| Answer::Done)
}

/// Runs `jobs` in one transaction. `None`: a call failed in the engine and
/// everything was rolled back, to run again `isolated` (each call in a
/// savepoint of its own).
async fn transaction(
    conn: &mut dyn Conn,
    begin: &str,
    jobs: &[Arc<Job>],
    ctx: Ctx<'_>,
    isolated: bool,
) -> Option<Vec<Result<Answer>>> {
    if let Err(e) = conn.execute(begin, Vec::new()).await {
        event!(
            warn,
            error = %e,
            retryable = e.is_retryable(),
            calls = jobs.len(),
            "litebus: a transaction could not begin"
        );
        return Some(jobs.iter().map(|_| Err(copy_error(&e))).collect());
    }
    let cheap_returning = !conn.slow_returning();
    let mut answers: Vec<Result<Answer>> = Vec::with_capacity(jobs.len());
    let mut i = 0;
    while i < jobs.len() {
        let mut end = i + 1;
        if !isolated && let Some(kind) = jobs[i].work.merge_kind(cheap_returning) {
            while end < jobs.len() && jobs[end].work.merge_kind(cheap_returning) == Some(kind) {
                end += 1;
            }
        }
        let group = &jobs[i..end];
        if isolated && let Err(e) = conn.execute("SAVEPOINT litebus_call", Vec::new()).await {
            return Some(abort(conn, jobs.len(), &e).await);
        }
        match run_group(conn, group, ctx).await {
            Ok(mut ran) => {
                if isolated && let Err(e) = conn.execute("RELEASE litebus_call", Vec::new()).await {
                    return Some(abort(conn, jobs.len(), &e).await);
                }
                answers.append(&mut ran);
            }
            Err(e) if !isolated => {
                event!(
                    debug,
                    error = %e,
                    calls = jobs.len(),
                    "litebus: a call failed; its transaction runs again, a savepoint per call"
                );
                let _ = (e, conn.execute("ROLLBACK", Vec::new()).await);
                return None;
            }
            Err(e) => {
                let undone = conn
                    .execute("ROLLBACK TO litebus_call", Vec::new())
                    .await
                    .and(conn.execute("RELEASE litebus_call", Vec::new()).await);
                if let Err(undo) = undone {
                    return Some(abort(conn, jobs.len(), &undo).await);
                }
                answers.push(Err(e));
            }
        }
        i = end;
    }
    if let Err(e) = conn.execute("COMMIT", Vec::new()).await {
        event!(
            warn,
            error = %e,
            retryable = e.is_retryable(),
            calls = jobs.len(),
            "litebus: a commit failed; its calls get the error"
        );
        let _ = conn.execute("ROLLBACK", Vec::new()).await;
        return Some(
            answers
                .into_iter()
                .map(|answer| answer.and(Err(rolled_back(&e))))
                .collect(),
        );
    }
    Some(answers)
}

/// Rolls back; every call gets `e`.
async fn abort(conn: &mut dyn Conn, n: usize, e: &Error) -> Vec<Result<Answer>> {
    let _ = conn.execute("ROLLBACK", Vec::new()).await;
    (0..n).map(|_| Err(rolled_back(e))).collect()
}

/// Runs calls that share statements (or one call). `Err`: the engine
/// failed and the transaction may hold part of their writes.
async fn run_group(
    conn: &mut dyn Conn,
    group: &[Arc<Job>],
    ctx: Ctx<'_>,
) -> Result<Vec<Result<Answer>>> {
    if let [job] = group {
        return match run_one(conn, &job.work, ctx).await {
            Err(e) if !is_clean(&e) => Err(e),
            answer => Ok(vec![answer]),
        };
    }
    match &group[0].work {
        Work::Publish { .. } => publish_many(conn, group).await,
        _ => ack_many(conn, group).await,
    }
}

/// Publishes (without an expected last seq) by topic, each topic's as one
/// append.
async fn publish_many(conn: &mut dyn Conn, group: &[Arc<Job>]) -> Result<Vec<Result<Answer>>> {
    // Publishes merged into one commit share its publish time: the latest.
    let mut by_topic: Vec<(&str, Vec<Arc<Message>>, Timestamp)> = Vec::new();
    for job in group {
        if let Work::Publish {
            topic,
            messages,
            now,
            ..
        } = &job.work
        {
            match by_topic.iter_mut().find(|(t, ..)| t == topic) {
                Some((_, all, at)) => {
                    all.extend(messages.iter().cloned());
                    *at = (*at).max(*now);
                }
                None => by_topic.push((topic, messages.clone(), *now)),
            }
        }
    }
    let mut outcomes: HashMap<&str, std::vec::IntoIter<Outcome>> = HashMap::new();
    for (topic, messages, now) in &by_topic {
        let append = Append {
            topic,
            messages,
            expected_last: None,
            now: *now,
            handoffs: &[],
        };
        let done = crate::append(conn, append).await?;
        outcomes.insert(topic, done.into_iter());
    }
    Ok(group
        .iter()
        .map(|job| match &job.work {
            Work::Publish {
                topic, messages, ..
            } => {
                let mine = outcomes
                    .get_mut(topic.as_str())
                    .map_or_else(Vec::new, |all| all.by_ref().take(messages.len()).collect());
                Ok(Answer::Published(mine))
            }
            _ => Err(mismatch()),
        })
        .collect())
}

/// Acks by group (and generation), each group's as one statement.
async fn ack_many(conn: &mut dyn Conn, group: &[Arc<Job>]) -> Result<Vec<Result<Answer>>> {
    type Deliveries<'a> = ((&'a str, &'a str, u64), Vec<(u64, u32)>);
    let mut by_group: Vec<Deliveries<'_>> = Vec::new();
    for job in group {
        if let Work::Settle {
            topic,
            group,
            seq,
            attempt,
            generation,
            ..
        } = &job.work
        {
            let key = (topic.as_str(), group.as_str(), *generation);
            match by_group.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push((*seq, *attempt)),
                None => by_group.push((key, vec![(*seq, *attempt)])),
            }
        }
    }
    let mut current: HashMap<(&str, &str, u64), std::vec::IntoIter<bool>> = HashMap::new();
    for (key @ (topic, grp, generation), deliveries) in &by_group {
        let acked = crate::ack_many(conn, (topic, grp, *generation), deliveries).await?;
        current.insert(*key, acked.into_iter());
    }
    Ok(group
        .iter()
        .map(|job| match &job.work {
            Work::Settle {
                topic,
                group,
                generation,
                ..
            } => {
                match current
                    .get_mut(&(topic.as_str(), group.as_str(), *generation))
                    .and_then(Iterator::next)
                {
                    Some(true) => Ok(Answer::Settled(None)),
                    _ => Err(Error::LeaseLost),
                }
            }
            _ => Err(mismatch()),
        })
        .collect())
}

async fn run_one(conn: &mut dyn Conn, work: &Work, ctx: Ctx<'_>) -> Result<Answer> {
    match work {
        Work::Publish {
            topic,
            messages,
            expected_last,
            now,
            handoffs,
        } => {
            let append = Append {
                topic,
                messages,
                expected_last: *expected_last,
                now: *now,
                handoffs: &[],
            };
            let outcomes = crate::append(conn, append).await?;
            if handoffs.is_empty() {
                return Ok(Answer::Published(outcomes));
            }
            let new: Vec<(u64, Arc<Message>)> = outcomes
                .iter()
                .zip(messages)
                .filter_map(|(outcome, message)| match outcome {
                    Outcome::Published { seq } => Some((*seq, message.clone())),
                    Outcome::Duplicate { .. } => None,
                })
                .collect();
            let handed = crate::hand_off(conn, topic, &new, handoffs).await?;
            Ok(Answer::PublishedHanded(outcomes, handed))
        }
        Work::EnsureGroup {
            topic,
            group,
            spec,
            start_after,
        } => {
            let group = EnsureGroup {
                topic,
                group,
                spec,
                start_after: *start_after,
            };
            crate::ensure_group(conn, group).await?;
            // The group's claims need not read its order first. (Should
            // this transaction roll back, a claim finds out what order the
            // group has, if any.)
            lock(&ctx.orders.0).insert((topic.clone(), group.group.to_owned()), spec.order);
            Ok(Answer::Done)
        }
        Work::Claim { key, .. } => {
            let claim = work.claim().ok_or_else(mismatch)?;
            let group = (key.0.clone(), key.1.clone());
            let known = lock(&ctx.orders.0).get(&group).copied();
            let (outcome, order) = crate::claim(conn, claim, known).await?;
            if known != Some(order) {
                lock(&ctx.orders.0).insert(group, order);
            }
            Ok(Answer::Claimed(outcome))
        }
        Work::Settle {
            topic,
            group,
            seq,
            attempt,
            generation,
            now,
            settlement,
            ordered,
            next,
            backoff,
        } => {
            let settle = Settle {
                topic,
                group,
                seq: *seq,
                attempt: *attempt,
                generation: *generation,
                now: *now,
                settlement: settlement.clone(),
                ordered: *ordered,
                next: next.as_ref().map(|(consumer, seq, lease_until)| Next {
                    consumer,
                    seq: *seq,
                    lease_until: *lease_until,
                }),
                backoff: *backoff,
            };
            crate::settle(conn, settle).await.map(Answer::Settled)
        }
        Work::Release { key, now } => {
            // Claims kept for this consumer go with it.
            ctx.unread.take(key);
            let release = Release {
                topic: &key.0,
                group: &key.1,
                consumer: &key.2,
                now: *now,
            };
            crate::release(conn, release).await.map(Answer::Released)
        }
        Work::Stats { topic, now } => crate::stats(conn, topic, *now).await.map(Answer::Stats),
        Work::Read {
            topic,
            after,
            key,
            limit,
            skip_taken_back,
        } => {
            let read = Read {
                topic,
                after: *after,
                key: key.as_deref(),
                limit: *limit,
                skip_taken_back: *skip_taken_back,
            };
            crate::read(conn, read).await.map(Answer::Read)
        }
        Work::Seek {
            topic,
            group,
            start_after,
        } => {
            let seek = Seek {
                topic,
                group,
                start_after: *start_after,
            };
            crate::seek(conn, seek).await?;
            ctx.unread.forget_group(topic, group);
            Ok(Answer::Done)
        }
        Work::DeleteGroup { topic, group } => {
            let deleted = crate::delete_group(conn, topic, group).await?;
            ctx.forget_group(topic, group);
            Ok(Answer::Deleted(deleted))
        }
        Work::Redrive {
            topic,
            group,
            dead_letter,
            letters,
            purge,
            now,
        } => {
            let redrive = Redrive {
                topic,
                group,
                dead_letter,
                letters,
                purge: *purge,
                now: *now,
            };
            crate::redrive(conn, redrive).await.map(Answer::TakenBack)
        }
        Work::DeleteTopic { topic, limit, lift } => {
            let step = DeleteTopic {
                topic,
                limit: *limit,
                lift: *lift,
            };
            let done = crate::delete_topic(conn, step).await?;
            for group in &done.groups {
                ctx.forget_group(topic, group);
            }
            Ok(Answer::TopicDeleted(done))
        }
        Work::SetRetention { topic, retention } => {
            crate::set_retention(conn, topic, *retention).await?;
            Ok(Answer::Done)
        }
        Work::Prune { topic, now, limit } => {
            let prune = Prune {
                topic,
                now: *now,
                limit: *limit,
            };
            crate::prune(conn, prune).await.map(Answer::Changed)
        }
        Work::Topics => crate::topics(conn).await.map(Answer::Topics),
        Work::Migrate => crate::migrate(conn).await.map(|()| Answer::Done),
        Work::Execute(sql) => conn.execute(sql, Vec::new()).await.map(Answer::Changed),
        // `take_batch` gives a plain statement a batch of its own, which
        // `run_jobs` runs outside any transaction.
        Work::Plain(_) => Err(Error::Internal(
            "a plain statement was queued inside a transaction".into(),
        )),
    }
}

/// What each SQL driver's tests check on its own backend: how many
/// statements the engine runs for a call, and that a failing call is rolled
/// back alone.
#[doc(hidden)]
pub mod checks {
    use std::sync::{Arc, Mutex};

    use litebus::driver::{Append, BoxFuture, Claim, prepare_message};
    use litebus::{Backoff, Error, Message, Outcome, Result, Timestamp};

    use super::{Backend, Engine, lock};
    use crate::{Conn, Row, Value};

    /// A backend whose connections write down every statement they run.
    pub struct Counted<B> {
        inner: B,
        log: Arc<Mutex<Vec<String>>>,
        rows: Arc<Mutex<usize>>,
    }

    impl<B> Counted<B> {
        /// Wraps `inner`.
        pub fn new(inner: B) -> Self {
            Counted {
                inner,
                log: Arc::default(),
                rows: Arc::default(),
            }
        }
    }

    /// A statement holding this panics on a [`Counted`] connection.
    pub const PANIC: &str = "litebus-panic";
    /// A query holding this is pending once (asking to be polled again at
    /// once) on a [`Counted`] connection, as turso is after its I/O.
    pub const YIELD: &str = "litebus-yield";

    /// A connection of [`Counted`].
    pub struct CountedConn<C> {
        inner: C,
        log: Arc<Mutex<Vec<String>>>,
        rows: Arc<Mutex<usize>>,
    }

    impl<B: Backend> Backend for Counted<B> {
        type Connection = CountedConn<B::Connection>;

        fn connect(&self) -> BoxFuture<'_, Result<Self::Connection>> {
            Box::pin(async move {
                Ok(CountedConn {
                    inner: self.inner.connect().await?,
                    log: self.log.clone(),
                    rows: self.rows.clone(),
                })
            })
        }

        fn begin(&self) -> &'static str {
            self.inner.begin()
        }
    }

    impl<C: Conn> Conn for CountedConn<C> {
        fn execute<'a>(
            &'a mut self,
            sql: &'a str,
            params: Vec<Value>,
        ) -> BoxFuture<'a, Result<u64>> {
            lock(&self.log).push(sql.split_whitespace().collect::<Vec<_>>().join(" "));
            assert!(!sql.contains(PANIC), "a statement asked to panic");
            if sql.contains(YIELD) {
                return Box::pin(async move {
                    futures_lite::future::yield_now().await;
                    self.inner.execute(sql, params).await
                });
            }
            self.inner.execute(sql, params)
        }

        fn query<'a>(
            &'a mut self,
            sql: &'a str,
            params: Vec<Value>,
        ) -> BoxFuture<'a, Result<Vec<Row>>> {
            lock(&self.log).push(sql.split_whitespace().collect::<Vec<_>>().join(" "));
            Box::pin(async move {
                if sql.contains(YIELD) {
                    futures_lite::future::yield_now().await;
                }
                let rows = self.inner.query(sql, params).await?;
                *lock(&self.rows) += rows.len();
                Ok(rows)
            })
        }

        fn slow_returning(&self) -> bool {
            self.inner.slow_returning()
        }

        // Forwarded, not counted: turso reads it off its connection with no
        // statement (sqlx never asks: it has `RETURNING`).
        fn last_insert_rowid(&mut self) -> BoxFuture<'_, Result<u64>> {
            self.inner.last_insert_rowid()
        }
    }

    /// The turn, held: nothing runs until it is dropped.
    pub struct Hold<'a>(#[allow(dead_code)] super::Turn<'a>);

    impl<B: Backend> Engine<Counted<B>> {
        /// Takes the turn, so that calls made meanwhile queue up and then
        /// run together.
        pub async fn hold(&self) -> Hold<'_> {
            Hold(super::Turn {
                guard: Some(self.inner.turn.lock().await),
                freed: &self.inner.freed,
            })
        }

        /// The statements run since the last call, emptied.
        pub fn statements(&self) -> Vec<String> {
            std::mem::take(&mut *lock(&self.inner.backend.log))
        }

        /// The rows queries returned since the last call.
        pub fn rows_read(&self) -> usize {
            std::mem::take(&mut *lock(&self.inner.backend.rows))
        }
    }

    fn messages(topic: &str, ids: &[&str]) -> Result<Vec<Arc<Message>>> {
        ids.iter()
            .map(|id| {
                let m = Message::new(id.as_bytes().to_vec()).with_id(*id);
                prepare_message(topic, m, 1 << 20, Timestamp::ZERO).map(Arc::new)
            })
            .collect()
    }

    fn publish<B: Backend>(
        engine: &Engine<B>,
        topic: &str,
        ids: &[&str],
    ) -> Result<BoxFuture<'static, Result<Vec<Outcome>>>> {
        let messages = messages(topic, ids)?;
        Ok(engine.append(Append {
            topic,
            messages: &messages,
            expected_last: None,
            now: Timestamp::ZERO,
            handoffs: &[],
        }))
    }

    fn fail(what: String) -> Error {
        Error::Internal(what)
    }

    /// A new store with group `g` of topic `t`, shared (16 in flight),
    /// from the beginning: where the statement counts are taken.
    async fn shared_group<B: Backend>(engine: &Engine<Counted<B>>) -> Result<()> {
        engine.migrate().await?;
        let group = litebus::driver::GroupSpec {
            order: litebus::Order::Shared { max_in_flight: 16 },
            max_attempts: 5,
            backoff: Backoff::none(),
            rate_limit: None,
            max_in_flight: None,
            dead_letter: "t.dlq".into(),
        };
        engine
            .ensure_group(litebus::driver::EnsureGroup {
                topic: "t",
                group: "g",
                spec: &group,
                start_after: Some(0),
            })
            .await
    }

    /// A prune step of a topic without retention is one `SELECT` outside
    /// any transaction; with retention (`max_messages(1)`, two to go, one
    /// group), the check, then `BEGIN`, the rules, the window, the groups'
    /// `UPDATE`, the two `DELETE`s, `COMMIT`. Gives both counts.
    pub async fn prune_statements<B: Backend>(
        engine: &Engine<Counted<B>>,
    ) -> Result<(usize, usize)> {
        shared_group(engine).await?;
        publish(engine, "t", &["a", "b", "c"])?.await?;
        let step = litebus::driver::Prune {
            topic: "t",
            now: Timestamp::ZERO,
            limit: 100,
        };
        engine.statements();
        if engine.prune(step).await? != 0 {
            return Err(fail("a topic without retention lost messages".into()));
        }
        let without = engine.statements();
        if without.iter().any(|s| s.starts_with("BEGIN")) {
            return Err(fail(format!("a transaction for nothing: {without:?}")));
        }
        let one = litebus::Retention::new().max_messages(1);
        engine.set_retention("t", one).await?;
        engine.statements();
        if engine.prune(step).await? != 2 {
            return Err(fail(
                "max_messages(1) of three let go of other than two".into(),
            ));
        }
        Ok((without.len(), engine.statements().len()))
    }

    /// Publishes queued together share one transaction, one duplicate check
    /// and one insert; acks queued together share one statement where
    /// `RETURNING` is cheap. Gives the statement counts, transaction
    /// included: (four publishes, a claim of four, four acks).
    pub async fn shared_statements<B: Backend>(
        engine: &Engine<Counted<B>>,
    ) -> Result<(usize, usize, usize)> {
        shared_group(engine).await?;
        engine.statements();
        // Queued while the turn is held, so one transaction takes them all.
        let hold = engine.hold().await;
        let publishes = [
            publish(engine, "t", &["a", "b"])?,
            publish(engine, "t", &["c"])?,
            publish(engine, "t", &["d", "a"])?,
            publish(engine, "t", &["e"])?,
        ];
        drop(hold);
        let mut outcomes = Vec::new();
        for p in publishes {
            outcomes.extend(p.await?);
        }
        let published = engine.statements();
        let seqs: Vec<u64> = outcomes.iter().map(|o| o.seq()).collect();
        if seqs != [1, 2, 3, 4, 1, 5] {
            return Err(fail(format!("merged publishes got {outcomes:?}")));
        }
        let claimed = engine
            .claim(Claim {
                topic: "t",
                group: "g",
                consumer: "c",
                now: Timestamp::ZERO,
                lease_until: Timestamp::from_millis(60_000),
                max: 4,
                backoff: Backoff::none(),
                rate_limit: None,
            })
            .await?;
        if claimed.deliveries.len() != 4 {
            return Err(fail(format!("claimed {:?}", claimed.deliveries)));
        }
        let claim = engine.statements();
        let hold = engine.hold().await;
        let acks: Vec<_> = claimed
            .deliveries
            .iter()
            .map(|d| {
                engine.settle(litebus::driver::Settle {
                    topic: "t",
                    group: "g",
                    seq: d.seq,
                    attempt: d.attempt,
                    generation: d.generation,
                    now: Timestamp::ZERO,
                    settlement: litebus::driver::Settlement::Ack,
                    ordered: false,
                    next: None,
                    backoff: Backoff::none(),
                })
            })
            .collect();
        drop(hold);
        for ack in acks {
            ack.await?;
        }
        let acked = engine.statements();
        Ok((published.len(), claim.len(), acked.len()))
    }

    /// The statements of claims, each alone in its transaction (`BEGIN` and
    /// `COMMIT` included).
    #[derive(Debug)]
    pub struct ClaimStatements {
        /// A claim of four from a shared group that takes messages in.
        pub taking_in: usize,
        /// A claim of four from a shared group whose messages are taken in.
        pub taken_in: usize,
        /// The same from a per-key group.
        pub per_key: usize,
        /// The rows read by a claim of a shared group at its
        /// `max_in_flight`.
        pub at_limit_rows: usize,
        /// A publish of eight messages with nothing else queued.
        pub lone_publish: usize,
        /// An ordered group's claim of its next message and those after it.
        pub ordered: usize,
        /// The messages that ordered claim read ahead.
        pub ahead: usize,
        /// An ordered group's ack that hands its consumer the next message.
        pub ordered_ack: usize,
        /// The statements that write (`INSERT`, `UPDATE`, `DELETE`) of
        /// claims that find nothing deliverable, shared and ordered.
        pub idle_writes: Vec<String>,
        /// An ack with nothing else queued.
        pub lone_ack: usize,
    }

    fn idle_writes_at_limit(statements: Vec<String>) -> Result<()> {
        let written = writes(statements);
        if written.is_empty() {
            Ok(())
        } else {
            Err(fail(format!("a claim at the limit wrote {written:?}")))
        }
    }

    fn writes(statements: Vec<String>) -> Vec<String> {
        statements
            .into_iter()
            .filter(|s| {
                let verb = s.split_whitespace().next().unwrap_or("");
                ["INSERT", "UPDATE", "DELETE", "REPLACE"]
                    .iter()
                    .any(|w| verb.eq_ignore_ascii_case(w))
            })
            .collect()
    }

    /// Counts the statements of claims: see [`ClaimStatements`].
    pub async fn claim_statements<B: Backend>(
        engine: &Engine<Counted<B>>,
    ) -> Result<ClaimStatements> {
        use litebus::Order;
        use litebus::driver::{EnsureGroup, GroupSpec, Settle, Settlement};
        engine.migrate().await?;
        for (group, order) in [
            ("g", Order::Shared { max_in_flight: 16 }),
            ("o", Order::Ordered),
            ("k", Order::PerKey),
            ("l", Order::Shared { max_in_flight: 2 }),
        ] {
            let spec = GroupSpec {
                order,
                max_attempts: 5,
                backoff: Backoff::none(),
                rate_limit: None,
                max_in_flight: None,
                dead_letter: "t.dlq".into(),
            };
            engine
                .ensure_group(EnsureGroup {
                    topic: "t",
                    group,
                    spec: &spec,
                    start_after: Some(0),
                })
                .await?;
        }
        engine.statements();
        publish(engine, "t", &["a", "b", "c", "d", "e", "f", "g", "h"])?.await?;
        let lone_publish = engine.statements().len();
        let claim = |group: &'static str, consumer: &'static str| {
            engine.claim(Claim {
                topic: "t",
                group,
                consumer,
                now: Timestamp::ZERO,
                lease_until: Timestamp::from_millis(60_000),
                max: 4,
                backoff: Backoff::none(),
                rate_limit: None,
            })
        };
        let ack = |d: &litebus::driver::Claimed, next: Option<u64>| {
            engine.settle(Settle {
                topic: "t",
                group: "o",
                seq: d.seq,
                attempt: d.attempt,
                generation: d.generation,
                now: Timestamp::ZERO,
                settlement: Settlement::Ack,
                ordered: true,
                next: next.map(|seq| litebus::driver::Next {
                    consumer: "c",
                    seq,
                    lease_until: Timestamp::from_millis(60_000),
                }),
                backoff: Backoff::none(),
            })
        };
        let claimed = async |group: &'static str,
                             consumer: &'static str,
                             count: usize|
               -> Result<(Vec<String>, litebus::driver::ClaimOutcome)> {
            engine.statements();
            let outcome = claim(group, consumer).await?;
            let ran = engine.statements();
            if outcome.deliveries.len() != count {
                return Err(fail(format!(
                    "a claim of group {group} got {:?}, not {count}",
                    outcome.deliveries
                )));
            }
            Ok((ran, outcome))
        };
        let taking_in = claimed("g", "c", 4).await?.0.len();
        let taken_in = claimed("g", "c", 4).await?.0.len();
        claimed("k", "c", 4).await?;
        let per_key = claimed("k", "c", 4).await?.0.len();
        claimed("l", "c", 2).await?;
        engine.rows_read();
        idle_writes_at_limit(claimed("l", "c", 0).await?.0)?;
        let at_limit_rows = engine.rows_read();
        let mut idle_writes = writes(claimed("g", "c", 0).await?.0);
        let (ran, head) = claimed("o", "c", 1).await?;
        let ordered = ran.len();
        let ahead = head.ahead.len();
        // The group is leased: another consumer's claim finds nothing.
        idle_writes.extend(writes(claimed("o", "other", 0).await?.0));
        // The ack hands the consumer the next message read ahead.
        engine.statements();
        let next = head.ahead.first().map(|a| a.seq);
        ack(&head.deliveries[0], next).await?;
        let ordered_ack = engine.statements().len();
        // Its next claim gets that one again, as it holds it.
        let (_, again) = claimed("o", "c", 1).await?;
        if Some(again.deliveries[0].seq) != next || again.deliveries[0].attempt != 1 {
            return Err(fail(format!(
                "the holder's claim got {:?}, not {next:?} at attempt 1",
                again.deliveries
            )));
        }
        engine.statements();
        ack(&again.deliveries[0], None).await?;
        let lone_ack = engine.statements().len();
        Ok(ClaimStatements {
            taking_in,
            taken_in,
            per_key,
            at_limit_rows,
            lone_publish,
            ordered,
            ahead,
            ordered_ack,
            idle_writes,
            lone_ack,
        })
    }

    /// On an engine whose callers drive it: a call polled once with a no-op
    /// waker and then left alone (as the bus polls the calls it runs in the
    /// background) does not keep the turn from the next caller waiting for
    /// it, which is woken when the turn is let go.
    pub async fn a_call_polled_once_does_not_stall_others<B: Backend>(
        engine: &Engine<Counted<B>>,
    ) -> Result<()> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Wake, Waker};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }

        engine.migrate().await?;
        let hold = engine.hold().await;
        let mut left = publish(engine, "t", &["left"])?;
        let _ = left.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        let mut waiting = publish(engine, "t", &["waiting"])?;
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        if waiting
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            return Err(fail("a call ran while the turn was held".into()));
        }
        drop(hold);
        if count.0.load(Ordering::SeqCst) == 0 {
            return Err(fail(
                "the caller waiting for the turn was not woken when it was let go".into(),
            ));
        }
        waiting.await?;
        left.await?;

        // A call so polled that takes the turn, in a transaction that asks
        // to be polled again, runs to its end in that poll instead of
        // keeping the turn while nobody polls it.
        let mut pending = engine.execute(&format!("SELECT '{YIELD}'"));
        if pending
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
        {
            return Err(fail(
                "a call polled with a no-op waker kept the turn in a transaction".into(),
            ));
        }
        Ok(())
    }

    /// A call that fails in the engine, queued between two publishes, is
    /// rolled back alone: both publishes commit, and the transaction ran
    /// again with a savepoint around each call.
    pub async fn a_failing_call_fails_alone<B: Backend>(engine: &Engine<Counted<B>>) -> Result<()> {
        engine.migrate().await?;
        engine.statements();
        let hold = engine.hold().await;
        let before = publish(engine, "x", &["one"])?;
        let failing = engine.execute("INSERT INTO no_such_table VALUES (1)");
        let after = publish(engine, "y", &["two"])?;
        drop(hold);
        let (before, failing, after) = (before.await, failing.await, after.await);
        if failing.is_ok() {
            return Err(fail("a statement on a missing table succeeded".into()));
        }
        let (before, after) = (before?, after?);
        if before.len() != 1 || after.len() != 1 {
            return Err(fail(format!("publishes got {before:?} and {after:?}")));
        }
        let ran = engine.statements();
        if !ran.iter().any(|s| s.starts_with("SAVEPOINT")) {
            return Err(fail(format!("no savepoint in {ran:?}")));
        }
        let stored = engine
            .execute("UPDATE litebus_messages SET payload = payload WHERE topic IN ('x', 'y')")
            .await?;
        if stored != 2 {
            return Err(fail(format!("{stored} messages stored, not 2")));
        }
        Ok(())
    }

    /// A call that panics in the engine (a bug) ends it instead of hanging
    /// it: the call queued beside it gets an error, and later calls get
    /// `Error::Closed`. Whoever drove the transaction (a caller, or the
    /// pump) sees the panic.
    pub async fn a_panic_ends_the_engine<B: Backend>(engine: &Engine<Counted<B>>) -> Result<()> {
        use std::panic::AssertUnwindSafe;
        engine.migrate().await?;
        let hold = engine.hold().await;
        let panicking = engine.execute(&format!("SELECT '{PANIC}'"));
        let beside = publish(engine, "t", &["beside"])?;
        drop(hold);
        let panicked = futures_lite::FutureExt::catch_unwind(AssertUnwindSafe(panicking)).await;
        if matches!(panicked, Ok(Ok(_))) {
            return Err(fail("a panicking call succeeded".into()));
        }
        let beside = beside.await;
        if !matches!(beside, Err(Error::Internal(_))) {
            return Err(fail(format!("the call beside a panic got {beside:?}")));
        }
        let later = publish(engine, "t", &["later"])?.await;
        if !matches!(later, Err(Error::Closed)) {
            return Err(fail(format!("a call after a panic got {later:?}")));
        }
        Ok(())
    }
}
