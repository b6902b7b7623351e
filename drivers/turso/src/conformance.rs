//! [`Factory`]s of [`TursoDriver`] for the conformance suite and the model
//! tests (feature `conformance`): file databases in a temporary directory
//! (native only), and `:memory:` databases.

use std::collections::HashMap;
use std::sync::Mutex;

use litebus::conformance::Factory;
use litebus::driver::BoxFuture;
use litebus::{Capabilities, Result};

use crate::TursoDriver;

/// Each store is a file in a temporary directory (removed when dropped).
#[cfg(not(target_arch = "wasm32"))]
pub struct Files {
    dir: std::path::PathBuf,
    /// The driver last opened on each store, for plain SQL: turso takes a
    /// file's lock, so SQL runs on the driver's own connection.
    open: Mutex<HashMap<String, TursoDriver>>,
}

#[cfg(not(target_arch = "wasm32"))]
impl Default for Files {
    fn default() -> Self {
        static DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("litebus-turso-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Files {
            dir,
            open: Mutex::default(),
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
            let driver = TursoDriver::open(self.dir.join(format!("{store}.db"))).await?;
            self.open
                .lock()
                .expect("drivers")
                .insert(store.to_owned(), driver.clone());
            Ok(driver)
        })
    }

    fn run_sql<'a>(&'a self, store: &'a str, sql: &'a str) -> Option<BoxFuture<'a, Result<()>>> {
        let driver = self.open.lock().expect("drivers").get(store).cloned()?;
        Some(Box::pin(async move { driver.execute(sql).await.map(drop) }))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Each store is one `:memory:` database, reopened by sharing its driver.
#[derive(Default)]
pub struct Memory {
    stores: Mutex<HashMap<String, TursoDriver>>,
}

impl Factory for Memory {
    type Driver = TursoDriver;

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    fn open<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<TursoDriver>> {
        Box::pin(async move {
            if let Some(driver) = self.stores.lock().expect("stores").get(store) {
                return Ok(driver.clone());
            }
            let driver = TursoDriver::memory().await?;
            self.stores
                .lock()
                .expect("stores")
                .insert(store.to_owned(), driver.clone());
            Ok(driver)
        })
    }

    fn run_sql<'a>(&'a self, store: &'a str, sql: &'a str) -> Option<BoxFuture<'a, Result<()>>> {
        let driver = self.stores.lock().expect("stores").get(store).cloned()?;
        Some(Box::pin(async move { driver.execute(sql).await.map(drop) }))
    }
}
