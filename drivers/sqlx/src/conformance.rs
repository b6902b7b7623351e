//! [`Factory`]s of [`SqlxDriver`] for the conformance suite and the model
//! tests (feature `conformance`): file databases in a temporary directory,
//! and `:memory:` databases. Drivers are opened on one shared tokio runtime
//! (or, with `Files::smol()` / `Memory::smol()` and the `smol` feature, on
//! smol's global executor), so the tests may run on any executor.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use litebus::conformance::Factory;
use litebus::driver::BoxFuture;
use litebus::{Capabilities, Result};

use crate::SqlxDriver;

/// Where drivers are opened: sqlx needs a tokio runtime, which the driver
/// then enters by itself whatever executor polls it.
static SQLX_RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
});

/// The runtime a factory opens its drivers on.
#[derive(Debug, Clone, Copy, Default)]
enum OpenOn {
    #[default]
    Tokio,
    #[cfg(feature = "smol")]
    Smol,
}

impl OpenOn {
    /// Runs sqlx work (opening a driver, a user's SQL) on the factory's
    /// runtime.
    async fn run<F, T>(self, work: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        match self {
            OpenOn::Tokio => SQLX_RUNTIME.spawn(work).await.expect("sqlx task"),
            // smol's executor threads have no tokio context.
            #[cfg(feature = "smol")]
            OpenOn::Smol => smol::spawn(work).await,
        }
    }
}

/// Each store is a file in a temporary directory (removed when dropped).
pub struct Files {
    dir: PathBuf,
    on: OpenOn,
}

impl Files {
    /// Drivers on smol's global executor instead of tokio.
    #[cfg(feature = "smol")]
    #[must_use]
    pub fn smol() -> Self {
        let mut files = Files::default();
        files.on = OpenOn::Smol;
        files
    }
}

impl Default for Files {
    fn default() -> Self {
        static DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("litebus-sqlx-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Files {
            dir,
            on: OpenOn::default(),
        }
    }
}

impl Factory for Files {
    type Driver = SqlxDriver;

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .durable(true)
            .multi_process(true)
            .sql_publish(true)
    }

    fn open<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<SqlxDriver>> {
        Box::pin(
            self.on
                .run(SqlxDriver::open(self.dir.join(format!("{store}.db")))),
        )
    }

    /// On a connection of its own, as an application beside the bus.
    fn run_sql<'a>(&'a self, store: &'a str, sql: &'a str) -> Option<BoxFuture<'a, Result<()>>> {
        let path = self.dir.join(format!("{store}.db"));
        let sql = sql.to_owned();
        Some(Box::pin(self.on.run(async move {
            let pool = sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(std::time::Duration::from_secs(5)),
            )
            .await
            .map_err(|e| crate::conn::map_err(&e))?;
            let done = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            pool.close().await;
            done.map(drop).map_err(|e| crate::conn::map_err(&e))
        })))
    }
}

/// Each store is one `:memory:` database, reopened by sharing its driver.
#[derive(Default)]
pub struct Memory {
    stores: Mutex<HashMap<String, SqlxDriver>>,
    on: OpenOn,
}

impl Memory {
    /// Drivers on smol's global executor instead of tokio.
    #[cfg(feature = "smol")]
    #[must_use]
    pub fn smol() -> Self {
        Memory {
            on: OpenOn::Smol,
            ..Memory::default()
        }
    }
}

impl Factory for Memory {
    type Driver = SqlxDriver;

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.sql_publish(true)
    }

    fn open<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<SqlxDriver>> {
        Box::pin(async move {
            if let Some(driver) = self.stores.lock().expect("stores").get(store) {
                return Ok(driver.clone());
            }
            let driver = self.on.run(SqlxDriver::memory()).await?;
            self.stores
                .lock()
                .expect("stores")
                .insert(store.to_owned(), driver.clone());
            Ok(driver)
        })
    }

    /// Through the driver's pool: a `:memory:` database has one connection.
    fn run_sql<'a>(&'a self, store: &'a str, sql: &'a str) -> Option<BoxFuture<'a, Result<()>>> {
        let pool = self
            .stores
            .lock()
            .expect("stores")
            .get(store)?
            .pool()
            .clone();
        let sql = sql.to_owned();
        Some(Box::pin(self.on.run(async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .map(drop)
                .map_err(|e| crate::conn::map_err(&e))
        })))
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
