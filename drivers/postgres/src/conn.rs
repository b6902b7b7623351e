//! How `litebus-sql` statements run on a PostgreSQL connection (in their
//! PostgreSQL form, see `litebus_sql::dialect`), and how sqlx errors
//! become litebus errors.

use std::collections::HashMap;
use std::ops::DerefMut;
use std::sync::{Arc, Mutex, PoisonError};

use litebus::driver::BoxFuture;
use litebus::{DriverError, Error, Message, Outcome, Result};
use litebus_sql::{Conn, Dialect, PG_BEGIN, Row, Value};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Postgres, Row as _, TypeInfo, ValueRef};

/// The PostgreSQL forms of the statements run so far, by their SQLite text.
#[derive(Debug, Default)]
pub(crate) struct Statements {
    forms: Mutex<HashMap<String, Arc<[String]>>>,
}

/// Statements whose forms are kept: beyond this many (statements made for
/// counts of rows), the list starts over.
const KEPT_FORMS: usize = 2048;

impl Statements {
    fn form(&self, sql: &str) -> Arc<[String]> {
        let mut forms = self.forms.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(form) = forms.get(sql) {
            return form.clone();
        }
        if forms.len() >= KEPT_FORMS {
            forms.clear();
        }
        let form: Arc<[String]> = litebus_sql::dialect::postgres_parts(sql).into();
        forms.insert(sql.to_owned(), form.clone());
        form
    }
}

/// A sqlx connection as a [`Conn`]: a borrowed one (an application's
/// transaction) or one of the pool's.
pub(crate) struct PgConn<C> {
    conn: C,
    statements: Arc<Statements>,
}

impl<C: DerefMut<Target = PgConnection> + Send> PgConn<C> {
    pub(crate) fn new(conn: C, statements: Arc<Statements>) -> Self {
        PgConn { conn, statements }
    }
}

/// The engine's view of the driver: the pool its transactions go through.
pub(crate) struct PgBackend {
    pub(crate) pool: PgPool,
    pub(crate) statements: Arc<Statements>,
}

impl litebus_sql::Backend for PgBackend {
    type Connection = PgConn<PoolConnection<Postgres>>;

    fn connect(&self) -> BoxFuture<'_, Result<Self::Connection>> {
        Box::pin(async move {
            let conn = self.pool.acquire().await.map_err(|e| map_err(&e))?;
            Ok(PgConn::new(conn, self.statements.clone()))
        })
    }

    fn begin(&self) -> &'static str {
        PG_BEGIN
    }
}

/// SQLSTATE classes and codes litebus tells apart.
fn sqlstate_error(code: &str, message: &str) -> Error {
    match code {
        // The same words the SQLite drivers' errors have: the steps read
        // them (a known id, a deleted topic).
        "23505" => DriverError::fatal(format!("UNIQUE constraint failed: {message}")).into(),
        // Serialization failure, deadlock, lock not available, too many
        // connections, the server shutting down or starting up: try again.
        "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03" | "08000" | "08003"
        | "08006" | "08001" | "08004" => DriverError::retryable(message.to_owned()).into(),
        "XX001" | "XX002" => Error::Corrupt(message.to_owned()),
        _ => DriverError::fatal(message.to_owned()).into(),
    }
}

/// Connection losses and timeouts are retryable; a unique violation reads
/// as SQLite's.
pub(crate) fn map_err(e: &sqlx::Error) -> Error {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => sqlstate_error(&code, db.message()),
            None => DriverError::fatal(db.message().to_owned()).into(),
        },
        sqlx::Error::PoolTimedOut => {
            DriverError::retryable("timed out waiting for a connection").into()
        }
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
            DriverError::retryable(format!("lost the connection to PostgreSQL: {e}")).into()
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Error::Corrupt(e.to_string()),
        other => DriverError::fatal(other.to_string()).into(),
    }
}

fn bind(
    mut query: sqlx::query::Query<'_, Postgres, PgArguments>,
    params: Vec<Value>,
) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    for p in params {
        query = match p {
            // Typed: a prepared statement keeps the types its parameters
            // had the first time.
            Value::Null => query.bind(None::<i64>),
            Value::NullText => query.bind(None::<String>),
            Value::Int(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Blob(v) => query.bind(v),
        };
    }
    query
}

fn read_row(row: &PgRow) -> Result<Row> {
    let decode = |e: sqlx::Error| map_err(&e);
    let mut values = Vec::with_capacity(row.columns().len());
    for i in 0..row.columns().len() {
        let raw = row.try_get_raw(i).map_err(decode)?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            match raw.type_info().name() {
                "INT8" => Value::Int(row.try_get_unchecked(i).map_err(decode)?),
                "INT4" => Value::Int(i64::from(
                    row.try_get_unchecked::<i32, _>(i).map_err(decode)?,
                )),
                "INT2" => Value::Int(i64::from(
                    row.try_get_unchecked::<i16, _>(i).map_err(decode)?,
                )),
                "BOOL" => Value::Int(i64::from(
                    row.try_get_unchecked::<bool, _>(i).map_err(decode)?,
                )),
                "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => {
                    Value::Text(row.try_get_unchecked(i).map_err(decode)?)
                }
                "BYTEA" => Value::Blob(row.try_get_unchecked(i).map_err(decode)?),
                "VOID" => Value::Null,
                other => return Err(Error::Corrupt(format!("unexpected column type {other}"))),
            }
        };
        values.push(value);
    }
    Ok(Row(values))
}

impl<C: DerefMut<Target = PgConnection> + Send> Conn for PgConn<C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute<'a>(&'a mut self, sql: &'a str, params: Vec<Value>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            if params.is_empty() && (sql == PG_BEGIN || is_control(sql)) {
                // One round trip, unprepared (the simple protocol takes
                // two statements at once).
                let done = sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut *self.conn)
                    .await
                    .map_err(|e| map_err(&e))?;
                return Ok(done.rows_affected());
            }
            let form = self.statements.form(sql);
            let mut changed = 0;
            for part in form.iter() {
                let query = bind(sqlx::query(AssertSqlSafe(part.as_str())), params.clone());
                let done = query
                    .execute(&mut *self.conn)
                    .await
                    .map_err(|e| map_err(&e))?;
                changed += done.rows_affected();
            }
            Ok(changed)
        })
    }

    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let form = self.statements.form(sql);
            let mut rows = Vec::new();
            for part in form.iter() {
                let query = bind(sqlx::query(AssertSqlSafe(part.as_str())), params.clone());
                let got = query
                    .fetch_all(&mut *self.conn)
                    .await
                    .map_err(|e| map_err(&e))?;
                for row in &got {
                    rows.push(read_row(row)?);
                }
            }
            Ok(rows)
        })
    }
}

/// Transaction control, which has nothing to prepare (a `BEGIN` may take
/// locks with it: `PG_BEGIN`, a claim apart's).
fn is_control(sql: &str) -> bool {
    [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT ",
        "RELEASE ",
        "ROLLBACK TO ",
    ]
    .iter()
    .any(|c| sql.starts_with(c))
}

/// Publishes inside an application's own sqlx transaction (the outbox): the
/// message is stored if and only if the transaction commits, and every
/// subscriber of the store, on any host, is woken by its commit.
///
/// The transaction takes the store's write lock until it ends (as every
/// publish does): keep it short. The message is checked as
/// [`Bus::publish`](litebus::Bus::publish) checks it, with the default size
/// limit (1 MiB); an id is generated if it has none. The litebus tables are
/// those of the connection's `search_path`.
pub async fn publish_in(tx: &mut PgConnection, topic: &str, message: Message) -> Result<Outcome> {
    litebus_sql::publish_in(&mut PgConn::new(tx, Arc::default()), topic, message).await
}
