//! Named stores that live as long as the factory: how a factory of
//! in-memory databases "reopens" a store (it hands out the same driver).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use litebus::Result;

use super::lock;

/// Drivers by store name.
#[derive(Debug)]
pub struct Stores<D> {
    drivers: Mutex<HashMap<String, D>>,
}

impl<D> Default for Stores<D> {
    fn default() -> Self {
        Stores {
            drivers: Mutex::new(HashMap::new()),
        }
    }
}

impl<D: Clone> Stores<D> {
    /// The driver of `store`, opened with `open` the first time.
    pub async fn get_or_open<F>(&self, store: &str, open: F) -> Result<D>
    where
        F: Future<Output = Result<D>>,
    {
        if let Some(driver) = self.get(store) {
            return Ok(driver);
        }
        let driver = open.await?;
        self.put(store, driver.clone());
        Ok(driver)
    }

    /// The driver of `store`, if one was opened.
    pub fn get(&self, store: &str) -> Option<D> {
        lock(&self.drivers).get(store).cloned()
    }

    /// Records `driver` as the one of `store` (the last opened wins).
    pub fn put(&self, store: &str, driver: D) {
        lock(&self.drivers).insert(store.to_owned(), driver);
    }
}
