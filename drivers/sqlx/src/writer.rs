//! The writer: one task that owns the write connection and runs every write
//! step in the order the driver was called, many steps to a transaction.
//!
//! - **Order.** Steps run in call order, so a release started by dropping a
//!   subscription lands before any later ack of the same message.
//! - **Merged statements.** Consecutive acks become one `DELETE`, and
//!   consecutive publishes to a topic one dedupe query and one multi-row
//!   `INSERT`.
//! - **Group commit.** Whatever steps wait when a transaction starts share
//!   it (up to [`MAX_BATCH`]): one `BEGIN IMMEDIATE`/`COMMIT` for many
//!   publishes, claims and acks. A step's caller hears back only after the
//!   commit, so a returned `publish` is durable. A publish that finds
//!   nothing else waiting (of at most `ONE_STATEMENT_APPEND` messages) is
//!   one `INSERT` that commits by itself; if the topic holds one of its
//!   ids, it runs again in a transaction with its duplicate check.
//! - **Isolation.** A step that fails with a "clean" error (lease lost,
//!   conflict, invalid options: the shared steps check before they write)
//!   fails alone. A step that fails in the engine rolls the whole batch back
//!   and every step of it gets an error.
//! - **Cancel safety.** Steps run on the writer task, so a caller that stops
//!   waiting cannot cut a transaction in half. A claim whose caller left
//!   before it ran is skipped; one whose caller left after is kept for that
//!   consumer's next claim (see `unread`).

use std::sync::{Arc, Mutex};

use litebus::driver::{Append, BoxFuture, Claim, ClaimOutcome, DeadLettered};
use litebus::{DriverError, Error, Message, Outcome, Result};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::oneshot;

use crate::conn::{SqlxConn, map_err};
use crate::runtime::{Runtime, Task};
use crate::unread::{Answer, ConsumerKey, Unread};

/// The most steps sharing one transaction.
const MAX_BATCH: usize = 256;

/// A step as the writer runs it.
trait Job: Send {
    /// Does the work on the connection.
    fn run(self: Box<Self>, conn: &mut SqliteConnection) -> BoxFuture<'_, Ran>;
    /// Tells the caller the step could not run.
    fn fail(self: Box<Self>, failure: &Failure);
}

/// Tells a caller its result, given how the transaction ended.
type Finish = Box<dyn FnOnce(std::result::Result<(), &Failure>) + Send>;

/// A step that has run, waiting for its transaction's end.
struct Ran {
    /// It failed in a way that may have left partial writes.
    dirty: bool,
    /// Tells the caller, given how the transaction ended.
    finish: Finish,
}

struct Queued<F, T> {
    step: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> Job for Queued<F, T>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut SqliteConnection) -> BoxFuture<'_, Ran> {
        let Queued { step, reply } = *self;
        Box::pin(async move {
            let result = step(conn).await;
            Ran {
                dirty: result.as_ref().is_err_and(|e| !is_clean(e)),
                finish: Box::new(move |ended| {
                    let _ = reply.send(match (result, ended) {
                        (Err(e), _) => Err(e),
                        (Ok(_), Err(failure)) => Err(failure.to_error()),
                        (Ok(value), Ok(())) => Ok(value),
                    });
                }),
            }
        })
    }

    fn fail(self: Box<Self>, failure: &Failure) {
        let _ = self.reply.send(Err(failure.to_error()));
    }
}

/// Why a transaction did not commit, copied to each of its steps.
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    retryable: bool,
}

impl Failure {
    fn of(e: &Error) -> Self {
        Failure {
            message: e.to_string(),
            retryable: e.is_retryable() || !matches!(e, Error::Driver(_)),
        }
    }

    fn to_error(&self) -> Error {
        let message = format!("transaction rolled back: {}", self.message);
        if self.retryable {
            DriverError::retryable(message).into()
        } else {
            DriverError::fatal(message).into()
        }
    }
}

/// Errors after which a step is known to have written nothing.
fn is_clean(e: &Error) -> bool {
    matches!(
        e,
        Error::LeaseLost
            | Error::Conflict { .. }
            | Error::InvalidOptions(_)
            | Error::UnknownGroup { .. }
            | Error::InvalidName { .. }
    )
}

/// An ack waiting for the writer; consecutive acks share one statement.
struct Ack {
    topic: String,
    group: String,
    seq: u64,
    attempt: u32,
    reply: oneshot::Sender<Result<Option<DeadLettered>>>,
}

/// A publish waiting for the writer; consecutive publishes to one topic
/// share one dedupe query and one multi-row insert.
struct Publish {
    topic: String,
    messages: Vec<Arc<Message>>,
    reply: oneshot::Sender<Result<Vec<Outcome>>>,
}

/// A claim waiting for the writer.
struct ClaimJob {
    key: ConsumerKey,
    now: litebus::Timestamp,
    lease_until: litebus::Timestamp,
    max: u32,
    reply: oneshot::Sender<Result<Answer>>,
    unread: Arc<Unread>,
}

/// What the writer queue holds.
enum Item {
    Step(Box<dyn Job>),
    Ack(Ack),
    Publish(Publish),
    Claim(ClaimJob),
}

impl Item {
    fn fail(self, failure: &Failure) {
        match self {
            Item::Step(job) => job.fail(failure),
            Item::Ack(ack) => {
                let _ = ack.reply.send(Err(failure.to_error()));
            }
            Item::Publish(publish) => {
                let _ = publish.reply.send(Err(failure.to_error()));
            }
            Item::Claim(claim) => {
                let _ = claim.reply.send(Err(failure.to_error()));
            }
        }
    }
}

/// The queue into the writer task.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: async_channel::Sender<Item>,
    task: Arc<Mutex<Option<Task>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("queued", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer task on `runtime`, writing through `pool`.
    pub(crate) fn start(runtime: &Runtime, pool: SqlitePool) -> Self {
        let (jobs, queue) = async_channel::unbounded();
        let task = runtime.spawn_untracked(Box::pin(run(pool, queue)));
        Writer {
            jobs,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Queues `step` now (so order follows calls) and waits for its result.
    pub(crate) fn submit<T, F>(&self, step: F) -> BoxFuture<'static, Result<T>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .jobs
            .try_send(Item::Step(Box::new(Queued { step, reply })));
        Box::pin(async move {
            queued.map_err(|_| Error::Closed)?;
            answer
                .await
                .map_err(|_| DriverError::fatal("the writer stopped before answering"))?
        })
    }

    /// Queues an ack now and waits for its result. Acks queued one after
    /// the other run as one statement.
    pub(crate) fn ack(
        &self,
        topic: String,
        group: String,
        seq: u64,
        attempt: u32,
    ) -> BoxFuture<'static, Result<Option<DeadLettered>>> {
        let (reply, answer) = oneshot::channel();
        let ack = Ack {
            topic,
            group,
            seq,
            attempt,
            reply,
        };
        self.queue(Item::Ack(ack), answer)
    }

    /// Queues a publish (without an expected last seq) now and waits for its
    /// outcomes. Publishes queued one after the other run as one insert per
    /// topic.
    pub(crate) fn publish(
        &self,
        topic: String,
        messages: Vec<Arc<Message>>,
    ) -> BoxFuture<'static, Result<Vec<Outcome>>> {
        let (reply, answer) = oneshot::channel();
        let publish = Publish {
            topic,
            messages,
            reply,
        };
        self.queue(Item::Publish(publish), answer)
    }

    /// Queues a claim now and waits for its outcome. If the caller stops
    /// waiting, the claim does not run, or what it leased is kept in
    /// `unread` for the consumer's next claim.
    pub(crate) fn claim(
        &self,
        claim: Claim<'_>,
        unread: Arc<Unread>,
    ) -> BoxFuture<'static, Result<ClaimOutcome>> {
        let (reply, answer) = oneshot::channel();
        let job = ClaimJob {
            key: (
                claim.topic.to_owned(),
                claim.group.to_owned(),
                claim.consumer.to_owned(),
            ),
            now: claim.now,
            lease_until: claim.lease_until,
            max: claim.max,
            reply,
            unread,
        };
        let answer = self.queue(Item::Claim(job), answer);
        Box::pin(async move { answer.await.map(Answer::open) })
    }

    /// Queues `item` now, so that order follows calls, and waits for
    /// `answer`.
    fn queue<T: Send + 'static>(
        &self,
        item: Item,
        answer: oneshot::Receiver<Result<T>>,
    ) -> BoxFuture<'static, Result<T>> {
        let queued = self.jobs.try_send(item);
        Box::pin(async move {
            queued.map_err(|_| Error::Closed)?;
            answer
                .await
                .map_err(|_| DriverError::fatal("the writer stopped before answering"))?
        })
    }

    /// Stops taking steps and waits until the writer has finished those
    /// queued.
    pub(crate) async fn shutdown(&self) {
        self.jobs.close();
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.join().await;
        }
    }
}

async fn run(pool: SqlitePool, queue: async_channel::Receiver<Item>) {
    while let Ok(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let [Item::Publish(lone)] = batch.as_slice()
            && lone.messages.len() <= litebus_sql::ONE_STATEMENT_APPEND
            && let Some(Item::Publish(lone)) = batch.pop()
        {
            match run_lone_publish(&pool, lone).await {
                Ok(()) => continue,
                Err(lone) => batch.push(Item::Publish(lone)),
            }
        }
        run_batch(&pool, batch).await;
    }
}

/// A publish with nothing else waiting: one `INSERT` that commits by
/// itself, atomically (one statement instead of `BEGIN`, a duplicate check,
/// the `INSERT` and `COMMIT`). When the topic already holds one of its ids
/// the `INSERT` stores nothing and the publish is given back, to run in a
/// transaction with its duplicate check.
async fn run_lone_publish(pool: &SqlitePool, publish: Publish) -> std::result::Result<(), Publish> {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            let _ = publish.reply.send(Err(map_err(&e)));
            return Ok(());
        }
    };
    let append = Append {
        topic: &publish.topic,
        messages: &publish.messages,
        expected_last: None,
    };
    match litebus_sql::insert_new(&mut SqlxConn::new(&mut conn), append).await {
        Err(e) if litebus_sql::is_known_id(&e) => Err(publish),
        result => {
            let _ = publish.reply.send(result);
            Ok(())
        }
    }
}

async fn run_batch(pool: &SqlitePool, batch: Vec<Item>) {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return fail_all(batch, &Failure::of(&map_err(&e))),
    };
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, &Failure::of(&map_err(&e))),
    };
    let mut ran = Vec::with_capacity(batch.len());
    let mut items = batch.into_iter().peekable();
    let mut lost = None;
    while let Some(item) = items.next() {
        let dirty = match item {
            Item::Step(job) => {
                let step = job.run(&mut tx).await;
                let dirty = step.dirty;
                ran.push(step);
                dirty
            }
            Item::Ack(first) => {
                // The acks that follow, up to the next other step, in one go.
                let mut acks = vec![first];
                while let Some(Item::Ack(_)) = items.peek() {
                    if let Some(Item::Ack(ack)) = items.next() {
                        acks.push(ack);
                    }
                }
                run_acks(&mut tx, acks, &mut ran).await
            }
            Item::Claim(job) => run_claim(&mut tx, job, &mut ran).await,
            Item::Publish(first) => {
                let mut publishes = vec![first];
                while let Some(Item::Publish(_)) = items.peek() {
                    if let Some(Item::Publish(publish)) = items.next() {
                        publishes.push(publish);
                    }
                }
                run_publishes(&mut tx, publishes, &mut ran).await
            }
        };
        if dirty {
            lost = Some(Failure {
                message: "another step of the same transaction failed".into(),
                retryable: true,
            });
            break;
        }
    }
    let ended = match lost {
        Some(failure) => {
            let _ = tx.rollback().await;
            fail_all(items.collect(), &failure);
            Err(failure)
        }
        None => tx.commit().await.map_err(|e| Failure::of(&map_err(&e))),
    };
    for step in ran {
        (step.finish)(ended.as_ref().copied());
    }
}

/// Runs a claim unless its caller has gone; true if the engine failed.
async fn run_claim(conn: &mut SqliteConnection, job: ClaimJob, ran: &mut Vec<Ran>) -> bool {
    if job.reply.is_closed() {
        // Nobody would read what it leased.
        return false;
    }
    let ClaimJob {
        key,
        now,
        lease_until,
        max,
        reply,
        unread,
    } = job;
    let claim = Claim {
        topic: &key.0,
        group: &key.1,
        consumer: &key.2,
        now,
        lease_until,
        max,
    };
    let result = litebus_sql::claim(&mut SqlxConn::new(conn), claim).await;
    let dirty = result.as_ref().is_err_and(|e| !is_clean(e));
    ran.push(Ran {
        dirty,
        finish: Box::new(move |ended| {
            // An answer sent to a caller that has gone is dropped unopened,
            // which keeps it for the consumer's next claim.
            let _ = reply.send(match (result, ended) {
                (Err(e), _) => Err(e),
                (Ok(_), Err(failure)) => Err(failure.to_error()),
                (Ok(outcome), Ok(())) => Ok(Answer::new(outcome, key, unread)),
            });
        }),
    });
    dirty
}

/// Runs acks grouped by topic and group, one statement per group; true if
/// the engine failed.
async fn run_acks(conn: &mut SqliteConnection, acks: Vec<Ack>, ran: &mut Vec<Ran>) -> bool {
    let mut by_group: Vec<((String, String), Vec<Ack>)> = Vec::new();
    for ack in acks {
        let key = (ack.topic.clone(), ack.group.clone());
        match by_group.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(ack),
            None => by_group.push((key, vec![ack])),
        }
    }
    let mut failed = false;
    for ((topic, group), acks) in by_group {
        let deliveries: Vec<(u64, u32)> = acks.iter().map(|a| (a.seq, a.attempt)).collect();
        let result = if failed {
            Err(DriverError::retryable("another step of the same transaction failed").into())
        } else {
            litebus_sql::ack_many(&mut SqlxConn::new(conn), &topic, &group, &deliveries).await
        };
        match result {
            Ok(current) => {
                for (ack, current) in acks.into_iter().zip(current) {
                    let reply = ack.reply;
                    ran.push(Ran {
                        dirty: false,
                        finish: Box::new(move |ended| {
                            let _ = reply.send(match (current, ended) {
                                (false, _) => Err(Error::LeaseLost),
                                (true, Err(failure)) => Err(failure.to_error()),
                                (true, Ok(())) => Ok(None),
                            });
                        }),
                    });
                }
            }
            Err(e) => {
                failed = true;
                let failure = Failure::of(&e);
                for ack in acks {
                    let _ = ack.reply.send(Err(failure.to_error()));
                }
            }
        }
    }
    failed
}

/// Runs publishes grouped by topic, each group as one append; true if the
/// engine failed.
async fn run_publishes(
    conn: &mut SqliteConnection,
    publishes: Vec<Publish>,
    ran: &mut Vec<Ran>,
) -> bool {
    let mut by_topic: Vec<(String, Vec<Publish>)> = Vec::new();
    for publish in publishes {
        match by_topic.iter_mut().find(|(t, _)| *t == publish.topic) {
            Some((_, list)) => list.push(publish),
            None => by_topic.push((publish.topic.clone(), vec![publish])),
        }
    }
    let mut failed = false;
    for (topic, publishes) in by_topic {
        let all: Vec<Arc<Message>> = publishes
            .iter()
            .flat_map(|p| p.messages.iter().cloned())
            .collect();
        let result = if failed {
            Err(DriverError::retryable("another step of the same transaction failed").into())
        } else {
            let append = Append {
                topic: &topic,
                messages: &all,
                expected_last: None,
            };
            litebus_sql::append(&mut SqlxConn::new(conn), append).await
        };
        match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for publish in publishes {
                    let mine: Vec<Outcome> =
                        outcomes.by_ref().take(publish.messages.len()).collect();
                    let reply = publish.reply;
                    ran.push(Ran {
                        dirty: false,
                        finish: Box::new(move |ended| {
                            let _ = reply.send(match ended {
                                Ok(()) => Ok(mine),
                                Err(failure) => Err(failure.to_error()),
                            });
                        }),
                    });
                }
            }
            Err(e) => {
                failed = true;
                let failure = Failure::of(&e);
                for publish in publishes {
                    let _ = publish.reply.send(Err(failure.to_error()));
                }
            }
        }
    }
    failed
}

fn fail_all(batch: Vec<Item>, failure: &Failure) {
    for item in batch {
        item.fail(failure);
    }
}
