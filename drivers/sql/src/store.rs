//! What the handles of one store share in this process: which handles are
//! still open (the store closes with the last), and, for a file, the
//! wake-ups of every driver on it.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use litebus::driver::Wakeups;

/// The open handles of one store.
#[derive(Debug, Clone, Default)]
pub struct Handles {
    open: Arc<AtomicUsize>,
}

impl Handles {
    /// A store with no handle open yet.
    #[must_use]
    pub fn new() -> Self {
        Handles::default()
    }

    /// Opens another handle of the store.
    #[must_use]
    pub fn open(&self) -> Handle {
        self.open.fetch_add(1, Ordering::AcqRel);
        Handle {
            open: self.open.clone(),
            closed: AtomicBool::new(false),
        }
    }
}

/// One handle of a store. Cloning it opens another handle; the store is
/// closed when [`close`](Handle::close) has been called on every handle
/// that was not dropped.
pub struct Handle {
    open: Arc<AtomicUsize>,
    closed: AtomicBool,
}

impl Handle {
    /// The only handle of a store of its own.
    #[must_use]
    pub fn new() -> Self {
        Handles::new().open()
    }

    /// Whether this handle was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes this handle. `true` when it was the store's last open one:
    /// then the caller closes the store. `false` when it was closed before
    /// or other handles are open.
    pub fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel) && self.open.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

impl Default for Handle {
    fn default() -> Self {
        Handle::new()
    }
}

impl Clone for Handle {
    fn clone(&self) -> Self {
        self.open.fetch_add(1, Ordering::AcqRel);
        Handle {
            open: self.open.clone(),
            closed: AtomicBool::new(false),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("closed", &self.is_closed())
            .field("open", &self.open.load(Ordering::Acquire))
            .finish()
    }
}

/// The name a file goes by in this process: its canonical path (of its
/// directory, when the file does not exist yet), so that two spellings of
/// one file name one store.
#[must_use]
pub fn store_key(path: &Path) -> PathBuf {
    if let Ok(path) = path.canonicalize() {
        return path;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| absolute.clone(), |dir| dir.join(name)),
        _ => absolute,
    }
}

/// The wake-ups of one file, held by every driver on it.
#[derive(Debug)]
pub struct FileWakeups {
    wakeups: Wakeups,
}

impl FileWakeups {
    /// The wake-ups.
    pub fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }
}

/// What is open on each file in this process, by [`store_key`], while
/// someone holds it.
pub struct Files<T> {
    open: async_lock::Mutex<BTreeMap<PathBuf, Weak<T>>>,
}

impl<T> Files<T> {
    /// Nothing open yet.
    #[must_use]
    pub const fn new() -> Self {
        Files {
            open: async_lock::Mutex::new(BTreeMap::new()),
        }
    }

    /// What is open on the file at `path` if `usable` accepts it, or else
    /// what `make` opens, remembered. Opens of one process wait for each
    /// other, so two never make two of one file.
    pub async fn open<F, E>(
        &self,
        path: &Path,
        usable: impl Fn(&T) -> bool,
        make: impl FnOnce() -> F,
    ) -> std::result::Result<Arc<T>, E>
    where
        F: Future<Output = std::result::Result<Arc<T>, E>>,
    {
        let key = store_key(path);
        let mut open = self.open.lock().await;
        open.retain(|_, weak| weak.strong_count() > 0);
        if let Some(found) = open.get(&key).and_then(Weak::upgrade)
            && usable(&found)
        {
            return Ok(found);
        }
        let made = make().await?;
        open.insert(key, Arc::downgrade(&made));
        Ok(made)
    }
}

impl<T> Default for Files<T> {
    fn default() -> Self {
        Files::new()
    }
}

static WAKEUPS: Files<FileWakeups> = Files::new();

/// The wake-ups of the store in the file at `path`, shared by every driver
/// on that file in this process while one of them holds them.
pub async fn file_wakeups(path: &Path) -> Arc<FileWakeups> {
    let made = WAKEUPS
        .open(
            path,
            |_| true,
            || async {
                Ok::<_, std::convert::Infallible>(Arc::new(FileWakeups {
                    wakeups: Wakeups::new(),
                }))
            },
        )
        .await;
    match made {
        Ok(wakeups) => wakeups,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_handle_to_close_closes_the_store() {
        let store = Handles::new();
        let first = store.open();
        let second = first.clone();
        let third = store.open();
        drop(third);
        assert!(!first.close(), "another handle is open");
        assert!(!first.close(), "closing twice counts once");
        assert!(first.is_closed() && !second.is_closed());
        assert!(second.close());
    }

    #[test]
    fn two_spellings_of_one_file_share_wake_ups() {
        let dir = std::env::temp_dir().join(format!("litebus-store-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let open = |path: PathBuf| futures_lite::future::block_on(file_wakeups(&path));
        let a = open(dir.join("bus.db"));
        let b = open(dir.join(".").join("bus.db"));
        let other = open(dir.join("other.db"));
        assert!(a.wakeups().same(b.wakeups()));
        assert!(!a.wakeups().same(other.wakeups()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
