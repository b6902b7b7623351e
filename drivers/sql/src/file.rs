//! The check every SQL driver makes of a database file before it writes to
//! it: a damaged file is refused as it is, never opened and written into
//! (turso would open a file cut in half, deliver from it and write into it;
//! SQLite refuses it only once it reads a missing page).
//!
//! It reads the 100-byte header that SQLite and turso write at the start of
//! the file: the magic string, the page size, and the page count the last
//! writer recorded. Without a write-ahead log beside it, a healthy file is
//! a whole number of pages, at least as many as its header counts. (With a
//! log, the log may hold pages past the end of the main file until the next
//! checkpoint, so only the header is checked.)

use std::io::Read;
use std::path::Path;

use litebus::{Error, Result};

const MAGIC: &[u8; 16] = b"SQLite format 3\0";
const HEADER: usize = 100;

fn damaged(path: &Path, why: &str) -> Error {
    Error::Corrupt(format!(
        "{} is not a usable litebus database: {why}; it was left as it is",
        path.display()
    ))
}

/// Checks the database file at `path` before anything writes to it. A file
/// that does not exist yet, or is empty, is a new database.
pub fn check_file(path: &Path) -> Result<()> {
    // A file that cannot be read here: opening creates it, or says why not.
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(());
    };
    let size = file.metadata().map_or(0, |m| m.len());
    if size == 0 {
        return Ok(());
    }
    let mut header = [0u8; HEADER];
    if file.read_exact(&mut header).is_err() {
        return Err(damaged(path, "shorter than a database header"));
    }
    if &header[..16] != MAGIC {
        return Err(damaged(path, "not an SQLite database"));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    if !page_size.is_power_of_two() || !(512..=65_536).contains(&page_size) {
        return Err(damaged(path, &format!("page size {page_size} is not one")));
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    if size % page_size != 0 {
        return Err(damaged(
            path,
            &format!("{size} bytes is not a whole number of {page_size}-byte pages (cut?)"),
        ));
    }
    // Every writer since SQLite 3.7.0 (2010) keeps the page count current.
    // (SQLite's own rule also asks the version-valid-for number to match
    // the change counter, which turso does not keep: it stores its version
    // there.)
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    if pages > 0 && size < pages * page_size {
        return Err(damaged(
            path,
            &format!(
                "its header counts {pages} pages, the file holds {} (cut?)",
                size / page_size
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page_size: u16, pages: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&page_size.to_be_bytes());
        h[28..32].copy_from_slice(&pages.to_be_bytes());
        h
    }

    fn file_of(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("litebus-sql-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn refused(name: &str, bytes: &[u8]) -> String {
        let path = file_of(name, bytes);
        let e = check_file(&path).expect_err(name);
        assert!(matches!(e, Error::Corrupt(_)), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}: unchanged");
        e.to_string()
    }

    #[test]
    fn whole_files_pass() {
        let mut whole = header(4096, 3);
        whole.resize(3 * 4096, 0);
        check_file(&file_of("whole.db", &whole)).unwrap();
        check_file(&file_of("empty.db", &[])).unwrap();
        check_file(Path::new("/nonexistent/litebus/new.db")).unwrap();
    }

    #[test]
    fn damaged_files_are_refused_unchanged() {
        assert!(refused("short.db", b"SQLite format 3\0abc").contains("header"));
        assert!(refused("noise.db", &[0x5a; 4096]).contains("not an SQLite"));
        let mut odd = header(1000, 1);
        odd.resize(1000, 0);
        assert!(refused("odd.db", &odd).contains("page size"));
        let mut cut = header(4096, 4);
        cut.resize(4096 + 100, 0);
        assert!(refused("cut.db", &cut).contains("whole number"));
        let mut half = header(4096, 4);
        half.resize(2 * 4096, 0);
        assert!(refused("half.db", &half).contains("counts 4 pages"));
    }

    #[test]
    fn a_log_beside_the_file_may_hold_its_last_pages() {
        let mut short = header(4096, 4);
        short.resize(2 * 4096, 0);
        let path = file_of("logged.db", &short);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::write(&wal, [1u8; 32]).unwrap();
        check_file(&path).unwrap();
        std::fs::remove_file(&wal).unwrap();
        assert!(check_file(&path).is_err());
    }
}
