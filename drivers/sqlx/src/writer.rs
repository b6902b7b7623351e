//! The writer: one task that owns the write connection and runs every write
//! step in the order the driver was called, many steps to a transaction.
//!
//! - **Order.** Steps run in call order, so a release started by dropping a
//!   subscription lands before any later ack of the same message.
//! - **Group commit.** Whatever steps wait when a transaction starts share
//!   it (up to [`MAX_BATCH`]): one `BEGIN IMMEDIATE`/`COMMIT` for many
//!   publishes, claims and acks. A step's caller hears back only after the
//!   commit, so a returned `publish` is durable.
//! - **Isolation.** A step that fails with a "clean" error (lease lost,
//!   conflict, invalid options: the shared steps check before they write)
//!   fails alone. A step that fails in the engine rolls the whole batch back
//!   and every step of it gets an error.
//! - **Cancel safety.** Steps run on the writer task, so a caller that stops
//!   waiting cannot cut a transaction in half.

use std::sync::{Arc, Mutex};

use litebus::driver::BoxFuture;
use litebus::{DriverError, Error, Result};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::oneshot;

use crate::conn::map_err;
use crate::runtime::Runtime;

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
            | Error::InvalidName { .. }
    )
}

/// The queue into the writer task.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: async_channel::Sender<Box<dyn Job>>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
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
        let queued = self.jobs.try_send(Box::new(Queued { step, reply }));
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
            let _ = task.await;
        }
    }
}

async fn run(pool: SqlitePool, queue: async_channel::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&pool, batch).await;
    }
}

async fn run_batch(pool: &SqlitePool, batch: Vec<Box<dyn Job>>) {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return fail_all(batch, &Failure::of(&map_err(&e))),
    };
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, &Failure::of(&map_err(&e))),
    };
    let mut ran = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    let mut lost = None;
    for job in jobs.by_ref() {
        let step = job.run(&mut tx).await;
        let dirty = step.dirty;
        ran.push(step);
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
            fail_all(jobs.collect(), &failure);
            Err(failure)
        }
        None => tx.commit().await.map_err(|e| Failure::of(&map_err(&e))),
    };
    for step in ran {
        (step.finish)(ended.as_ref().copied());
    }
}

fn fail_all(batch: Vec<Box<dyn Job>>, failure: &Failure) {
    for job in batch {
        job.fail(failure);
    }
}
