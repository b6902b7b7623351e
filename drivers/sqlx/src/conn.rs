//! How `litebus-sql` statements run on a sqlx SQLite connection, and how
//! sqlx errors become litebus errors.

use litebus::driver::BoxFuture;
use litebus::{DriverError, Error, Message, Outcome, Result};
use litebus_sql::{Conn, Row, Value};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{AssertSqlSafe, Row as _, Sqlite, SqliteConnection, SqlitePool, TypeInfo, ValueRef};
use std::ops::DerefMut;

/// A sqlx connection as a [`Conn`]: a borrowed one (an application's
/// transaction) or one of the pool's.
pub(crate) struct SqlxConn<C> {
    conn: C,
}

impl<C: DerefMut<Target = SqliteConnection> + Send> SqlxConn<C> {
    pub(crate) fn new(conn: C) -> Self {
        SqlxConn { conn }
    }
}

/// The engine's view of the driver: the pool its writes go through.
pub(crate) struct SqlxBackend {
    pub(crate) pool: SqlitePool,
}

impl litebus_sql::Backend for SqlxBackend {
    type Connection = SqlxConn<PoolConnection<Sqlite>>;

    fn connect(&self) -> BoxFuture<'_, Result<Self::Connection>> {
        Box::pin(async move {
            let conn = self.pool.acquire().await.map_err(|e| map_err(&e))?;
            Ok(SqlxConn::new(conn))
        })
    }
}

/// SQLite's primary result codes that litebus tells apart.
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOTADB: i64 = 26;

/// Busy and locked are retryable; a damaged or foreign file is `Corrupt`.
pub(crate) fn map_err(e: &sqlx::Error) -> Error {
    match e {
        sqlx::Error::Database(db) => {
            let code = db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            match code {
                Some(SQLITE_BUSY | SQLITE_LOCKED) => DriverError::retryable(db.message()).into(),
                Some(SQLITE_CORRUPT | SQLITE_NOTADB) => {
                    Error::Corrupt(format!("not a usable litebus database: {}", db.message()))
                }
                _ => DriverError::fatal(db.message().to_owned()).into(),
            }
        }
        sqlx::Error::PoolTimedOut => {
            DriverError::retryable("timed out waiting for a connection").into()
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Error::Corrupt(e.to_string()),
        other => DriverError::fatal(other.to_string()).into(),
    }
}

fn bind(
    mut query: sqlx::query::Query<'_, sqlx::Sqlite, SqliteArguments>,
    params: Vec<Value>,
) -> sqlx::query::Query<'_, sqlx::Sqlite, SqliteArguments> {
    for p in params {
        query = match p {
            Value::Null | Value::NullText => query.bind(None::<i64>),
            Value::Int(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Blob(v) => query.bind(v),
        };
    }
    query
}

fn read_row(row: &SqliteRow) -> Result<Row> {
    let mut values = Vec::with_capacity(row.columns().len());
    for i in 0..row.columns().len() {
        let raw = row.try_get_raw(i).map_err(|e| map_err(&e))?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            match raw.type_info().name() {
                "INTEGER" | "BOOLEAN" => {
                    Value::Int(row.try_get_unchecked(i).map_err(|e| map_err(&e))?)
                }
                "TEXT" => Value::Text(row.try_get_unchecked(i).map_err(|e| map_err(&e))?),
                "BLOB" => Value::Blob(row.try_get_unchecked(i).map_err(|e| map_err(&e))?),
                other => return Err(Error::Corrupt(format!("unexpected column type {other}"))),
            }
        };
        values.push(value);
    }
    Ok(Row(values))
}

impl<C: DerefMut<Target = SqliteConnection> + Send> Conn for SqlxConn<C> {
    fn execute<'a>(&'a mut self, sql: &'a str, params: Vec<Value>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let query = bind(sqlx::query(AssertSqlSafe(sql)), params);
            let done = query
                .execute(&mut *self.conn)
                .await
                .map_err(|e| map_err(&e))?;
            Ok(done.rows_affected())
        })
    }

    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let query = bind(sqlx::query(AssertSqlSafe(sql)), params);
            let rows = query
                .fetch_all(&mut *self.conn)
                .await
                .map_err(|e| map_err(&e))?;
            rows.iter().map(read_row).collect()
        })
    }
}

/// Publishes inside an application's own sqlx transaction (the outbox): the
/// message is stored if and only if the transaction commits. Subscribers of
/// a bus in this process, and in others, see it once committed (buses notice
/// commits they did not make through `PRAGMA data_version`).
///
/// The message is checked as [`Bus::publish`](litebus::Bus::publish) checks
/// it, with the default size limit (1 MiB); an id is generated if it has
/// none.
pub async fn publish_in(
    tx: &mut SqliteConnection,
    topic: &str,
    message: Message,
) -> Result<Outcome> {
    litebus_sql::publish_in(&mut SqlxConn::new(tx), topic, message).await
}
