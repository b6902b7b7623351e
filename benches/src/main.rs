//! The SQL drivers (`SqlxDriver`, `TursoDriver`; file and `:memory:`)
//! side by side, beside raw inserts through the same engines (raw sqlx with
//! the drivers' pragmas: WAL and synchronous=NORMAL), all in the same run.
//!
//! `cargo run --release -p litebus-bench [-- --quick]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::yield_now;
use litebus::{Bus, BusOptions, Delivery, GroupOptions, Message, Order};
use litebus_sqlx::SqlxDriver;
use litebus_turso::TursoDriver;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

const PAYLOAD: [u8; 100] = [7; 100];

struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("litebus-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn fresh(&self, name: &str) -> PathBuf {
        let path = self.0.join(format!("{name}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// Where a workload's bus keeps its messages.
#[derive(Debug, Clone, Copy)]
enum Store {
    SqlxFile,
    SqlxMemory,
    TursoFile,
    TursoMemory,
}

const STORES: [Store; 4] = [
    Store::SqlxFile,
    Store::SqlxMemory,
    Store::TursoFile,
    Store::TursoMemory,
];

/// A bus on `store`; file stores use `path`.
async fn bus_on(store: Store, path: &Path) -> Bus {
    let options = BusOptions::new();
    match store {
        Store::SqlxFile => Bus::open(SqlxDriver::open(path).await.unwrap(), options),
        Store::SqlxMemory => Bus::open(SqlxDriver::memory().await.unwrap(), options),
        Store::TursoFile => Bus::open(TursoDriver::open(path).await.unwrap(), options),
        Store::TursoMemory => Bus::open(TursoDriver::memory().await.unwrap(), options),
    }
    .unwrap()
}

async fn raw_pool(path: &Path) -> sqlx::SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, id TEXT, payload BLOB)")
        .execute(&pool)
        .await
        .unwrap();
    pool
}

/// Raw sqlx: one INSERT per row, 100 rows per transaction.
async fn raw_single_inserts(path: &Path, n: usize) -> f64 {
    let pool = raw_pool(path).await;
    let start = Instant::now();
    for chunk in 0..n / 100 {
        let mut tx = pool.begin().await.unwrap();
        for i in 0..100 {
            sqlx::query("INSERT INTO rows (topic, id, payload) VALUES (?1, ?2, ?3)")
                .bind("bench")
                .bind(format!("{chunk}-{i}"))
                .bind(&PAYLOAD[..])
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    rate(n, start.elapsed())
}

/// Raw sqlx: one multi-row INSERT per 100 rows.
async fn raw_multi_row_inserts(path: &Path, n: usize) -> f64 {
    let pool = raw_pool(path).await;
    let sql = multi_row_insert();
    let start = Instant::now();
    for chunk in 0..n / 100 {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
        for i in 0..100 {
            query = query
                .bind("bench")
                .bind(format!("{chunk}-{i}"))
                .bind(&PAYLOAD[..]);
        }
        query.execute(&pool).await.unwrap();
    }
    rate(n, start.elapsed())
}

async fn raw_turso(path: &Path) -> turso::Connection {
    let db = turso::Builder::new_local(path.to_str().unwrap())
        .build()
        .await
        .unwrap();
    let conn = db.connect().unwrap();
    conn.execute("PRAGMA synchronous = NORMAL", ())
        .await
        .unwrap();
    conn.execute(
        "CREATE TABLE rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, id TEXT, payload BLOB)",
        (),
    )
    .await
    .unwrap();
    conn
}

/// Raw turso: one INSERT per row, 100 rows per transaction.
async fn raw_turso_single_inserts(path: &Path, n: usize) -> f64 {
    let conn = raw_turso(path).await;
    let start = Instant::now();
    for chunk in 0..n / 100 {
        conn.execute("BEGIN IMMEDIATE", ()).await.unwrap();
        for i in 0..100 {
            let mut insert = conn
                .prepare_cached("INSERT INTO rows (topic, id, payload) VALUES (?1, ?2, ?3)")
                .await
                .unwrap();
            insert
                .execute((
                    "bench",
                    format!("{chunk}-{i}"),
                    turso::Value::Blob(PAYLOAD.to_vec()),
                ))
                .await
                .unwrap();
        }
        conn.execute("COMMIT", ()).await.unwrap();
    }
    rate(n, start.elapsed())
}

/// Raw turso: one multi-row INSERT per 100 rows.
async fn raw_turso_multi_row_inserts(path: &Path, n: usize) -> f64 {
    let conn = raw_turso(path).await;
    let sql = multi_row_insert();
    let start = Instant::now();
    for chunk in 0..n / 100 {
        let mut params = Vec::with_capacity(300);
        for i in 0..100 {
            params.push(turso::Value::Text("bench".into()));
            params.push(turso::Value::Text(format!("{chunk}-{i}")));
            params.push(turso::Value::Blob(PAYLOAD.to_vec()));
        }
        let mut insert = conn.prepare_cached(&sql).await.unwrap();
        insert.execute(params).await.unwrap();
    }
    rate(n, start.elapsed())
}

fn multi_row_insert() -> String {
    let mut sql = String::from("INSERT INTO rows (topic, id, payload) VALUES ");
    for i in 0..100 {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?, ?, ?)");
    }
    sql
}

async fn publish_single(store: Store, path: &Path, n: usize) -> f64 {
    let bus = bus_on(store, path).await;
    let start = Instant::now();
    for _ in 0..n {
        bus.publish("bench", Message::new(PAYLOAD)).await.unwrap();
    }
    let r = rate(n, start.elapsed());
    bus.close().await.unwrap();
    r
}

async fn publish_concurrent(store: Store, path: &Path, n: usize, tasks: usize) -> f64 {
    let bus = bus_on(store, path).await;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for _ in 0..n / tasks {
                    bus.publish("bench", Message::new(PAYLOAD)).await.unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let r = rate(n / tasks * tasks, start.elapsed());
    bus.close().await.unwrap();
    r
}

async fn publish_batches(bus: &Bus, n: usize, batch: usize) {
    for _ in 0..n / batch {
        bus.publish_batch("bench", (0..batch).map(|_| Message::new(PAYLOAD)))
            .await
            .unwrap();
    }
}

async fn publish_batched(store: Store, path: &Path, n: usize) -> f64 {
    let bus = bus_on(store, path).await;
    let start = Instant::now();
    publish_batches(&bus, n, 100).await;
    let r = rate(n, start.elapsed());
    bus.close().await.unwrap();
    r
}

/// Receives what is buffered (up to `prefetch`) and acks it all at once, so
/// the acks share a transaction.
async fn drain(sub: &litebus::Subscription, n: usize) {
    let mut done = 0;
    while done < n {
        let mut batch: Vec<Delivery> = vec![sub.recv().await.unwrap()];
        while batch.len() < 100 {
            match sub.try_recv().await.unwrap() {
                Some(d) => batch.push(d),
                None => break,
            }
        }
        done += batch.len();
        // Acked side by side: they queue together and share a statement.
        let acks = batch
            .iter()
            .map(|d| Box::pin(d.ack()) as litebus::driver::BoxFuture<'_, litebus::Result<()>>)
            .collect();
        for ack in litebus::conformance::join_all(acks).await {
            ack.unwrap();
        }
    }
}

/// Claim and ack `n` messages from a backlog of `backlog` (≥ n) already
/// stored, in `groups` groups at once; msgs/s per group.
async fn end_to_end(store: Store, path: &Path, backlog: usize, n: usize, groups: usize) -> f64 {
    let bus = bus_on(store, path).await;
    let options = GroupOptions::new()
        .order(Order::Shared {
            max_in_flight: 1000,
        })
        .prefetch(100);
    let mut subs = Vec::new();
    for g in 0..groups {
        subs.push(Arc::new(
            bus.subscribe("bench", &format!("g{g}"), options.clone())
                .await
                .unwrap(),
        ));
    }
    publish_batches(&bus, backlog, 1000).await;
    let start = Instant::now();
    let handles: Vec<_> = subs
        .into_iter()
        .map(|sub| tokio::spawn(async move { drain(&sub, n).await }))
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let r = rate(n, start.elapsed());
    bus.close().await.unwrap();
    r
}

/// Publish → receive for a caught-up subscriber: (p50, p99) in µs.
async fn latency(store: Store, path: &Path, samples: usize) -> (f64, f64) {
    let bus = bus_on(store, path).await;
    let sub = bus
        .subscribe("bench", "live", GroupOptions::new())
        .await
        .unwrap();
    let mut micros = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        let (got, published) = futures_lite::future::zip(sub.recv(), async {
            yield_now().await;
            bus.publish("bench", Message::new(PAYLOAD)).await
        })
        .await;
        published.unwrap();
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        got.unwrap().ack().await.unwrap();
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
    bus.close().await.unwrap();
    (at(0.5), at(0.99))
}

/// One workload on every store: msgs/s per store.
async fn on_every_store<F, Fut>(scratch: &Scratch, name: &str, mut run: F) -> [f64; 4]
where
    F: FnMut(Store, PathBuf) -> Fut,
    Fut: Future<Output = f64>,
{
    let mut rates = [0.0; 4];
    for (i, store) in STORES.into_iter().enumerate() {
        rates[i] = run(store, scratch.fresh(&format!("{name}-{i}"))).await;
    }
    rates
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 20 };
    let scratch = Scratch::new();
    let n = 1_000 * scale;

    let sqlx_single = raw_single_inserts(&scratch.fresh("raw1"), n).await;
    let sqlx_multi = raw_multi_row_inserts(&scratch.fresh("raw2"), 10 * n).await;
    let turso_single = raw_turso_single_inserts(&scratch.fresh("raw3"), n).await;
    let turso_multi = raw_turso_multi_row_inserts(&scratch.fresh("raw4"), 10 * n).await;
    println!("litebus SQL drivers, 100-byte payloads, 2 tokio workers, msgs/s");
    println!("baselines, rows/s (raw inserts into a file through the same engine):");
    println!(
        "  sqlx  (WAL, synchronous=NORMAL): 1 INSERT per row, 100 per tx {sqlx_single:.0}; multi-row INSERT of 100 {sqlx_multi:.0}"
    );
    println!(
        "  turso (WAL, synchronous=NORMAL): 1 INSERT per row, 100 per tx {turso_single:.0}; multi-row INSERT of 100 {turso_multi:.0}"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "workload", "sqlx file", "sqlx mem", "turso file", "turso mem", "sqlx/raw", "turso/raw"
    );
    let row = |name: &str, r: [f64; 4], sqlx_base: f64, turso_base: f64| {
        println!(
            "{name:<44} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>8.2} {:>8.2}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[0] / sqlx_base,
            r[2] / turso_base
        );
    };

    row(
        "publish, 1 task, 1 per call",
        on_every_store(&scratch, "p1", |s, p| async move {
            publish_single(s, &p, n).await
        })
        .await,
        sqlx_single,
        turso_single,
    );
    row(
        "publish, 16 tasks, 1 per call",
        on_every_store(&scratch, "p16", |s, p| async move {
            publish_concurrent(s, &p, 4 * n, 16).await
        })
        .await,
        sqlx_single,
        turso_single,
    );
    row(
        "publish, batches of 100",
        on_every_store(&scratch, "pb", |s, p| async move {
            publish_batched(s, &p, 10 * n).await
        })
        .await,
        sqlx_multi,
        turso_multi,
    );
    let small = if quick { 2_000 } else { 10_000 };
    let large = if quick { 5_000 } else { 100_000 };
    row(
        &format!("claim + ack, 1 group, {small} stored"),
        on_every_store(&scratch, "e1", |s, p| async move {
            end_to_end(s, &p, small, small, 1).await
        })
        .await,
        sqlx_multi,
        turso_multi,
    );
    row(
        &format!("claim + ack, 1 group, {large} stored"),
        on_every_store(&scratch, "e2", |s, p| async move {
            end_to_end(s, &p, large, small, 1).await
        })
        .await,
        sqlx_multi,
        turso_multi,
    );
    row(
        &format!("claim + ack, 4 groups (per group), {small} stored"),
        on_every_store(&scratch, "e4", |s, p| async move {
            end_to_end(s, &p, small, small, 4).await
        })
        .await,
        sqlx_multi,
        turso_multi,
    );
    println!(
        "claim + ack: prefetch 100, acks of a batch side by side; ratios to the multi-row INSERT"
    );
    let samples = if quick { 100 } else { 2_000 };
    println!("publish -> receive, caught-up subscriber (p50 / p99, µs):");
    for (i, store) in STORES.into_iter().enumerate() {
        let (p50, p99) = latency(store, &scratch.fresh(&format!("lat-{i}")), samples).await;
        println!("  {store:?}: {p50:.0} / {p99:.0}");
    }
}
