//! PostgreSQL storage for [`litebus`] through sqlx: the same bus on many
//! processes and hosts.
//!
//! ```no_run
//! use litebus::{Bus, BusOptions, GroupOptions, Message};
//! use litebus_postgres::PgDriver;
//! # #[tokio::main] async fn main() -> litebus::Result<()> {
//! let bus = Bus::open(PgDriver::connect("postgres://app@db/app").await?, BusOptions::new())?;
//! bus.publish("orders", Message::new("order #1")).await?;
//! let billing = bus.subscribe("orders", "billing", GroupOptions::new()).await?;
//! billing.recv().await?.ack().await?;
//! # Ok(()) }
//! ```
//!
//! - **The SQL** (statements, steps, the engine's group commit) is
//!   `litebus-sql`'s, the same the SQLite drivers run, in its PostgreSQL
//!   form (see `litebus_sql::dialect`); the schema is written for
//!   PostgreSQL, in the schema [`PgOptions::schema`] names.
//! - **Many hosts.** Every write transaction of a store takes the store's
//!   lock (`pg_advisory_xact_lock`) first, so the transactions of all its
//!   drivers run one at a time, as on one SQLite file: a lease is never
//!   held twice (I4), ordered and per-key groups keep their order (I7), and
//!   seqs rise in commit order, plain SQL's `INSERT`s included. Each
//!   transaction carries a batch of calls (group commit), so the lock is
//!   taken per batch, not per message. A shared group's claim runs apart
//!   when it can (`litebus_sql::claim_apart`): it shares the store's lock
//!   with other such claims, holds its group's, and locks what it leases
//!   with `FOR UPDATE SKIP LOCKED`, so consumers of different groups claim
//!   at once and a row held elsewhere is passed over.
//! - **Wake-ups** come through `LISTEN/NOTIFY`: one notification per commit
//!   that changes something; a driver skips its own (see [`PgOptions`]).
//! - **Time** is the bus clock's, never the server's `now()` (I10).
//! - **Runtimes.** As `litebus-sqlx`: with the default `tokio` feature,
//!   open the driver inside a tokio runtime; any executor may then drive
//!   the bus.

#[cfg(feature = "conformance")]
pub mod conformance;
mod conn;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use litebus::driver::{BoxFuture, Capabilities, Driver, Wakeups};
use litebus::{DriverError, Error, Result};
use litebus_runtime::{Pump, Runtime};
use litebus_sql::{Engine, Handle};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub use conn::publish_in;
use conn::{PgBackend, map_err};
use watch::Watcher;

/// Options of a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    schema: String,
    max_connections: u32,
    listen: bool,
    poll: Option<Duration>,
}

impl PgOptions {
    /// The `public` schema, 4 connections, `LISTEN` and no polling.
    pub fn new() -> Self {
        PgOptions {
            schema: "public".to_owned(),
            max_connections: 4,
            listen: true,
            poll: None,
        }
    }

    /// The schema that holds the litebus tables (created if missing): one
    /// store per schema.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the driver opens (at least 2: one for
    /// transactions, one to listen).
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(2);
        self
    }

    /// Whether to `LISTEN` for other drivers' commits (on by default). Off,
    /// as behind a connection pooler in transaction mode where `LISTEN`
    /// does not work, set [`poll`](Self::poll): subscribers then look at
    /// the store at that interval.
    #[must_use]
    pub fn listen(mut self, yes: bool) -> Self {
        self.listen = yes;
        self
    }

    /// Wakes every waiting subscriber at this interval whatever the
    /// notifications say (a safety net, or the only news without
    /// `LISTEN`).
    #[must_use]
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = Some(every.max(Duration::from_millis(1)));
        self
    }
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions::new()
    }
}

/// A litebus [`Driver`] on PostgreSQL through sqlx. Clones share the
/// connections, and the driver closes when every clone that was not
/// dropped has been closed.
#[derive(Debug, Clone)]
pub struct PgDriver {
    engine: Engine<PgBackend>,
    pump: Pump,
    pool: PgPool,
    watcher: Watcher,
    runtime: Runtime,
    handle: Handle,
    wakeups: Wakeups,
    _open: Arc<Open>,
}

/// What the last clone of a driver stops when it goes without a close:
/// the engine's task and the watcher's, which hold the pool (its
/// connections would stay open on the server until the process ends).
#[derive(Debug)]
struct Open {
    engine: Engine<PgBackend>,
    watcher: Watcher,
}

impl Drop for Open {
    fn drop(&mut self) {
        // A pumped engine's close only says so: its task ends by itself
        // once what is queued has run.
        futures_lite::future::block_on(self.engine.close());
        self.watcher.stop();
    }
}

/// A token no other driver has: a commit's notification names the driver
/// that made it.
fn origin() -> String {
    static DRIVERS: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.{}.{}",
        std::process::id(),
        now.as_nanos(),
        DRIVERS.fetch_add(1, Ordering::Relaxed)
    )
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl PgDriver {
    /// Connects to the server at `url` (`postgres://user:password@host/db`)
    /// with default options.
    pub async fn connect(url: &str) -> Result<Self> {
        PgDriver::connect_with(url, PgOptions::new()).await
    }

    /// Connects to the server at `url`.
    pub async fn connect_with(url: &str, options: PgOptions) -> Result<Self> {
        let connect: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            Error::InvalidOptions(format!("not a PostgreSQL URL ({url}): {e}"))
        })?;
        PgDriver::connect_options(connect, options).await
    }

    /// Connects with sqlx's connect options.
    pub async fn connect_options(connect: PgConnectOptions, options: PgOptions) -> Result<Self> {
        let runtime = Runtime::current()?;
        let schema = options.schema.clone();
        if schema.is_empty() {
            return Err(Error::InvalidOptions("an empty schema name".into()));
        }
        let origin = origin();
        let setup = connect.clone().options([
            ("search_path", quoted(&schema)),
            ("litebus.origin", origin.clone()),
            // The engine's statements run thousands of times each with
            // parameters of the same shape: planning each run (the
            // server's choice for the first runs of a prepared statement,
            // and for long ones after) cost up to 0.4 ms a bind, more than
            // the statement. Measured with the bench's consume.1x1 / 1x4,
            // three runs each: 19.7k / 18.0k msgs/s custom, 21.6k / 22.9k
            // generic; 10^6 stored: 15.4k / 24.0k.
            ("plan_cache_mode", "force_generic_plan".to_owned()),
        ]);
        runtime
            .clone()
            .run(async move {
                let open = |e: sqlx::Error| match map_err(&e) {
                    Error::Driver(d) => {
                        Error::from(DriverError::fatal(format!("cannot open the store: {d}")))
                    }
                    other => other,
                };
                // sqlx pings a pooled connection before each transaction
                // (one round trip): a connection the server dropped (a
                // restart, `pg_terminate_backend`) is replaced then, instead
                // of failing a caller's call.
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .connect_with(setup)
                    .await
                    .map_err(open)?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    quoted(&schema)
                )))
                .execute(&pool)
                .await
                .map_err(open)?;
                PgDriver::start(pool, schema, origin, &options, runtime.clone()).await
            })
            .await
    }

    /// Uses an application's own pool (its connections' `search_path`
    /// names the schema of the store). The litebus tables are created in it
    /// if needed.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        let runtime = Runtime::current()?;
        runtime
            .clone()
            .run(async move {
                let schema: String = sqlx::query_scalar("SELECT current_schema()")
                    .fetch_one(&pool)
                    .await
                    .map_err(|e| map_err(&e))?;
                let options = PgOptions::new();
                PgDriver::start(pool, schema, String::new(), &options, runtime).await
            })
            .await
    }

    async fn start(
        pool: PgPool,
        schema: String,
        origin: String,
        options: &PgOptions,
        runtime: Runtime,
    ) -> Result<Self> {
        let wakeups = Wakeups::new();
        let engine = Engine::pumped(
            PgBackend {
                pool: pool.clone(),
                statements: Arc::default(),
            },
            wakeups.clone(),
        );
        let pump = Pump::spawn(&runtime, Box::pin(engine.clone().pump()));
        engine.migrate().await?;
        let watcher = Watcher::start(
            &pool,
            schema,
            origin,
            options.listen,
            options.poll,
            &runtime,
        )
        .await?;
        Ok(PgDriver {
            _open: Arc::new(Open {
                engine: engine.clone(),
                watcher: watcher.clone(),
            }),
            engine,
            pump,
            pool,
            watcher,
            runtime,
            handle: Handle::new(),
            wakeups,
        })
    }

    /// The pool the driver's transactions go through: the one to publish
    /// from SQL with [`publish_in`].
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn shut_down(&self) {
        self.engine.close().await;
        self.pump.join().await;
    }
}

impl Driver for PgDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .durable(true)
            .multi_process(true)
            .sql_publish(true)
    }

    litebus_sql::engine_calls!(engine);

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        self.runtime.run(async move {
            // Releases of dropped subscriptions land before anything closes.
            self.runtime.join_background().await;
            if !self.handle.close() {
                return Ok(());
            }
            self.shut_down().await;
            self.watcher.close().await;
            self.pool.close().await;
            Ok(())
        })
    }

    fn watch_external(&self) -> Option<BoxFuture<'static, ()>> {
        let kept = self.engine.kept();
        Some(Box::pin(futures_lite::future::or(
            self.watcher.wait(),
            kept,
        )))
    }

    fn wakeups(&self) -> Option<Wakeups> {
        Some(self.wakeups.clone())
    }

    fn spawn_background(&self, task: BoxFuture<'static, ()>) -> Option<BoxFuture<'static, ()>> {
        self.runtime.spawn(task);
        None
    }
}
