//! `SqlxDriver` throughput and latency beside raw sqlx doing the same
//! inserts with the same pragmas (WAL, synchronous=NORMAL), in the same run.
//!
//! `cargo run --release -p litebus-sqlx --example bench_sqlx [-- --quick]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::yield_now;
use litebus::{Bus, BusOptions, Delivery, GroupOptions, Message, Order};
use litebus_sqlx::SqlxDriver;
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

async fn bus_on(path: Option<&Path>) -> Bus {
    let driver = match path {
        Some(path) => SqlxDriver::open(path).await.unwrap(),
        None => SqlxDriver::memory().await.unwrap(),
    };
    Bus::open(driver, BusOptions::new()).unwrap()
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
    let mut sql = String::from("INSERT INTO rows (topic, id, payload) VALUES ");
    for i in 0..100 {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?, ?, ?)");
    }
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

async fn publish_single(path: Option<&Path>, n: usize) -> f64 {
    let bus = bus_on(path).await;
    let start = Instant::now();
    for _ in 0..n {
        bus.publish("bench", Message::new(PAYLOAD)).await.unwrap();
    }
    let r = rate(n, start.elapsed());
    bus.close().await.unwrap();
    r
}

async fn publish_concurrent(path: Option<&Path>, n: usize, tasks: usize) -> f64 {
    let bus = bus_on(path).await;
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

async fn publish_batched(path: Option<&Path>, n: usize) -> f64 {
    let bus = bus_on(path).await;
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
async fn end_to_end(path: Option<&Path>, backlog: usize, n: usize, groups: usize) -> f64 {
    let bus = bus_on(path).await;
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
async fn latency(path: Option<&Path>, samples: usize) -> (f64, f64) {
    let bus = bus_on(path).await;
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 20 };
    let scratch = Scratch::new();
    let file = |name: &str| scratch.fresh(name);
    let n = 1_000 * scale;

    let raw_single = raw_single_inserts(&file("raw1"), n).await;
    let raw_multi = raw_multi_row_inserts(&file("raw2"), 10 * n).await;
    println!("SqlxDriver, 100-byte payloads, WAL, synchronous=NORMAL, 2 tokio workers");
    println!(
        "baselines (raw sqlx, same file settings): 1 INSERT per row, 100 per tx: {raw_single:.0} rows/s; multi-row INSERT of 100: {raw_multi:.0} rows/s"
    );
    println!(
        "{:<52} {:>12} {:>12} {:>10}",
        "workload", "file msg/s", "memory msg/s", "file/raw"
    );
    let row = |name: &str, f: f64, m: f64, base: f64| {
        println!("{name:<52} {f:>12.0} {m:>12.0} {:>10.2}", f / base);
    };

    row(
        "publish, 1 task, 1 per call",
        publish_single(Some(&file("p1")), n).await,
        publish_single(None, n).await,
        raw_single,
    );
    row(
        "publish, 16 tasks, 1 per call",
        publish_concurrent(Some(&file("p16")), 4 * n, 16).await,
        publish_concurrent(None, 4 * n, 16).await,
        raw_single,
    );
    row(
        "publish, batches of 100",
        publish_batched(Some(&file("pb")), 10 * n).await,
        publish_batched(None, 10 * n).await,
        raw_multi,
    );
    let small = if quick { 2_000 } else { 10_000 };
    let large = if quick { 5_000 } else { 100_000 };
    row(
        &format!("claim + ack, 1 group, prefetch 100, {small} stored"),
        end_to_end(Some(&file("e1")), small, small, 1).await,
        end_to_end(None, small, small, 1).await,
        raw_multi,
    );
    row(
        &format!("claim + ack, 1 group, prefetch 100, {large} stored"),
        end_to_end(Some(&file("e2")), large, small, 1).await,
        end_to_end(None, large, small, 1).await,
        raw_multi,
    );
    row(
        &format!("claim + ack, 4 groups (per group), {small} stored"),
        end_to_end(Some(&file("e4")), small, small, 4).await,
        end_to_end(None, small, small, 4).await,
        raw_multi,
    );
    let samples = if quick { 100 } else { 2_000 };
    let (fp50, fp99) = latency(Some(&file("lat")), samples).await;
    let (mp50, mp99) = latency(None, samples).await;
    println!(
        "publish -> receive, caught-up subscriber: file p50 {fp50:.0} µs p99 {fp99:.0} µs; memory p50 {mp50:.0} µs p99 {mp99:.0} µs"
    );
}
