//! [`Factory`]s of [`TursoDriver`] for the conformance suite and the model
//! tests (feature `conformance`): file databases in a temporary directory
//! (native only), and `:memory:` databases.

use litebus::Result;
use litebus::driver::BoxFuture;
use litebus::driver::Capabilities;
use litebus_conformance::Factory;
use litebus_conformance::kit::Stores;

use crate::TursoDriver;

/// Each store is a file in a temporary directory (removed when dropped).
#[cfg(not(target_arch = "wasm32"))]
pub struct Files {
    dir: litebus_conformance::kit::TempDir,
    /// The driver last opened on each store, for plain SQL: turso takes a
    /// file's lock, so SQL runs on the driver's own connection.
    open: Stores<TursoDriver>,
}

#[cfg(not(target_arch = "wasm32"))]
impl Default for Files {
    fn default() -> Self {
        Files {
            dir: litebus_conformance::kit::TempDir::new("turso"),
            open: Stores::default(),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Factory for Files {
    type Driver = TursoDriver;

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.durable(true)
    }

    fn open<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<TursoDriver>> {
        Box::pin(async move {
            let driver = TursoDriver::open(self.dir.file(&format!("{store}.db"))).await?;
            self.open.put(store, driver.clone());
            Ok(driver)
        })
    }

    fn run_sql<'a>(&'a self, store: &'a str, sql: &'a str) -> Option<BoxFuture<'a, Result<()>>> {
        Some(execute(self.open.get(store)?, sql))
    }
}

/// The kit's file and process tests on turso files.
#[cfg(not(target_arch = "wasm32"))]
impl litebus_conformance::kit::FileDriver for Files {
    type Driver = TursoDriver;

    fn capabilities() -> Capabilities {
        Capabilities::NONE.durable(true)
    }

    fn open(path: &std::path::Path) -> impl Future<Output = Result<TursoDriver>> {
        TursoDriver::open(path.to_owned())
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        litebus_conformance::kit::run::block_on(f)
    }

    fn query(
        path: &std::path::Path,
        sql: &str,
        params: usize,
    ) -> impl Future<Output = Vec<Vec<String>>> {
        let (path, sql) = (path.to_owned(), sql.to_owned());
        async move {
            let db = turso::Builder::new_local(path.to_str().expect("UTF-8 path"))
                .build()
                .await
                .expect("open");
            let conn = db.connect().expect("connect");
            let values: Vec<turso::Value> = (0..params).map(|_| turso::Value::Integer(1)).collect();
            let mut rows = conn.query(sql, values).await.expect("query");
            let mut out = Vec::new();
            while let Some(row) = rows.next().await.expect("row") {
                out.push(
                    (0..row.column_count())
                        .map(|i| match row.get_value(i).expect("value") {
                            turso::Value::Text(t) => t,
                            turso::Value::Integer(v) => v.to_string(),
                            other => format!("{other:?}"),
                        })
                        .collect(),
                );
            }
            out
        }
    }
}

/// Each store is one `:memory:` database, reopened by sharing its driver.
#[derive(Default)]
pub struct Memory {
    stores: Stores<TursoDriver>,
}

impl Factory for Memory {
    type Driver = TursoDriver;

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    fn open<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<TursoDriver>> {
        Box::pin(self.stores.get_or_open(store, TursoDriver::memory()))
    }

    fn run_sql<'a>(&'a self, store: &'a str, sql: &'a str) -> Option<BoxFuture<'a, Result<()>>> {
        Some(execute(self.stores.get(store)?, sql))
    }
}

fn execute(driver: TursoDriver, sql: &str) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move { driver.execute(sql).await.map(drop) })
}
