//! The same work on apalis-sqlite 1.0 (sqlx 0.9, the same engine as
//! litebus-sqlx): enqueue through its `TaskSink`, claim and complete through
//! its workers. Same file pragmas (WAL, `synchronous=NORMAL`, `busy_timeout` 5 s).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apalis_core::backend::TaskSink;
use apalis_core::error::BoxDynError;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use apalis_sqlite::{Config, SqliteStorage};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{Params, Stopwatch};

/// 100 bytes once JSON-encoded (apalis stores JSON).
const PAYLOAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// Jobs completed by the handler since the last reset.
static COMPLETED: AtomicUsize = AtomicUsize::new(0);

async fn complete(job: String) -> Result<(), BoxDynError> {
    std::hint::black_box(job);
    COMPLETED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn storage(path: &Path, batch: usize) -> SqliteStorage<String> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .connect_with(options)
        .await
        .unwrap();
    SqliteStorage::setup(&pool).await.unwrap();
    SqliteStorage::new(&pool).with_config(Config::default().queue("bench").batch_size(batch))
}

/// Enqueues one job per call from `tasks` tasks until the cap or the budget.
pub async fn publish(p: &Params, path: &Path, tasks: usize) -> f64 {
    let backend = storage(path, 10).await;
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let clock = Stopwatch::start();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (mut backend, done, budget, cap) = (backend.clone(), done.clone(), p.budget, p.cap);
            tokio::spawn(async move {
                while done.load(Ordering::Relaxed) < cap && clock.elapsed() < budget {
                    backend.push(PAYLOAD.to_owned()).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    clock.rate(done.load(Ordering::Relaxed))
}

async fn fill(backend: &mut SqliteStorage<String>, count: usize, batch: usize) {
    let mut left = count;
    while left > 0 {
        let take = left.min(batch);
        backend
            .push_bulk(vec![PAYLOAD.to_owned(); take])
            .await
            .unwrap();
        left -= take;
    }
}

/// Enqueues bulks of `batch` until the cap or the budget.
pub async fn publish_batches(p: &Params, path: &Path, batch: usize) -> f64 {
    let mut backend = storage(path, 10).await;
    let clock = Stopwatch::start();
    let mut done = 0;
    while done < p.cap && clock.elapsed() < p.budget {
        fill(&mut backend, batch, batch).await;
        done += batch;
    }
    clock.rate(done)
}

/// `workers` workers fetching `batch` jobs at a time complete a backlog of
/// `backlog` (or what the budget allows). `Err` carries a worker's error
/// (e.g. "database is locked").
pub async fn consume(
    p: &Params,
    path: &Path,
    backlog: usize,
    workers: usize,
    batch: usize,
) -> Result<f64, String> {
    let mut backend = storage(path, batch).await;
    fill(&mut backend, backlog, 1000).await;
    COMPLETED.store(0, Ordering::Relaxed);
    let clock = Stopwatch::start();
    let budget = p.budget;
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let worker = WorkerBuilder::new(format!("w{w}"))
                .backend(backend.clone())
                .build(complete);
            tokio::spawn(worker.run_with_ctx(move |ctx: WorkerContext| async move {
                while COMPLETED.load(Ordering::Relaxed) < backlog && clock.elapsed() < budget {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                ctx.stop()
            }))
        })
        .collect();
    let mut failure = None;
    for h in handles {
        if let Err(e) = h.await.unwrap() {
            failure = Some(e.to_string());
        }
    }
    let rate = clock.rate(COMPLETED.load(Ordering::Relaxed));
    failure.map_or(Ok(rate), Err)
}
