//! Opening a store file, with a clear refusal of one this tool must not
//! touch: missing (unless asked to create it), damaged, another program's
//! SQLite database, or written by a newer litebus.

use std::path::Path;
use std::str::FromStr;

use litebus::{Bus, BusOptions};
use litebus_sqlx::SqlxDriver;
use litebus_turso::TursoDriver;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::DriverKind;
use crate::output::{Failure, STORE};

/// Opens the store at `path` with `driver`; `create` makes a new one when
/// there is none.
/// `audit` names the topics whose audit chains it keeps.
pub async fn open(
    path: &Path,
    driver: DriverKind,
    create: bool,
    audit: &[String],
) -> Result<Bus, Failure> {
    check(path, create).await?;
    let options = audit
        .iter()
        .fold(BusOptions::new(), |o, topic| o.audit(topic.as_str()));
    let opened = match driver {
        DriverKind::Sqlx => SqlxDriver::open(path)
            .await
            .and_then(|d| Bus::open(d, options)),
        DriverKind::Turso => TursoDriver::open(path)
            .await
            .and_then(|d| Bus::open(d, options)),
    };
    opened.map_err(|e| Failure::new(STORE, format!("cannot open {}: {e}", path.display())))
}

/// The refusals, before any driver opens (and so writes to) the file.
async fn check(path: &Path, create: bool) -> Result<(), Failure> {
    let shown = path.display();
    if !path.exists() {
        if create {
            return Ok(());
        }
        return Err(Failure::new(
            STORE,
            format!("no store at {shown} (`litebus pub` creates one; --db or LITEBUS_DB names it)"),
        ));
    }
    if path.is_dir() {
        return Err(Failure::new(STORE, format!("{shown} is a directory")));
    }
    litebus_sql::check_file(path).map_err(|e| Failure::new(STORE, e.to_string()))?;
    if std::fs::metadata(path).map_or(0, |m| m.len()) == 0 {
        return Ok(());
    }
    let version = schema_version(path)
        .await
        .map_err(|e| Failure::new(STORE, format!("cannot read {shown}: {e}")))?;
    match version {
        Schema::Litebus(v) if v > litebus_sql::SCHEMA_VERSION => Err(Failure::new(
            STORE,
            format!(
                "{shown} has litebus schema version {v}; this tool reads versions up to {} \
                 (use a newer litebus)",
                litebus_sql::SCHEMA_VERSION
            ),
        )),
        Schema::Other => Err(Failure::new(
            STORE,
            format!("{shown} is an SQLite database but not a litebus store; it was left as it is"),
        )),
        Schema::Litebus(_) | Schema::Empty => Ok(()),
    }
}

enum Schema {
    /// No tables yet: a new store.
    Empty,
    /// A litebus store at this schema version.
    Litebus(u64),
    /// Tables, none of them litebus's.
    Other,
}

/// What the file holds, read on a read-only connection.
async fn schema_version(path: &Path) -> Result<Schema, sqlx::Error> {
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .read_only(true);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    let tables: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
        .fetch_one(&mut conn)
        .await?;
    let meta: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'litebus_meta'",
    )
    .fetch_one(&mut conn)
    .await?;
    let schema = if meta == 1 {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT value FROM litebus_meta WHERE name = 'schema_version'")
                .fetch_optional(&mut conn)
                .await?;
        Schema::Litebus(v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    } else if tables == 0 {
        Schema::Empty
    } else {
        Schema::Other
    };
    conn.close().await?;
    Ok(schema)
}

/// The bytes the store takes on disk: the file and its write-ahead log.
pub fn size(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [path.as_os_str(), wal.as_os_str()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}
