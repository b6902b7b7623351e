//! SQLite storage for [litebus](https://docs.rs/litebus) in pure Rust, through
//! [turso](https://docs.rs/turso) (the Rust rewrite of SQLite formerly called
//! limbo): database files and `:memory:` natively, `:memory:` in the browser.
//!
//! ```
//! # fn main() -> litebus::Result<()> { futures_lite::future::block_on(async {
//! use litebus::{Bus, BusOptions, GroupOptions, Message};
//! use litebus_turso::TursoDriver;
//!
//! let bus = Bus::open(TursoDriver::memory().await?, BusOptions::new())?;
//! bus.publish("orders", Message::new("created")).await?;
//! let sub = bus.subscribe("orders", "billing", GroupOptions::new()).await?;
//! let delivery = sub.recv().await?;
//! delivery.ack().await?;
//! # bus.close().await }) }
//! ```
//!
//! - **No runtime.** turso's futures complete by themselves: the driver runs
//!   under tokio, smol, a plain `block_on` or `wasm-bindgen-futures` alike.
//! - **The same SQL as the sqlx driver.** Schema, migrations and statements
//!   are `litebus-sql`'s; a file written by one driver opens in the other.
//! - **One connection**, run by `litebus-sql`'s commit engine: callers take
//!   turns, and whoever has the turn commits what waits as one transaction
//!   (`BEGIN IMMEDIATE` on files). A transaction whose caller stopped
//!   waiting is driven on by the next caller, never cut in half.
//! - **One process per file.** turso takes an exclusive lock on the database
//!   file and has no `PRAGMA data_version` to notice other writers: a second
//!   process opening the file is refused with an error naming the lock
//!   ([`Capabilities::multi_process`] is `false`). In one process, every
//!   [`TursoDriver::open`] of a file gives a handle of the same store (one
//!   connection, one queue of steps, one set of wake-ups), so several
//!   drivers and buses share the file without ever seeing it locked, and a
//!   commit through one wakes the subscriptions of all. The store closes
//!   when its last handle does.
//! - **Browser.** On wasm32 [`TursoDriver::memory`] reads the time from
//!   JavaScript (`Date.now()`, through litebus's `WasmClock`) instead of
//!   `std::time`, which does not exist there.
//!
//! Not offered (yet): publishing from the application's own SQL, since
//! nothing could wake a waiting subscriber after another connection's commit.

#[cfg(feature = "conformance")]
pub mod conformance;
mod conn;
mod io;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use litebus::driver::{
    Append, BoxFuture, Capabilities, Claim, ClaimOutcome, DeadLettered, DeleteTopic, Driver,
    EnsureGroup, Prune, Read, Redrive, Release, Seek, Settle, TopicDeletion, Wakeups,
};
use litebus::{DriverError, Error, Outcome, Record, Result, Retention, Timestamp, TopicStats};
use litebus_sql::{Engine, Files, Handle, Handles};

use crate::conn::{TursoBackend, map_err};

pub use litebus_sql::Durability;

/// Options of a file database.
#[derive(Debug, Clone, Default)]
pub struct TursoOptions {
    durability: Durability,
}

impl TursoOptions {
    /// The defaults: [`Durability::Normal`].
    #[must_use]
    pub fn new() -> Self {
        TursoOptions::default()
    }

    /// How durable each commit is.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}

/// litebus storage in a turso database. Cheap to clone; clones share the
/// connection, and the store closes when every clone that was not dropped
/// has been closed.
#[derive(Clone)]
pub struct TursoDriver {
    shared: Arc<Shared>,
    handle: Handle,
}

struct Shared {
    /// Keeps the database open as long as the driver lives.
    _db: turso::Database,
    engine: Engine<TursoBackend>,
    memory: bool,
    /// Of a file: the durability its connection has now.
    durability: Mutex<Option<Durability>>,
    handles: Handles,
    wakeups: Wakeups,
    /// The last handle closed: the store is closed.
    closed: AtomicBool,
}

/// The files open in this process: a second open of a file joins the store
/// already open on it. (turso locks a file for one `Database`: a second one
/// on it fails with "database is locked".)
#[cfg(not(target_arch = "wasm32"))]
static FILES: Files<Shared> = Files::new();

fn files() -> &'static Files<Shared> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        &FILES
    }
    // The engine's futures are not `Send` on wasm32 (nor need to be: there
    // are no threads), so a store cannot sit in a `static` there; each
    // thread keeps its own registry, made once.
    #[cfg(target_arch = "wasm32")]
    {
        thread_local! {
            static FILES: &'static Files<Shared> = Box::leak(Box::new(Files::new()));
        }
        FILES.with(|files| *files)
    }
}

impl std::fmt::Debug for TursoDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TursoDriver")
            .field("memory", &self.shared.memory)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

fn cannot_open(path: &Path, e: Error) -> Error {
    match e {
        Error::Driver(d) => {
            DriverError::fatal(format!("cannot open {}: {d}", path.display())).into()
        }
        other => other,
    }
}

/// Runs a call on the store's engine unless this handle is closed.
macro_rules! call {
    ($driver:expr, |$engine:ident| $call:expr) => {{
        let driver = $driver;
        if driver.is_closed() {
            return Box::pin(async { Err(Error::Closed) });
        }
        let $engine = &driver.shared.engine;
        $call
    }};
}

impl TursoDriver {
    /// Opens (creating if needed) the database file at `path` with default
    /// options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        TursoDriver::open_with(path, TursoOptions::new()).await
    }

    /// Opens (creating if needed) the database file at `path`. If this
    /// process has the file open already, the new driver is another handle of
    /// that store; its durability becomes the stronger of the two.
    pub async fn open_with(path: impl AsRef<Path>, options: TursoOptions) -> Result<Self> {
        let path = path.as_ref();
        let durability = options.durability;
        let shared = files()
            .open(
                path,
                |shared| !shared.closed.load(Ordering::Acquire),
                || async { Ok::<_, Error>(TursoDriver::open_file(path, options).await?.shared) },
            )
            .await?;
        let driver = TursoDriver {
            handle: shared.handles.open(),
            shared,
        };
        driver.at_least(durability).await?;
        Ok(driver)
    }

    /// Makes commits at least as durable as `durability`.
    async fn at_least(&self, durability: Durability) -> Result<()> {
        let now = *self
            .shared
            .durability
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if durability == Durability::Full && now != Some(Durability::Full) {
            self.shared.engine.plain(durability.pragma()).await?;
            *self
                .shared
                .durability
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(durability);
        }
        Ok(())
    }

    async fn open_file(path: &Path, options: TursoOptions) -> Result<Self> {
        if path.is_dir() {
            return Err(DriverError::fatal(format!(
                "cannot open {}: it is a directory",
                path.display()
            ))
            .into());
        }
        // A damaged file is refused before anything writes to it.
        litebus_sql::check_file(path)?;
        let name = path.to_str().ok_or_else(|| {
            Error::InvalidOptions(format!("{} is not valid UTF-8", path.display()))
        })?;
        let db = turso::Builder::new_local(name)
            .build()
            .await
            .map_err(|e| cannot_open(path, map_err(e)))?;
        TursoDriver::start(db, Some(options.durability))
            .await
            .map_err(|e| cannot_open(path, e))
    }

    /// Opens (creating if needed) the database at `path` through an I/O of
    /// the application's own: turso's [`IO`](turso::core::IO) trait, which
    /// decides where the bytes of `path` and its `-wal` live (a browser's
    /// private file system, a test I/O that loses power). Nothing is read
    /// from the host's file system.
    pub async fn open_with_io(
        path: &str,
        io: Arc<dyn turso::core::IO>,
        options: TursoOptions,
    ) -> Result<Self> {
        let db = turso::Builder::new_local(path)
            .with_io_impl(io)
            .build()
            .await
            .map_err(map_err)?;
        TursoDriver::start(db, Some(options.durability)).await
    }

    /// A fresh in-memory database. It lives as long as a clone of this
    /// driver does.
    pub async fn memory() -> Result<Self> {
        let db = turso::Builder::new_local(":memory:")
            .with_io_impl(Arc::new(io::MemoryClockIo::new()))
            .build()
            .await
            .map_err(map_err)?;
        TursoDriver::start(db, None).await
    }

    /// `durability`: of a file; `None` for memory.
    async fn start(db: turso::Database, durability: Option<Durability>) -> Result<Self> {
        let memory = durability.is_none();
        let conn = db.connect().map_err(map_err)?;
        // Sorts and temporary b-trees in memory: with the default, turso
        // makes a directory and a file for its temp database, again and
        // again on the hot path (measured: 143 `mkdir` calls in 200 claims).
        conn.execute("PRAGMA temp_store = MEMORY", ())
            .await
            .map_err(map_err)?;
        if let Some(durability) = durability {
            conn.execute(durability.pragma(), ())
                .await
                .map_err(map_err)?;
        }
        let handles = Handles::new();
        let wakeups = Wakeups::new();
        let driver = TursoDriver {
            handle: handles.open(),
            shared: Arc::new(Shared {
                _db: db,
                engine: Engine::new(
                    TursoBackend {
                        conn,
                        // A file may have other connections (other drivers in
                        // this process): take the write lock up front so that
                        // two transactions never deadlock upgrading a read lock.
                        // An in-memory database has this one connection, so a
                        // plain `BEGIN` is as safe, and it is the only form
                        // turso runs on wasm32: `BEGIN IMMEDIATE` also begins a
                        // write on the temp database, whose lazy creation reads
                        // `std::time::Instant`, which panics there.
                        begin: if memory { "BEGIN" } else { "BEGIN IMMEDIATE" },
                    },
                    wakeups.clone(),
                ),
                memory,
                durability: Mutex::new(durability),
                handles,
                wakeups,
                closed: AtomicBool::new(false),
            }),
        };
        driver.shared.engine.migrate().await?;
        Ok(driver)
    }
    /// Runs one statement of plain SQL on the driver's connection, in a
    /// transaction of its own that takes its turn with the driver's steps:
    /// how the tests write rows as an application's SQL would. (Not yet an
    /// API: a subscription waiting on a bus would not hear of such a write.)
    #[doc(hidden)]
    pub async fn execute(&self, sql: &str) -> Result<u64> {
        self.check_open()?;
        self.shared.engine.execute(sql).await
    }

    fn is_closed(&self) -> bool {
        self.handle.is_closed() || self.shared.closed.load(Ordering::Acquire)
    }

    /// Refuses work once this handle (or the store) is closed.
    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl Driver for TursoDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.durable(!self.shared.memory)
    }

    fn append<'a>(&'a self, append: Append<'a>) -> BoxFuture<'a, Result<Vec<Outcome>>> {
        call!(self, |engine| engine.append(append))
    }

    fn ensure_group<'a>(&'a self, group: EnsureGroup<'a>) -> BoxFuture<'a, Result<()>> {
        call!(self, |engine| engine.ensure_group(group))
    }

    fn claim<'a>(&'a self, claim: Claim<'a>) -> BoxFuture<'a, Result<ClaimOutcome>> {
        call!(self, |engine| engine.claim(claim))
    }

    fn settle<'a>(&'a self, settle: Settle<'a>) -> BoxFuture<'a, Result<Option<DeadLettered>>> {
        call!(self, |engine| engine.settle(settle))
    }

    fn release<'a>(&'a self, release: Release<'a>) -> BoxFuture<'a, Result<Vec<DeadLettered>>> {
        call!(self, |engine| engine.release(release))
    }

    fn seek<'a>(&'a self, seek: Seek<'a>) -> BoxFuture<'a, Result<()>> {
        call!(self, |engine| engine.seek(seek))
    }

    fn redrive<'a>(&'a self, redrive: Redrive<'a>) -> BoxFuture<'a, Result<Vec<u64>>> {
        call!(self, |engine| engine.redrive(redrive))
    }

    fn delete_group<'a>(&'a self, topic: &'a str, group: &'a str) -> BoxFuture<'a, Result<bool>> {
        call!(self, |engine| engine.delete_group(topic, group))
    }

    fn topics(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        call!(self, |engine| engine.topics())
    }

    fn delete_topic<'a>(&'a self, step: DeleteTopic<'a>) -> BoxFuture<'a, Result<TopicDeletion>> {
        call!(self, |engine| engine.delete_topic(step))
    }

    fn set_retention<'a>(
        &'a self,
        topic: &'a str,
        retention: Retention,
    ) -> BoxFuture<'a, Result<()>> {
        call!(self, |engine| engine.set_retention(topic, retention))
    }

    fn prune<'a>(&'a self, prune: Prune<'a>) -> BoxFuture<'a, Result<u64>> {
        call!(self, |engine| engine.prune(prune))
    }

    fn read<'a>(&'a self, read: Read<'a>) -> BoxFuture<'a, Result<Vec<Record>>> {
        call!(self, |engine| engine.read(read))
    }

    fn stats<'a>(&'a self, topic: &'a str, now: Timestamp) -> BoxFuture<'a, Result<TopicStats>> {
        call!(self, |engine| engine.stats(topic, now))
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            // The store closes with its last handle; an in-memory database
            // lives as long as a clone of the driver does.
            if !self.handle.close()
                || self.shared.memory
                || self.shared.closed.swap(true, Ordering::AcqRel)
            {
                return Ok(());
            }
            // Everything committed moves into the main file, and the log
            // is emptied, so the file alone holds the store.
            let checkpoint = self
                .shared
                .engine
                .plain("PRAGMA wal_checkpoint(TRUNCATE)")
                .await;
            self.shared.engine.close().await;
            checkpoint
        })
    }

    fn watch_external(&self) -> Option<BoxFuture<'static, ()>> {
        // A claim whose caller left is kept for its consumer, which then
        // looks again at once.
        Some(Box::pin(self.shared.engine.kept()))
    }

    fn wakeups(&self) -> Option<Wakeups> {
        Some(self.shared.wakeups.clone())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use litebus_sql::Engine;
    use litebus_sql::engine::checks::{self, Counted};

    use crate::conn::TursoBackend;

    async fn counted() -> (turso::Database, Engine<Counted<TursoBackend>>) {
        let db = turso::Builder::new_local(":memory:").build().await.unwrap();
        let conn = db.connect().unwrap();
        let backend = TursoBackend {
            conn,
            begin: "BEGIN",
        };
        (
            db,
            Engine::new(Counted::new(backend), litebus::driver::Wakeups::new()),
        )
    }

    #[test]
    fn calls_queued_together_share_statements() {
        futures_lite::future::block_on(async {
            let (_db, engine) = counted().await;
            let (published, claim, acked) = checks::shared_statements(&engine).await.unwrap();
            // turso reads back inserted seqs instead of `RETURNING` (two
            // statements of ~15 µs against one of ~250 µs), and acks each
            // delivery by primary key.
            eprintln!("statements: four publishes {published}, a claim {claim}, four acks {acked}");
            // BEGIN, one duplicate check, one insert, a look at its first
            // row (its seqs come from the last row id), COMMIT.
            assert!(published <= 5, "four publishes took {published} statements");
            assert!(acked <= 2 + 4, "four acks took {acked} statements");
        });
    }

    #[test]
    fn a_prune_step_stays_within_its_statement_budget() {
        futures_lite::future::block_on(async {
            let (_db, engine) = counted().await;
            let (without, with) = checks::prune_statements(&engine).await.unwrap();
            eprintln!("prune statements: without retention {without}, with {with}");
            assert_eq!(without, 1, "one SELECT, no transaction");
            assert!(with <= 8, "a prune step took {with} statements");
        });
    }

    #[test]
    fn a_failing_call_is_rolled_back_alone() {
        futures_lite::future::block_on(async {
            let (_db, engine) = counted().await;
            checks::a_failing_call_fails_alone(&engine).await.unwrap();
        });
    }

    #[test]
    fn a_call_polled_once_does_not_stall_others() {
        futures_lite::future::block_on(async {
            let (_db, engine) = counted().await;
            checks::a_call_polled_once_does_not_stall_others(&engine)
                .await
                .unwrap();
        });
    }

    #[test]
    fn a_panic_ends_the_engine() {
        futures_lite::future::block_on(async {
            let (_db, engine) = counted().await;
            checks::a_panic_ends_the_engine(&engine).await.unwrap();
        });
    }

    #[test]
    fn claims_stay_within_their_statement_budget() {
        futures_lite::future::block_on(async {
            let (_db, engine) = counted().await;
            let n = checks::claim_statements(&engine).await.unwrap();
            eprintln!("claim statements: {n:?}");
            // As on sqlx; the take-in reads its last seq back instead of
            // `RETURNING`.
            assert!(n.taking_in <= 8, "{n:?}");
            assert!(n.taken_in <= 4, "{n:?}");
            assert!(n.per_key <= 4, "{n:?}");
            assert!(n.at_limit_rows <= 2, "{n:?}");
            assert!(n.ordered <= 4, "{n:?}");
            assert_eq!(n.ahead, 3, "an ordered claim of 4 reads 3 ahead: {n:?}");
            assert_eq!(
                n.ordered_ack, 1,
                "an ordered ack that takes the next is one statement: {n:?}"
            );
            assert!(n.idle_writes.is_empty(), "{n:?}");
            assert_eq!(n.lone_ack, 1, "an ack alone is one statement: {n:?}");
            // One INSERT of eight; its seqs come from the connection's last
            // row id, and a look at its first row checks that no trigger
            // put rows between them.
            assert_eq!(n.lone_publish, 2, "a publish alone: {n:?}");
        });
    }
}
