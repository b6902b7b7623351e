//! Bad database files given to `TursoDriver::open`: random bytes, a cut
//! file, a directory, a database from a newer litebus, a read-only file.
//! Each is a clear error, never a panic, and the file is left as it was.

use std::path::{Path, PathBuf};

use futures_lite::future::block_on;
use litebus::{Bus, BusOptions, Error, Message};
use litebus_turso::TursoDriver;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("litebus-turso-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open_error(path: &Path) -> Error {
    TursoDriver::open(path)
        .await
        .expect_err("opening should fail")
}

/// A store with 200 messages of 500 bytes, closed (so the main file holds
/// them all).
async fn filled(path: &Path) {
    let bus = Bus::open(TursoDriver::open(path).await.unwrap(), BusOptions::new()).unwrap();
    bus.publish_batch(
        "t",
        (0..200).map(|i| Message::new(vec![7u8; 500]).with_id(format!("{i}"))),
    )
    .await
    .unwrap();
    bus.close().await.unwrap();
}

#[test]
fn random_bytes_are_refused_and_left_alone() {
    block_on(async {
        let dir = TempDir::new("noise");
        let noise = dir.file("noise.db");
        let bytes: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&noise, &bytes).unwrap();
        let e = open_error(&noise).await;
        assert!(
            matches!(e, Error::Corrupt(_)) || e.to_string().contains("cannot open"),
            "random bytes: {e}"
        );
        assert_eq!(std::fs::read(&noise).unwrap(), bytes, "file unchanged");
    });
}

#[test]
fn a_cut_file_is_refused_and_left_alone() {
    block_on(async {
        let dir = TempDir::new("cut");
        let whole = dir.file("whole.db");
        filled(&whole).await;
        let bytes = std::fs::read(&whole).unwrap();
        assert!(
            !dir.file("whole.db-wal").exists()
                || std::fs::metadata(dir.file("whole.db-wal")).unwrap().len() == 0
        );
        // Cut in half, at a page boundary, and one page short.
        for len in [
            bytes.len() / 2,
            bytes.len() / 4096 / 2 * 4096,
            bytes.len() - 4096,
        ] {
            let cut = dir.file(&format!("cut-{len}.db"));
            std::fs::write(&cut, &bytes[..len]).unwrap();
            let e = open_error(&cut).await;
            assert!(matches!(e, Error::Corrupt(_)), "cut to {len}: {e}");
            assert_eq!(
                std::fs::read(&cut).unwrap(),
                &bytes[..len],
                "cut to {len}: file unchanged"
            );
        }
    });
}

#[test]
fn a_directory_is_refused() {
    block_on(async {
        let dir = TempDir::new("dir");
        let e = open_error(&dir.0).await;
        assert!(e.to_string().contains("directory"), "directory: {e}");
    });
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    block_on(async {
        let dir = TempDir::new("newer");
        let newer = dir.file("newer.db");
        filled(&newer).await;
        {
            let db = turso::Builder::new_local(newer.to_str().unwrap())
                .build()
                .await
                .unwrap();
            let conn = db.connect().unwrap();
            conn.execute(
                "UPDATE litebus_meta SET value = 99 WHERE name = 'schema_version'",
                (),
            )
            .await
            .unwrap();
        }
        let e = open_error(&newer).await;
        assert!(
            e.to_string().contains("schema version 99"),
            "newer schema: {e}"
        );
        let db = turso::Builder::new_local(newer.to_str().unwrap())
            .build()
            .await
            .unwrap();
        let conn = db.connect().unwrap();
        let mut rows = conn
            .query(
                "SELECT value FROM litebus_meta WHERE name = 'schema_version'",
                (),
            )
            .await
            .unwrap();
        let row = rows.next().await.unwrap().unwrap();
        assert_eq!(row.get::<i64>(0).unwrap(), 99, "nothing changed");
    });
}

/// Makes `path` unwritable: permissions first; where those do not bind (the
/// superuser), the immutable attribute. `None` when neither is possible here.
fn make_read_only(path: &Path) -> Option<ReadOnly> {
    use std::os::unix::fs::PermissionsExt;
    let writable = || std::fs::OpenOptions::new().append(true).open(path).is_ok();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
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

/// Undoes [`make_read_only`].
struct ReadOnly(PathBuf, bool);

impl Drop for ReadOnly {
    fn drop(&mut self) {
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

#[test]
fn a_read_only_file_is_refused_and_left_alone() {
    block_on(async {
        let dir = TempDir::new("read-only");
        let path = dir.file("ro.db");
        filled(&path).await;
        let bytes = std::fs::read(&path).unwrap();
        let Some(read_only) = make_read_only(&path) else {
            // Neither permissions nor `chattr` can stop this user writing
            // here (a superuser on a filesystem without the attribute).
            eprintln!(
                "skipped: cannot make a read-only file in {}",
                dir.0.display()
            );
            return;
        };
        match TursoDriver::open(&path).await {
            Err(e) => assert!(
                matches!(e, Error::Driver(_)) && e.to_string().contains("cannot open"),
                "opening a read-only file: {e}"
            ),
            Ok(driver) => {
                let bus = Bus::open(driver, BusOptions::new()).unwrap();
                let e = bus
                    .publish("t", Message::new("lost?").with_id("x"))
                    .await
                    .expect_err("publishing into a read-only file");
                assert!(matches!(e, Error::Driver(_)), "publishing: {e}");
                let _ = bus.close().await;
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "file unchanged");

        // Writable again: the 200 messages are all there is.
        drop(read_only);
        let bus = Bus::open(TursoDriver::open(&path).await.unwrap(), BusOptions::new()).unwrap();
        let stats = bus.stats("t").await.unwrap();
        assert_eq!(stats.messages, 200);
        bus.close().await.unwrap();
    });
}
