//! SQLite storage for [`litebus`] through sqlx.
//!
//! ```no_run
//! use litebus::{Bus, BusOptions, GroupOptions, Message};
//! use litebus_sqlx::SqlxDriver;
//! # #[tokio::main] async fn main() -> litebus::Result<()> {
//! let bus = Bus::open(SqlxDriver::open("app.db").await?, BusOptions::new())?;
//! bus.publish("orders", Message::new("order #1")).await?;
//! let billing = bus.subscribe("orders", "billing", GroupOptions::new()).await?;
//! billing.recv().await?.ack().await?;
//! # Ok(()) }
//! ```
//!
//! Publishing inside an application's own transaction (see [`publish_in`]):
//!
//! ```no_run
//! # use litebus::Message;
//! # async fn outbox(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
//! let mut tx = pool.begin().await?;
//! sqlx::query("UPDATE orders SET status = 'paid' WHERE id = 7").execute(&mut *tx).await?;
//! litebus_sqlx::publish_in(&mut tx, "payments", Message::new("order 7 paid").with_id("pay-7")).await?;
//! tx.commit().await?; // rolled back: nothing is published
//! # Ok(()) }
//! ```
//!
//! - **File databases** use WAL and one writer connection that starts every
//!   write with `BEGIN IMMEDIATE`, so two writers never deadlock on a lock
//!   upgrade, and "database is locked" can only surface once the busy timeout
//!   (5 s by default) has run out. Readers (statistics) use their own
//!   connections. Several processes may share a file.
//! - **`:memory:`** ([`SqlxDriver::memory`]) uses exactly one connection, and
//!   all work is serialized through it: each pooled connection to `:memory:`
//!   would be a separate database.
//! - The SQL itself (schema, migrations, statements) is `litebus-sql`'s, the
//!   same the turso driver runs.
//! - **Runtimes.** With the default `tokio` feature, open the driver inside a
//!   tokio runtime: its futures enter that runtime themselves, so the bus may
//!   then be driven by any executor (a plain `block_on`, smol, another
//!   thread) while the runtime lives. With the `smol` feature (alone, or
//!   beside `tokio`), a driver opened outside any tokio runtime runs sqlx on
//!   async-io and its background tasks on smol's global executor.

mod watch;

#[cfg(feature = "conformance")]
pub mod conformance;
mod conn;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use litebus::driver::{BoxFuture, Capabilities, Driver, Wakeups};
use litebus::{DriverError, Error, Result};
use litebus_sql::{FileWakeups, Handle};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use conn::publish_in;
use conn::{SqlxBackend, map_err};
use litebus_runtime::{Pump, Runtime};
use litebus_sql::Engine;
use watch::Watcher;

pub use litebus_sql::Durability;

/// Options of a file database.
#[derive(Debug, Clone)]
pub struct SqlxOptions {
    durability: Durability,
    busy_timeout: Duration,
    watch_interval: Duration,
}

impl SqlxOptions {
    /// `synchronous=NORMAL`, a 5 s busy timeout, and a 2 ms watch interval.
    pub fn new() -> Self {
        SqlxOptions {
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(5),
            watch_interval: Duration::from_millis(2),
        }
    }

    /// How durable each commit is.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long a statement waits for another connection's lock before it
    /// fails with a retryable error.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
}

impl SqlxOptions {
    /// How often a waiting subscription's driver looks for commits made by
    /// other processes (`PRAGMA data_version`, only while someone waits).
    #[must_use]
    pub fn watch_interval(mut self, interval: Duration) -> Self {
        self.watch_interval = interval.max(Duration::from_micros(100));
        self
    }
}

impl Default for SqlxOptions {
    fn default() -> Self {
        SqlxOptions::new()
    }
}

/// A litebus [`Driver`] on SQLite through sqlx. Clones share the
/// connections, and the store closes when every clone that was not dropped
/// has been closed. Every driver on one file in this process wakes the
/// subscriptions of the others at once; other processes' commits are seen
/// by polling `PRAGMA data_version` while someone waits.
#[derive(Debug, Clone)]
pub struct SqlxDriver {
    engine: Engine<SqlxBackend>,
    /// The task that runs the engine.
    pump: Pump,
    writer_pool: SqlitePool,
    watcher: Option<Watcher>,
    memory: bool,
    runtime: Runtime,
    handle: Handle,
    wakeups: Wakeups,
    /// Keeps this file's entry among the files open in this process.
    _file: Option<Arc<FileWakeups>>,
}

fn open_error(path: &Path, e: &sqlx::Error) -> Error {
    match map_err(e) {
        Error::Driver(_) => {
            DriverError::fatal(format!("cannot open {}: {e}", path.display())).into()
        }
        other => other,
    }
}

impl SqlxDriver {
    /// Opens (creating if needed) the database file at `path` with default
    /// options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        SqlxDriver::open_with(path, SqlxOptions::new()).await
    }

    /// Opens (creating if needed) the database file at `path`.
    pub async fn open_with(path: impl AsRef<Path>, options: SqlxOptions) -> Result<Self> {
        let runtime = Runtime::current()?;
        let path = path.as_ref();
        if path.is_dir() {
            return Err(DriverError::fatal(format!(
                "cannot open {}: it is a directory",
                path.display()
            ))
            .into());
        }
        // A damaged file is refused before anything writes to it.
        litebus_sql::check_file(path)?;
        let file = litebus_sql::file_wakeups(path).await;
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(options.busy_timeout);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.busy_timeout.max(Duration::from_secs(30)))
            .connect_with(connect.clone())
            .await
            .map_err(|e| open_error(path, &e))?;
        let (engine, pump) = start(&runtime, writer.clone(), file.wakeups());
        let driver = SqlxDriver {
            engine,
            pump,
            writer_pool: writer.clone(),
            watcher: Some(Watcher::new(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(connect.read_only(true)),
                Some(writer.clone()),
                options.watch_interval,
                runtime.clone(),
            )),
            memory: false,
            runtime,
            handle: Handle::new(),
            wakeups: file.wakeups().clone(),
            _file: Some(file),
        };
        driver.migrate().await.map_err(|e| match e {
            Error::Driver(d) => {
                DriverError::fatal(format!("cannot open {}: {d}", path.display())).into()
            }
            other => other,
        })?;
        Ok(driver)
    }

    /// A fresh in-memory database on one connection. It lives as long as a
    /// clone of this driver does.
    pub async fn memory() -> Result<Self> {
        let runtime = Runtime::current()?;
        let connect = SqliteConnectOptions::from_str("sqlite::memory:").map_err(|e| map_err(&e))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect)
            .await
            .map_err(|e| map_err(&e))?;
        let wakeups = Wakeups::new();
        let (engine, pump) = start(&runtime, pool.clone(), &wakeups);
        let driver = SqlxDriver {
            engine,
            pump,
            writer_pool: pool,
            watcher: None,
            memory: true,
            runtime,
            handle: Handle::new(),
            wakeups,
            _file: None,
        };
        driver.migrate().await?;
        Ok(driver)
    }

    /// Uses an application's own pool for everything (its connections must
    /// all reach the same database). The litebus tables are created in it if
    /// needed.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        let runtime = Runtime::current()?;
        // An in-memory (or temporary) database has no file.
        let file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&pool)
                .await
                .map_err(|e| map_err(&e))?;
        let memory = file.is_empty();
        let file = if memory {
            None
        } else {
            Some(litebus_sql::file_wakeups(Path::new(&file)).await)
        };
        let wakeups = file
            .as_ref()
            .map_or_else(Wakeups::new, |file| file.wakeups().clone());
        let (engine, pump) = start(&runtime, pool.clone(), &wakeups);
        let driver = SqlxDriver {
            engine,
            pump,
            watcher: (!memory).then(|| {
                let connect = (*pool.connect_options()).clone();
                Watcher::new(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_lazy_with(connect),
                    None,
                    SqlxOptions::new().watch_interval,
                    runtime.clone(),
                )
            }),
            writer_pool: pool,
            memory,
            runtime,
            handle: Handle::new(),
            wakeups,
            _file: file,
        };
        driver.migrate().await?;
        Ok(driver)
    }

    /// The pool writes go through: the one to publish from SQL with
    /// [`publish_in`].
    pub fn pool(&self) -> &SqlitePool {
        &self.writer_pool
    }

    async fn migrate(&self) -> Result<()> {
        self.engine.migrate().await
    }

    /// Stops taking calls and waits until the engine has run those queued.
    async fn shut_down(&self) {
        self.engine.close().await;
        self.pump.join().await;
    }
}

/// The engine on `pool`, and the task on `runtime` that runs it (sqlx's
/// futures need its runtime, so callers do not drive it themselves).
fn start(runtime: &Runtime, pool: SqlitePool, wakeups: &Wakeups) -> (Engine<SqlxBackend>, Pump) {
    let engine = Engine::pumped(SqlxBackend { pool }, wakeups.clone());
    let pump = Pump::spawn(runtime, Box::pin(engine.clone().pump()));
    (engine, pump)
}

impl Driver for SqlxDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .durable(!self.memory)
            .multi_process(!self.memory)
            .sql_publish(true)
    }

    litebus_sql::engine_calls!(engine);

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        self.runtime.run(async move {
            // Releases of dropped subscriptions land before anything closes.
            self.runtime.join_background().await;
            // The store closes with its last handle; an in-memory database
            // lives as long as a clone of the driver does.
            if !self.handle.close() || self.memory {
                return Ok(());
            }
            self.shut_down().await;
            if let Some(watcher) = &self.watcher {
                watcher.close().await;
            }
            // Everything committed moves into the main file and the log is
            // emptied, so the file alone holds the store. (SQLite does this
            // itself only when the last connection to the file closes.)
            // Another process still reading may keep part of the log: that
            // is not an error, its own close checkpoints.
            let checkpoint = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.writer_pool)
                .await;
            self.writer_pool.close().await;
            match checkpoint {
                Err(e) if !map_err(&e).is_retryable() => Err(map_err(&e)),
                _ => Ok(()),
            }
        })
    }

    fn watch_external(&self) -> Option<BoxFuture<'static, ()>> {
        // Claims kept for a consumer whose earlier claim was abandoned wake
        // it as another process's commit does.
        let kept = self.engine.kept();
        Some(match &self.watcher {
            Some(watcher) => Box::pin(futures_lite::future::or(watcher.wait(), kept)),
            None => Box::pin(kept),
        })
    }

    fn wakeups(&self) -> Option<Wakeups> {
        Some(self.wakeups.clone())
    }

    fn spawn_background(&self, task: BoxFuture<'static, ()>) -> Option<BoxFuture<'static, ()>> {
        self.runtime.spawn(task);
        None
    }
}

#[cfg(test)]
mod tests {
    use litebus_sql::Engine;
    use litebus_sql::engine::checks::{self, Counted};
    use sqlx::sqlite::SqlitePoolOptions;

    use crate::conn::SqlxBackend;

    async fn counted() -> Engine<Counted<SqlxBackend>> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let engine = Engine::pumped(
            Counted::new(SqlxBackend { pool }),
            litebus::driver::Wakeups::new(),
        );
        tokio::spawn(engine.clone().pump());
        engine
    }

    #[tokio::test]
    async fn calls_queued_together_share_statements() {
        let engine = counted().await;
        let (published, claim, acked) = checks::shared_statements(&engine).await.unwrap();
        eprintln!("statements: four publishes {published}, a claim {claim}, four acks {acked}");
        // BEGIN, one duplicate check, one insert, COMMIT.
        assert!(published <= 4, "four publishes took {published} statements");
        // One delete, atomic by itself: no transaction around it.
        assert!(acked <= 1, "four acks took {acked} statements");
    }

    #[tokio::test]
    async fn a_prune_step_stays_within_its_statement_budget() {
        let engine = counted().await;
        let (without, with) = checks::prune_statements(&engine).await.unwrap();
        eprintln!("prune statements: without retention {without}, with {with}");
        assert_eq!(without, 1, "one SELECT, no transaction");
        assert!(with <= 8, "a prune step took {with} statements");
    }

    #[tokio::test]
    async fn a_failing_call_is_rolled_back_alone() {
        let engine = counted().await;
        checks::a_failing_call_fails_alone(&engine).await.unwrap();
    }

    #[tokio::test]
    async fn a_panic_ends_the_engine() {
        let engine = counted().await;
        checks::a_panic_ends_the_engine(&engine).await.unwrap();
    }

    #[tokio::test]
    async fn claims_stay_within_their_statement_budget() {
        let engine = counted().await;
        let n = checks::claim_statements(&engine).await.unwrap();
        eprintln!("claim statements: {n:?}");
        // BEGIN, the group with its candidates (none yet), the take-in,
        // the cursor, the candidates, the lease, COMMIT.
        assert!(n.taking_in <= 7, "{n:?}");
        // BEGIN, the group with its candidates, the lease, COMMIT.
        assert!(n.taken_in <= 4, "{n:?}");
        assert!(n.per_key <= 4, "{n:?}");
        // The group row and when a lease ends: no candidates.
        assert!(n.at_limit_rows <= 2, "{n:?}");
        // BEGIN, the group with its next messages, the lease of the
        // group, COMMIT.
        assert!(n.ordered <= 4, "{n:?}");
        assert_eq!(n.ahead, 3, "an ordered claim of 4 reads 3 ahead: {n:?}");
        assert_eq!(
            n.ordered_ack, 1,
            "an ordered ack that takes the next is one statement: {n:?}"
        );
        assert!(n.idle_writes.is_empty(), "{n:?}");
        assert_eq!(n.lone_ack, 1, "an ack alone is one statement: {n:?}");
        // one INSERT … RETURNING.
        assert_eq!(n.lone_publish, 1, "a publish alone: {n:?}");
    }
}
