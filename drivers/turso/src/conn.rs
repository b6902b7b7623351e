//! How `litebus-sql` statements run on a turso connection, and how turso
//! errors become litebus errors.

use litebus::driver::BoxFuture;
use litebus::{DriverError, Error, Result};
use litebus_sql::{Conn, Row, Value};

/// A turso connection as a [`Conn`] (a clone of the driver's one
/// connection: clones share it).
pub(crate) struct TursoConn {
    conn: turso::Connection,
}

/// The engine's view of the driver: its one connection, and how its write
/// transactions begin.
pub(crate) struct TursoBackend {
    pub(crate) conn: turso::Connection,
    pub(crate) begin: &'static str,
}

impl litebus_sql::Backend for TursoBackend {
    type Connection = TursoConn;

    fn connect(&self) -> BoxFuture<'_, Result<TursoConn>> {
        let conn = self.conn.clone();
        Box::pin(async move { Ok(TursoConn { conn }) })
    }

    fn begin(&self) -> &'static str {
        self.begin
    }
}

/// Busy is retryable; a damaged or foreign file is `Corrupt`; the rest is
/// fatal, with turso's own words.
pub(crate) fn map_err(e: turso::Error) -> Error {
    match e {
        turso::Error::Busy(m) | turso::Error::BusySnapshot(m) => DriverError::retryable(m).into(),
        turso::Error::Corrupt(m) | turso::Error::NotAdb(m) => {
            Error::Corrupt(format!("not a usable litebus database: {m}"))
        }
        turso::Error::Readonly(m) => {
            DriverError::fatal(format!("the database is read-only: {m}")).into()
        }
        turso::Error::ConversionFailure(m) => Error::Corrupt(m),
        other => DriverError::fatal(other.to_string()).into(),
    }
}

fn to_turso(params: Vec<Value>) -> Vec<turso::Value> {
    params
        .into_iter()
        .map(|v| match v {
            Value::Null | Value::NullText => turso::Value::Null,
            Value::Int(v) => turso::Value::Integer(v),
            Value::Text(v) => turso::Value::Text(v),
            Value::Blob(v) => turso::Value::Blob(v),
        })
        .collect()
}

fn from_turso(row: &turso::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(row.column_count());
    for i in 0..row.column_count() {
        values.push(match row.get_value(i).map_err(map_err)? {
            turso::Value::Null => Value::Null,
            turso::Value::Integer(v) => Value::Int(v),
            turso::Value::Text(v) => Value::Text(v),
            turso::Value::Blob(v) => Value::Blob(v),
            turso::Value::Real(v) => {
                return Err(Error::Corrupt(format!(
                    "column {i}: expected no REAL values, found {v}"
                )));
            }
        });
    }
    Ok(Row(values))
}

impl Conn for TursoConn {
    fn slow_returning(&self) -> bool {
        true
    }

    fn last_insert_rowid(&mut self) -> BoxFuture<'_, Result<u64>> {
        // Read off the connection: no statement.
        let id = self.conn.last_insert_rowid();
        Box::pin(async move {
            u64::try_from(id).map_err(|_| Error::Corrupt(format!("a negative row id {id}")))
        })
    }

    fn execute<'a>(&'a mut self, sql: &'a str, params: Vec<Value>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut statement = self.conn.prepare_cached(sql).await.map_err(map_err)?;
            statement.execute(to_turso(params)).await.map_err(map_err)
        })
    }

    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let mut statement = self.conn.prepare_cached(sql).await.map_err(map_err)?;
            let mut rows = statement.query(to_turso(params)).await.map_err(map_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().await.map_err(map_err)? {
                out.push(from_turso(&row)?);
            }
            Ok(out)
        })
    }
}
