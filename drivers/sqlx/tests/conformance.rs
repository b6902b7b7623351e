//! The conformance suite on `SqlxDriver`: file and `:memory:` databases,
//! each under tokio, smol and a plain `block_on`. Drivers are opened on one
//! shared tokio runtime (sqlx's); the cases run on the executor named by
//! their module.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use litebus::Capabilities;
use litebus::Result;
use litebus::conformance::Factory;
use litebus::driver::BoxFuture;
use litebus_sqlx::SqlxDriver;

/// Where drivers are opened: sqlx needs a tokio runtime, which the driver
/// then enters by itself whatever executor polls it.
static SQLX_RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
});

async fn open_on_runtime<F>(open: F) -> Result<SqlxDriver>
where
    F: std::future::Future<Output = Result<SqlxDriver>> + Send + 'static,
{
    SQLX_RUNTIME.spawn(open).await.expect("open task")
}

/// Each store is a file in a temporary directory.
struct Files {
    dir: PathBuf,
}

impl Default for Files {
    fn default() -> Self {
        let dir =
            std::env::temp_dir().join(format!("litebus-sqlx-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Files { dir }
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
        Box::pin(open_on_runtime(SqlxDriver::open(
            self.dir.join(format!("{store}.db")),
        )))
    }
}

/// Each store is one `:memory:` database, reopened by sharing its driver.
#[derive(Default)]
struct Memory {
    stores: Mutex<HashMap<String, SqlxDriver>>,
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
            let driver = open_on_runtime(SqlxDriver::memory()).await?;
            self.stores
                .lock()
                .expect("stores")
                .insert(store.to_owned(), driver.clone());
            Ok(driver)
        })
    }
}

fn tokio_run<F: std::future::Future>(case: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(case)
}

mod file_tokio {
    use super::*;
    litebus::conformance_tests!(factory: Files::default(), run: tokio_run);
}

mod file_smol {
    use super::*;
    litebus::conformance_tests!(factory: Files::default(), run: smol::block_on);
}

mod file_block_on {
    use super::*;
    litebus::conformance_tests!(factory: Files::default(), run: futures_lite::future::block_on);
}

mod memory_tokio {
    use super::*;
    litebus::conformance_tests!(factory: Memory::default(), run: tokio_run);
}

mod memory_smol {
    use super::*;
    litebus::conformance_tests!(factory: Memory::default(), run: smol::block_on);
}

mod memory_block_on {
    use super::*;
    litebus::conformance_tests!(factory: Memory::default(), run: futures_lite::future::block_on);
}
