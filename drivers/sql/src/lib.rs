//! The one copy of litebus's SQL: the schema and its migrations, every
//! statement, and the steps that turn each [`Driver`](litebus::driver::Driver) call
//! into statements. A SQLite driver only supplies a [`Conn`] (how to run a
//! statement on its engine) and the transactions around each step.
//!
//! # Storage layout
//! - `litebus_messages`: every message; `seq` is the table's
//!   `INTEGER PRIMARY KEY AUTOINCREMENT`, so seqs rise in commit order, are
//!   never reused, and plain SQL can publish with an `INSERT`.
//! - `litebus_groups`: one row per group with its settings, its start, and
//!   `cursor`: the messages up to the cursor have been taken into the group.
//! - `litebus_handouts`: one row per message a group has taken in and not yet
//!   settled, with attempt, retry time and lease. Acks and dead letters delete
//!   the row, so the table holds only live work, and every claim is an index
//!   range over it.
//!
//! Time is never read from SQL (I10): every statement gets the bus clock's
//! time as a parameter.

/// The next message of a per-key group's key after a seq, up to the
/// group's cursor, selecting `$columns`, for topic `$topic`, group `$grp`,
/// key `$key` and seq `$seq`: written once for the trigger that runs it
/// (`litebus_next_of_key`, on the deleted row's values) and for the plan
/// test (`hot::NEXT_OF_KEY`, on parameters). (`m.msg_key IS NOT NULL`,
/// implied by the equality, lets turso's planner use the partial index on
/// keys rather than read every message up to the cursor.)
macro_rules! next_of_key {
    ($columns:expr, $topic:expr, $grp:expr, $key:expr, $seq:expr) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM litebus_messages m
             WHERE m.topic = ",
            $topic,
            " AND m.msg_key = ",
            $key,
            " AND m.msg_key IS NOT NULL AND m.seq > ",
            $seq,
            "
               AND m.seq <= (SELECT g.cursor FROM litebus_groups g
                             WHERE g.topic = ",
            $topic,
            " AND g.grp = ",
            $grp,
            " AND g.ordering = 'per_key')
             ORDER BY m.seq LIMIT 1"
        )
    };
}

/// The [`Driver`](litebus::driver::Driver) methods that are calls of the
/// driver's [`Engine`] in its field `$engine`, as they are: inside an
/// `impl Driver for …` block of a driver whose engine is pumped (the sqlx
/// drivers).
#[macro_export]
macro_rules! engine_calls {
    ($engine:ident) => {
        fn append<'a>(
            &'a self,
            append: ::litebus::driver::Append<'a>,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<Vec<::litebus::Outcome>>> {
            self.$engine.append(append)
        }

        fn ensure_group<'a>(
            &'a self,
            group: ::litebus::driver::EnsureGroup<'a>,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<()>> {
            self.$engine.ensure_group(group)
        }

        fn claim<'a>(
            &'a self,
            claim: ::litebus::driver::Claim<'a>,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<::litebus::driver::ClaimOutcome>>
        {
            self.$engine.claim(claim)
        }

        fn settle<'a>(
            &'a self,
            settle: ::litebus::driver::Settle<'a>,
        ) -> ::litebus::driver::BoxFuture<
            'a,
            ::litebus::Result<Option<::litebus::driver::DeadLettered>>,
        > {
            self.$engine.settle(settle)
        }

        fn release<'a>(
            &'a self,
            release: ::litebus::driver::Release<'a>,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<Vec<::litebus::driver::DeadLettered>>>
        {
            self.$engine.release(release)
        }

        fn seek<'a>(
            &'a self,
            seek: ::litebus::driver::Seek<'a>,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<()>> {
            self.$engine.seek(seek)
        }

        fn redrive<'a>(
            &'a self,
            redrive: ::litebus::driver::Redrive<'a>,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<Vec<u64>>> {
            self.$engine.redrive(redrive)
        }

        fn delete_group<'a>(
            &'a self,
            topic: &'a str,
            group: &'a str,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<bool>> {
            self.$engine.delete_group(topic, group)
        }

        fn topics(&self) -> ::litebus::driver::BoxFuture<'_, ::litebus::Result<Vec<String>>> {
            self.$engine.topics()
        }

        fn delete_topic<'a>(
            &'a self,
            step: ::litebus::driver::DeleteTopic<'a>,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<::litebus::driver::TopicDeletion>>
        {
            self.$engine.delete_topic(step)
        }

        fn set_retention<'a>(
            &'a self,
            topic: &'a str,
            retention: ::litebus::Retention,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<()>> {
            self.$engine.set_retention(topic, retention)
        }

        fn prune<'a>(
            &'a self,
            prune: ::litebus::driver::Prune<'a>,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<u64>> {
            self.$engine.prune(prune)
        }

        fn read<'a>(
            &'a self,
            read: ::litebus::driver::Read<'a>,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<Vec<::litebus::Record>>> {
            self.$engine.read(read)
        }

        fn stats<'a>(
            &'a self,
            topic: &'a str,
            now: ::litebus::Timestamp,
        ) -> ::litebus::driver::BoxFuture<'a, ::litebus::Result<::litebus::driver::TopicStats>>
        {
            self.$engine.stats(topic, now)
        }
    };
}

pub mod codec;
pub mod dialect;
pub mod engine;
mod file;
mod schema;
mod steps;
mod store;

pub use dialect::Dialect;
pub use engine::{Backend, Engine};
pub use file::check_file;
pub use schema::{PG_BEGIN, SCHEMA_VERSION, migrate};
#[cfg(not(target_arch = "wasm32"))]
pub use steps::publish_in;
pub use steps::{
    ACK_CHUNK, ONE_STATEMENT_APPEND, REDRIVEN_PREFIX, ack_many, append, claim, claim_apart,
    delete_group, delete_topic, ensure_group, hand_off, has_retention, hot, insert_new,
    is_known_id, prune, read, redrive, release, seek, set_retention, settle, stats, topics,
};
pub use store::{FileWakeups, Files, Handle, Handles, file_wakeups, store_key};

use litebus::driver::BoxFuture;
use litebus::{Error, Result};

/// How durable a commit is on a file database (both SQL drivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL` (the default): a commit survives a killed process;
    /// in WAL mode a power loss takes every commit since the last checkpoint
    /// (measured on turso: up to all 60 publishes of a short run).
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is on disk before `publish` returns
    /// (measured on turso: 1000 power cuts lost nothing that returned).
    Full,
}

impl Durability {
    /// The statement that sets it on a connection.
    #[must_use]
    pub fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "PRAGMA synchronous = NORMAL",
            Durability::Full => "PRAGMA synchronous = FULL",
        }
    }
}

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL` (as a parameter: in the place of an `INTEGER`).
    Null,
    /// SQL `NULL` in the place of a `TEXT` (PostgreSQL, which keeps a
    /// prepared statement's parameter types, binds it as a text).
    NullText,
    /// An `INTEGER`.
    Int(i64),
    /// A `TEXT`.
    Text(String),
    /// A `BLOB`.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Value::NullText, Value::from)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}

/// One result row, by column position.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

fn wrong_type(i: usize, want: &str, got: &Value) -> Error {
    Error::Corrupt(format!("column {i}: expected {want}, found {got:?}"))
}

impl Row {
    fn get(&self, i: usize) -> Result<&Value> {
        self.0
            .get(i)
            .ok_or_else(|| Error::Internal(format!("a row has no column {i}")))
    }

    /// An `INTEGER` column.
    pub fn int(&self, i: usize) -> Result<i64> {
        match self.get(i)? {
            Value::Int(v) => Ok(*v),
            other => Err(wrong_type(i, "an integer", other)),
        }
    }

    /// A non-negative `INTEGER` column.
    pub fn uint(&self, i: usize) -> Result<u64> {
        let v = self.int(i)?;
        u64::try_from(v).map_err(|_| Error::Corrupt(format!("column {i}: negative {v}")))
    }

    /// An `INTEGER` column that may be `NULL`.
    pub fn opt_uint(&self, i: usize) -> Result<Option<u64>> {
        match self.get(i)? {
            Value::Null => Ok(None),
            _ => self.uint(i).map(Some),
        }
    }

    /// A `TEXT` column.
    pub fn text(&self, i: usize) -> Result<&str> {
        match self.get(i)? {
            Value::Text(v) => Ok(v),
            other => Err(wrong_type(i, "text", other)),
        }
    }

    /// A `TEXT` column that may be `NULL`.
    pub fn opt_text(&self, i: usize) -> Result<Option<&str>> {
        match self.get(i)? {
            Value::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    /// A `BLOB` column (a `TEXT` one is taken as its bytes).
    pub fn blob(&self, i: usize) -> Result<&[u8]> {
        match self.get(i)? {
            Value::Blob(v) => Ok(v),
            Value::Text(v) => Ok(v.as_bytes()),
            other => Err(wrong_type(i, "a blob", other)),
        }
    }
}

/// A connection inside a transaction the driver opened (`BEGIN IMMEDIATE`
/// for every step that writes). The steps of this crate run their statements
/// through it; the driver commits when a step returns `Ok` and rolls back
/// otherwise.
pub trait Conn: Send {
    /// The SQL this connection speaks: the steps run every statement as
    /// written (SQLite's) or in [`dialect::postgres`]'s form of it.
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// Runs a statement; returns how many rows it changed.
    fn execute<'a>(&'a mut self, sql: &'a str, params: Vec<Value>) -> BoxFuture<'a, Result<u64>>;

    /// Runs a query; returns its rows.
    fn query<'a>(&'a mut self, sql: &'a str, params: Vec<Value>)
    -> BoxFuture<'a, Result<Vec<Row>>>;

    /// Whether `RETURNING` costs far more than reading the rows back
    /// afterwards. turso 0.8 takes about 0.25 ms for an `INSERT … RETURNING`
    /// that runs in 15 µs without it; there the steps read the rows they
    /// wrote with a second statement instead (see `steps::returning`).
    /// SQLite (and sqlx, which pays a thread hop per statement) keeps
    /// `RETURNING`.
    fn slow_returning(&self) -> bool {
        false
    }

    /// The row id of the last row this connection inserted. The rows of
    /// one `INSERT` take consecutive row ids, so this gives the seqs of a
    /// multi-row insert without `RETURNING`.
    fn last_insert_rowid(&mut self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let rows = self.query("SELECT last_insert_rowid()", Vec::new()).await?;
            rows.first().map_or(Ok(0), |r| r.uint(0))
        })
    }
}
