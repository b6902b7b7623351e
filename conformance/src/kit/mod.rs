//! What the drivers' own tests share, so that each is written once:
//! executors to run a case on, temporary directories, a read-only file, a
//! map of named stores for [`Factory`](crate::Factory)s, and the harness of
//! tests that run themselves as child processes.

use std::sync::{Mutex, MutexGuard, PoisonError};

#[cfg(target_arch = "wasm32")]
pub mod browser;
#[cfg(not(target_arch = "wasm32"))]
pub mod file_tests;
#[cfg(not(target_arch = "wasm32"))]
mod files;
#[cfg(not(target_arch = "wasm32"))]
pub mod processes;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
mod stores;
#[cfg(all(feature = "telemetry", not(target_arch = "wasm32")))]
pub mod telemetry;

#[cfg(not(target_arch = "wasm32"))]
pub use files::{ReadOnly, TempDir, make_read_only};
pub use stores::Stores;

/// A driver of database files, as the kit's file and process tests open
/// it: a type of a driver's tests (no value), naming the driver, its
/// runtime and how plain SQL reaches a file.
#[cfg(not(target_arch = "wasm32"))]
pub trait FileDriver: 'static {
    /// The driver.
    type Driver: litebus::driver::Driver;

    /// What it can do: which process tests run.
    fn capabilities() -> litebus::driver::Capabilities;

    /// Opens the file at `path`.
    fn open(path: &std::path::Path) -> impl Future<Output = litebus::Result<Self::Driver>>;

    /// Runs `f` to the end (on the runtime the driver needs, if any).
    fn block_on<T>(f: impl Future<Output = T>) -> T;

    /// Runs `sql` on the file at `path` (no driver has it open) with
    /// `params` integer parameters, all 1; returns every row, each column
    /// as text.
    fn query(
        path: &std::path::Path,
        sql: &str,
        params: usize,
    ) -> impl Future<Output = Vec<Vec<String>>>;
}

/// Locks `mutex`, whatever panicked while holding it before.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
