//! [`Factory`]s of [`SqlxDriver`] for the conformance suite and the model
//! tests (feature `conformance`): file databases in a temporary directory,
//! and `:memory:` databases. Drivers are opened on one shared tokio runtime
//! (or, with `Files::smol()` / `Memory::smol()` and the `smol` feature, on
//! smol's global executor), so the tests may run on any executor.

use std::future::Future;
use std::path::Path;
use std::sync::LazyLock;

use litebus::Result;
use litebus::driver::BoxFuture;
use litebus::driver::Capabilities;
use litebus_conformance::Factory;
use litebus_conformance::kit::{FileDriver, Stores, TempDir};

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
    dir: TempDir,
    on: OpenOn,
}

impl Files {
    /// Drivers on smol's global executor instead of tokio.
    #[cfg(feature = "smol")]
    #[must_use]
    pub fn smol() -> Self {
        Files {
            on: OpenOn::Smol,
            ..Files::default()
        }
    }
}

impl Default for Files {
    fn default() -> Self {
        Files {
            dir: TempDir::new("sqlx"),
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
                .run(SqlxDriver::open(self.dir.file(&format!("{store}.db")))),
        )
    }

    /// On a connection of its own, as an application beside the bus.
    fn run_sql<'a>(&'a self, store: &'a str, sql: &'a str) -> Option<BoxFuture<'a, Result<()>>> {
        let path = self.dir.file(&format!("{store}.db"));
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

/// The kit's file and process tests on sqlx files.
impl FileDriver for Files {
    type Driver = SqlxDriver;

    fn capabilities() -> Capabilities {
        Capabilities::NONE
            .durable(true)
            .multi_process(true)
            .sql_publish(true)
    }

    fn open(path: &Path) -> impl Future<Output = Result<SqlxDriver>> {
        SqlxDriver::open(path.to_owned())
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        litebus_conformance::kit::run::tokio(f)
    }

    fn query(path: &Path, sql: &str, params: usize) -> impl Future<Output = Vec<Vec<String>>> {
        let (path, sql) = (path.to_owned(), sql.to_owned());
        async move {
            let pool = sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(std::time::Duration::from_secs(5)),
            )
            .await
            .expect("connect");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for _ in 0..params {
                query = query.bind(1_i64);
            }
            let rows = query.fetch_all(&pool).await.expect("query");
            pool.close().await;
            rows.iter()
                .map(|row| {
                    (0..sqlx::Row::len(row))
                        .map(|i| {
                            sqlx::Row::try_get::<String, _>(row, i)
                                .or_else(|_| {
                                    sqlx::Row::try_get::<i64, _>(row, i).map(|v| v.to_string())
                                })
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .collect()
        }
    }
}

/// Each store is one `:memory:` database, reopened by sharing its driver.
#[derive(Default)]
pub struct Memory {
    stores: Stores<SqlxDriver>,
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
        Box::pin(
            self.stores
                .get_or_open(store, self.on.run(SqlxDriver::memory())),
        )
    }

    /// Through the driver's pool: a `:memory:` database has one connection.
    fn run_sql<'a>(&'a self, store: &'a str, sql: &'a str) -> Option<BoxFuture<'a, Result<()>>> {
        let pool = self.stores.get(store)?.pool().clone();
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
