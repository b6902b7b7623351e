//! The [`Factory`] of [`PgDriver`] for the conformance suite (feature
//! `conformance`): each store is a schema of its own on the server that
//! `LITEBUS_PG_URL` names, dropped when the factory is. Drivers are opened
//! on one shared tokio runtime, so the cases may run on any executor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

use litebus::Result;
use litebus::driver::{BoxFuture, Capabilities};
use litebus_conformance::kit::FileDriver;
use litebus_conformance::{Factory, SqlDialect};
use std::path::Path;

use crate::{PgDriver, PgOptions};

/// The variable that names the server the tests use.
pub const URL_VARIABLE: &str = "LITEBUS_PG_URL";

/// The server's URL, from [`URL_VARIABLE`]. Without it, a message that
/// says how to give one; in CI (`CI=true`) that is a failure.
pub fn url() -> Option<String> {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let why = format!(
                "the PostgreSQL tests need a server: set {URL_VARIABLE} \
                 (postgres://user@host:port/db), or run scripts/test, which starts one"
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Where drivers are opened: sqlx needs a tokio runtime, which the driver
/// then enters by itself whatever executor polls it.
static PG_RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
});

/// Runs `work` on the factory's runtime.
async fn run<F, T>(work: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    PG_RUNTIME.spawn(work).await.expect("PostgreSQL task")
}

/// Each store is a schema of the server at `LITEBUS_PG_URL`.
pub struct Schemas {
    url: String,
    schemas: Mutex<HashMap<String, String>>,
}

impl Schemas {
    /// `None` (with a message) when no server is named.
    pub fn new() -> Option<Self> {
        Some(Schemas {
            url: url()?,
            schemas: Mutex::default(),
        })
    }

    /// The schema of store `store`: a new one the first time.
    fn schema(&self, store: &str) -> String {
        static SCHEMAS: AtomicU64 = AtomicU64::new(0);
        self.schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(store.to_owned())
            .or_insert_with(|| {
                format!(
                    "litebus_test_{}_{}",
                    std::process::id(),
                    SCHEMAS.fetch_add(1, Ordering::Relaxed)
                )
            })
            .clone()
    }
}

impl Factory for Schemas {
    type Driver = PgDriver;

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .durable(true)
            .multi_process(true)
            .sql_publish(true)
    }

    fn open<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<PgDriver>> {
        let url = self.url.clone();
        let schema = self.schema(store);
        Box::pin(run(async move {
            PgDriver::connect_with(&url, PgOptions::new().schema(schema)).await
        }))
    }

    /// On a connection of its own, as an application beside the bus, in
    /// the statement's PostgreSQL form (`litebus_sql::dialect`).
    fn run_sql<'a>(&'a self, store: &'a str, sql: &'a str) -> Option<BoxFuture<'a, Result<()>>> {
        let url = self.url.clone();
        let schema = self.schema(store);
        let sql = litebus_sql::dialect::postgres(sql);
        Some(Box::pin(run(async move {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .map_err(|e| crate::map_err(&e))?;
            let set = format!("SET search_path TO \"{schema}\"");
            let done = async {
                sqlx::raw_sql(sqlx::AssertSqlSafe(set))
                    .execute(&mut conn)
                    .await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
            }
            .await;
            let _ = conn.close().await;
            done.map(drop).map_err(|e| crate::map_err(&e))
        })))
    }

    fn sql_dialect(&self) -> SqlDialect {
        SqlDialect::Postgres
    }
}

/// The kit's process tests (`kit::processes`) on PostgreSQL: the "file"
/// each test names (in a temporary directory) stands for a schema of the
/// server at `LITEBUS_PG_URL`, named after it, so that every process of a
/// test opens the same store.
pub struct Processes;

/// The schema that stands for the file at `path`.
fn schema_of(path: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hash);
    format!("litebus_test_f{:016x}", hash.finish())
}

impl FileDriver for Processes {
    type Driver = PgDriver;

    fn capabilities() -> Capabilities {
        Capabilities::NONE.durable(true).multi_process(true)
    }

    fn open(path: &Path) -> impl Future<Output = Result<PgDriver>> {
        let schema = schema_of(path);
        async move {
            let url = std::env::var(URL_VARIABLE).map_err(|_| {
                litebus::Error::InvalidOptions(format!("{URL_VARIABLE} is not set"))
            })?;
            PgDriver::connect_with(&url, PgOptions::new().schema(schema)).await
        }
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        let _entered = PG_RUNTIME.enter();
        futures_lite::future::block_on(f)
    }

    fn query(path: &Path, sql: &str, params: usize) -> impl Future<Output = Vec<Vec<String>>> {
        let (schema, sql) = (schema_of(path), litebus_sql::dialect::postgres(sql));
        async move {
            use sqlx::{Connection, Row};
            let url = std::env::var(URL_VARIABLE).expect(URL_VARIABLE);
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET search_path TO \"{schema}\""
            )))
            .execute(&mut conn)
            .await
            .expect("search_path");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for _ in 0..params {
                query = query.bind(1_i64);
            }
            let rows = query.fetch_all(&mut conn).await.expect("query");
            let _ = conn.close().await;
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| {
                            row.try_get::<String, _>(i)
                                .or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string()))
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .collect()
        }
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let schemas: Vec<String> = self
            .schemas
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, schema)| schema)
            .collect();
        if schemas.is_empty() {
            return;
        }
        let url = self.url.clone();
        // A thread of its own: the factory may be dropped on a runtime's.
        let _ = std::thread::spawn(move || {
            PG_RUNTIME.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    for schema in schemas {
                        let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                            .execute(&mut conn)
                            .await;
                    }
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
