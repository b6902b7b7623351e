//! Temporary directories and read-only files.

use std::path::{Path, PathBuf};

/// A directory of its own under the system's temporary directory, removed
/// when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory named after `name`, this process and a
    /// counter.
    pub fn new(name: &str) -> Self {
        static DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("litebus-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A file of the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes `path` unwritable: permissions first; where those do not bind (the
/// superuser), the immutable attribute. `None` when neither is possible
/// here; dropping the guard makes the file writable again.
#[cfg(unix)]
pub fn make_read_only(path: &Path) -> Option<ReadOnly> {
    use std::os::unix::fs::PermissionsExt;
    let writable = || std::fs::OpenOptions::new().append(true).open(path).is_ok();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).ok()?;
    if !writable() {
        return Some(ReadOnly(path.to_owned(), false));
    }
    let immutable = std::process::Command::new("chattr")
        .arg("+i")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    let guard = ReadOnly(path.to_owned(), immutable);
    (immutable && !writable()).then_some(guard)
}

/// Undoes [`make_read_only`] when dropped.
#[derive(Debug)]
pub struct ReadOnly(PathBuf, bool);

impl Drop for ReadOnly {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if self.1 {
                let _ = std::process::Command::new("chattr")
                    .arg("-i")
                    .arg(&self.0)
                    .status();
            }
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o644));
        }
    }
}
