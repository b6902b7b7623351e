//! What the same work costs without litebus: an async channel (for the
//! memory driver) and raw SQL through the same engines and pragmas (for the
//! SQL drivers).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{PAYLOAD, Params, Stopwatch};

const CREATE: &str =
    "CREATE TABLE rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, id TEXT, payload BLOB)";
const CONSUME: &str =
    "DELETE FROM rows WHERE seq IN (SELECT seq FROM rows ORDER BY seq LIMIT 100) RETURNING payload";

/// A page of 100 rows after a seq, as a reader takes them.
const READ_PAGE: &str = "SELECT seq, id, payload FROM rows WHERE seq > ?1 ORDER BY seq LIMIT 100";

fn multi_row_insert(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO rows (topic, id, payload) VALUES ");
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?, ?, ?)" } else { ",(?, ?, ?)" });
    }
    sql
}

/// async-channel: sends from `tasks` tasks until the cap or the budget.
pub async fn channel_send(p: &Params, tasks: usize) -> f64 {
    let (tx, rx) = async_channel::unbounded::<Vec<u8>>();
    let done = Arc::new(AtomicUsize::new(0));
    let clock = Stopwatch::start();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (tx, done, budget, cap) = (tx.clone(), done.clone(), p.budget, p.cap);
            tokio::spawn(async move {
                while done.load(Ordering::Relaxed) < cap && clock.elapsed() < budget {
                    tx.send(PAYLOAD.to_vec()).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let rate = clock.rate(done.load(Ordering::Relaxed));
    drop(rx);
    rate
}

/// async-channel: `receivers` tasks (per group: one channel per group,
/// every message sent to each) receive a backlog; msgs/s per group.
pub async fn channel_recv(p: &Params, backlog: usize, groups: usize, receivers: usize) -> f64 {
    let mut handles = Vec::new();
    let mut channels = Vec::new();
    for _ in 0..groups {
        let (tx, rx) = async_channel::unbounded::<Vec<u8>>();
        for _ in 0..backlog {
            tx.send(PAYLOAD.to_vec()).await.unwrap();
        }
        channels.push((tx, rx));
    }
    let clock = Stopwatch::start();
    for (_, rx) in &channels {
        for _ in 0..receivers {
            let (rx, budget) = (rx.clone(), p.budget);
            handles.push(tokio::spawn(async move {
                let mut n = 0;
                while clock.elapsed() < budget {
                    match rx.try_recv() {
                        Ok(m) => {
                            std::hint::black_box(m);
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                n
            }));
        }
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    clock.rate(total) / groups as f64
}

/// async-channel: send → receive by another task, p50/p99/p999 µs.
pub async fn channel_latency(p: &Params) -> [f64; 3] {
    let (tx, rx) = async_channel::bounded::<Instant>(1);
    let (back_tx, back_rx) = async_channel::bounded::<f64>(1);
    let echo = tokio::spawn(async move {
        while let Ok(sent) = rx.recv().await {
            if back_tx
                .send(sent.elapsed().as_secs_f64() * 1e6)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut micros = Vec::with_capacity(p.samples);
    for _ in 0..p.samples {
        tx.send(Instant::now()).await.unwrap();
        micros.push(back_rx.recv().await.unwrap());
    }
    drop(tx);
    echo.await.unwrap();
    crate::percentiles(micros)
}

/// A raw sqlx pool (one connection, the drivers' pragmas) with the table.
async fn sqlx_pool(path: Option<&Path>) -> sqlx::SqlitePool {
    let options = match path {
        Some(path) => SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal),
        None => SqliteConnectOptions::new().in_memory(true),
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query(CREATE).execute(&pool).await.unwrap();
    pool
}

async fn sqlx_insert(pool: &sqlx::SqlitePool, sql: &str, rows: usize, tag: usize) {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for i in 0..rows {
        query = query
            .bind("bench")
            .bind(format!("{tag}-{i}"))
            .bind(&PAYLOAD[..]);
    }
    query.execute(pool).await.unwrap();
}

/// A raw sqlx pool with `backlog` rows stored.
async fn sqlx_backlog(path: Option<&Path>, backlog: usize) -> sqlx::SqlitePool {
    let pool = sqlx_pool(path).await;
    let sql = multi_row_insert(1000);
    for chunk in 0..backlog.div_ceil(1000) {
        sqlx_insert(&pool, &sql, 1000, chunk * 1000).await;
    }
    pool
}

/// Raw sqlx: `rows` rows per statement and transaction (autocommit), from
/// `tasks` tasks, until the cap or the budget.
pub async fn sqlx_inserts(p: &Params, path: Option<&Path>, rows: usize, tasks: usize) -> f64 {
    let pool = sqlx_pool(path).await;
    let sql = Arc::new(multi_row_insert(rows));
    insert_loops(p, rows, tasks, move |tag| {
        let (pool, sql) = (pool.clone(), sql.clone());
        async move { sqlx_insert(&pool, &sql, rows, tag).await }
    })
    .await
}

/// `tasks` tasks, each calling `insert(tag)` (one statement of `rows`
/// rows, ids from `tag` on) until the cap or the budget: msgs/s.
async fn insert_loops<F, Fut>(p: &Params, rows: usize, tasks: usize, insert: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicUsize::new(0));
    let clock = Stopwatch::start();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (insert, done, budget, cap) = (insert.clone(), done.clone(), p.budget, p.cap);
            tokio::spawn(async move {
                while done.load(Ordering::Relaxed) < cap && clock.elapsed() < budget {
                    insert(done.fetch_add(rows, Ordering::Relaxed)).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    clock.rate(done.load(Ordering::Relaxed))
}

/// Raw sqlx: delete-and-return 100 rows per statement from a backlog.
pub async fn sqlx_consume(p: &Params, path: Option<&Path>, backlog: usize) -> f64 {
    let pool = sqlx_backlog(path, backlog).await;
    let clock = Stopwatch::start();
    let mut done = 0;
    while clock.elapsed() < p.budget {
        let got = sqlx::query(CONSUME).fetch_all(&pool).await.unwrap().len();
        if got == 0 {
            break;
        }
        done += got;
    }
    clock.rate(done)
}

/// Raw sqlx: reads a backlog in pages of 100 rows ([`READ_PAGE`]).
pub async fn sqlx_read(p: &Params, path: Option<&Path>, backlog: usize) -> f64 {
    use sqlx::Row;
    let pool = sqlx_backlog(path, backlog).await;
    let clock = Stopwatch::start();
    let (mut done, mut after) = (0, 0_i64);
    while clock.elapsed() < p.budget {
        let rows = sqlx::query(READ_PAGE)
            .bind(after)
            .fetch_all(&pool)
            .await
            .unwrap();
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        done += rows.len();
    }
    clock.rate(done)
}

async fn turso_conn(path: Option<&Path>) -> turso::Connection {
    let name = path.map_or(":memory:", |p| p.to_str().unwrap());
    let db = turso::Builder::new_local(name).build().await.unwrap();
    let conn = db.connect().unwrap();
    if path.is_some() {
        conn.execute("PRAGMA synchronous = NORMAL", ())
            .await
            .unwrap();
    }
    conn.execute(CREATE, ()).await.unwrap();
    conn
}

async fn turso_insert(conn: &turso::Connection, sql: &str, rows: usize, tag: usize) {
    let mut params = Vec::with_capacity(rows * 3);
    for i in 0..rows {
        params.push(turso::Value::Text("bench".into()));
        params.push(turso::Value::Text(format!("{tag}-{i}")));
        params.push(turso::Value::Blob(PAYLOAD.to_vec()));
    }
    let mut insert = conn.prepare_cached(sql).await.unwrap();
    insert.execute(params).await.unwrap();
}

/// A raw turso connection with `backlog` rows stored.
async fn turso_backlog(path: Option<&Path>, backlog: usize) -> turso::Connection {
    let conn = turso_conn(path).await;
    let sql = multi_row_insert(1000);
    for chunk in 0..backlog.div_ceil(1000) {
        turso_insert(&conn, &sql, 1000, chunk * 1000).await;
    }
    conn
}

/// Raw turso: `rows` rows per statement and transaction, until the cap or
/// the budget (one connection, one task: turso connections are not shared).
pub async fn turso_inserts(p: &Params, path: Option<&Path>, rows: usize) -> f64 {
    let conn = turso_conn(path).await;
    let sql = multi_row_insert(rows);
    let clock = Stopwatch::start();
    let mut done = 0;
    while done < p.cap && clock.elapsed() < p.budget {
        turso_insert(&conn, &sql, rows, done).await;
        done += rows;
    }
    clock.rate(done)
}

/// Raw turso: delete-and-return 100 rows per statement from a backlog.
pub async fn turso_consume(p: &Params, path: Option<&Path>, backlog: usize) -> f64 {
    let conn = turso_backlog(path, backlog).await;
    let clock = Stopwatch::start();
    let mut done = 0;
    while clock.elapsed() < p.budget {
        let mut rows = conn.query(CONSUME, ()).await.unwrap();
        let mut got = 0;
        while rows.next().await.unwrap().is_some() {
            got += 1;
        }
        if got == 0 {
            break;
        }
        done += got;
    }
    clock.rate(done)
}

/// Raw turso: reads a backlog in pages of 100 rows ([`READ_PAGE`]).
pub async fn turso_read(p: &Params, path: Option<&Path>, backlog: usize) -> f64 {
    let conn = turso_backlog(path, backlog).await;
    let clock = Stopwatch::start();
    let (mut done, mut after) = (0, 0_i64);
    while clock.elapsed() < p.budget {
        let mut read = conn.prepare_cached(READ_PAGE).await.unwrap();
        let mut rows = read.query([turso::Value::Integer(after)]).await.unwrap();
        let mut got = 0;
        while let Some(row) = rows.next().await.unwrap() {
            if let turso::Value::Integer(seq) = row.get_value(0).unwrap() {
                after = seq;
            }
            got += 1;
        }
        if got == 0 {
            break;
        }
        done += got;
    }
    clock.rate(done)
}

/// Raw PostgreSQL: a pool of `tasks` connections (at least 1) in a fresh
/// schema of the server `LITEBUS_PG_URL` names, with the table.
async fn pg_pool(path: &Path, connections: u32) -> sqlx::PgPool {
    let url = crate::runs::postgres_url().expect("LITEBUS_PG_URL");
    let schema = format!("{}_raw", crate::runs::postgres_schema(path));
    let connect: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let setup = sqlx::PgPool::connect_with(connect.clone()).await.unwrap();
    let fresh = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(fresh))
        .execute(&setup)
        .await
        .unwrap();
    setup.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections.max(1))
        .connect_with(connect.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE rows (seq BIGSERIAL PRIMARY KEY, topic TEXT, id TEXT, payload BYTEA)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// The SQLite text of [`multi_row_insert`] with PostgreSQL's parameters.
fn pg_multi_row_insert(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO rows (topic, id, payload) VALUES ");
    for i in 0..rows {
        let n = i * 3;
        if i > 0 {
            sql.push(',');
        }
        let _ = write!(sql, "(${}, ${}, ${})", n + 1, n + 2, n + 3);
    }
    sql
}

async fn pg_insert(pool: &sqlx::PgPool, sql: &str, rows: usize, tag: usize) {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for i in 0..rows {
        query = query
            .bind("bench")
            .bind(format!("{tag}-{i}"))
            .bind(&PAYLOAD[..]);
    }
    query.execute(pool).await.unwrap();
}

/// Raw PostgreSQL: `rows` rows per statement (autocommit) from `tasks`
/// tasks, each on a connection of its own, until the cap or the budget.
pub async fn pg_inserts(p: &Params, path: &Path, rows: usize, tasks: usize) -> f64 {
    let pool = pg_pool(path, tasks as u32).await;
    let sql = Arc::new(pg_multi_row_insert(rows));
    let inserts = pool.clone();
    let rate = insert_loops(p, rows, tasks, move |tag| {
        let (pool, sql) = (inserts.clone(), sql.clone());
        async move { pg_insert(&pool, &sql, rows, tag).await }
    })
    .await;
    pool.close().await;
    rate
}

/// Raw PostgreSQL: `consumers` tasks, each on a connection of its own,
/// delete-and-return 100 rows per statement from a backlog, skipping the
/// rows another holds (`FOR UPDATE SKIP LOCKED` inside a CTE with its
/// `LIMIT`).
pub async fn pg_consume(p: &Params, path: &Path, backlog: usize, consumers: usize) -> f64 {
    const CONSUME: &str = "WITH next AS (
            SELECT seq FROM rows ORDER BY seq LIMIT 100 FOR UPDATE SKIP LOCKED)
         DELETE FROM rows USING next WHERE rows.seq = next.seq RETURNING rows.payload";
    let pool = pg_pool(path, consumers as u32).await;
    let sql = pg_multi_row_insert(1000);
    for chunk in 0..backlog.div_ceil(1000) {
        pg_insert(&pool, &sql, 1000, chunk * 1000).await;
    }
    let clock = Stopwatch::start();
    let handles: Vec<_> = (0..consumers)
        .map(|_| {
            let (pool, budget) = (pool.clone(), p.budget);
            tokio::spawn(async move {
                let mut done = 0;
                while clock.elapsed() < budget {
                    let got = sqlx::query(CONSUME).fetch_all(&pool).await.unwrap().len();
                    if got == 0 {
                        break;
                    }
                    done += got;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    let rate = clock.rate(total);
    pool.close().await;
    rate
}
