//! The workloads on a litebus `Bus`, whatever its driver.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use litebus::driver::BoxFuture;
use litebus::{Bus, BusOptions, Delivery, GroupOptions, MemoryDriver, Message, Order};
use litebus_postgres::{PgDriver, PgOptions};
use litebus_sqlx::SqlxDriver;
use litebus_turso::TursoDriver;

use crate::{PAYLOAD, Params, Stopwatch};

/// Where a workload's bus keeps its messages.
#[derive(Debug, Clone, Copy)]
pub enum Store {
    Memory,
    SqlxFile,
    SqlxMemory,
    TursoFile,
    TursoMemory,
    /// The server `LITEBUS_PG_URL` names, a schema per workload.
    Postgres,
}

/// The PostgreSQL server the bench measures, if one is named.
pub fn postgres_url() -> Option<String> {
    std::env::var("LITEBUS_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// The schema that holds a workload's store whose scratch file is `path`.
pub fn postgres_schema(path: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hash);
    format!("litebus_bench_{:016x}", hash.finish())
}

/// Drops the schemas of the workload whose scratch file is `path` (the
/// store's and the raw baseline's), if any.
pub async fn drop_postgres_schemas(path: &Path) {
    let Some(url) = postgres_url() else { return };
    let schema = postgres_schema(path);
    let Ok(pool) = sqlx::PgPool::connect(&url).await else {
        return;
    };
    let drop = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP SCHEMA IF EXISTS {schema}_raw CASCADE"
    );
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
        .execute(&pool)
        .await;
    pool.close().await;
}

impl Store {
    pub const ALL: [Store; 6] = [
        Store::Memory,
        Store::SqlxFile,
        Store::SqlxMemory,
        Store::TursoFile,
        Store::TursoMemory,
        Store::Postgres,
    ];

    /// Whether this machine can measure it.
    pub fn available(self) -> bool {
        !matches!(self, Store::Postgres) || postgres_url().is_some()
    }

    /// Whether several buses, each with a driver of its own, open one
    /// store (a file, a server).
    pub fn shared(self) -> bool {
        matches!(self, Store::SqlxFile | Store::TursoFile | Store::Postgres)
    }

    /// The column of the tables.
    pub fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::SqlxFile => "sqlx file",
            Store::SqlxMemory => "sqlx mem",
            Store::TursoFile => "turso file",
            Store::TursoMemory => "turso mem",
            Store::Postgres => "postgres",
        }
    }

    /// A bus on this store with `options`; file stores use `path`.
    pub async fn bus(self, path: &Path, options: BusOptions) -> Bus {
        match self {
            Store::Memory => Bus::open(MemoryDriver::new(), options),
            Store::SqlxFile => Bus::open(SqlxDriver::open(path).await.unwrap(), options),
            Store::SqlxMemory => Bus::open(SqlxDriver::memory().await.unwrap(), options),
            Store::TursoFile => Bus::open(TursoDriver::open(path).await.unwrap(), options),
            Store::TursoMemory => Bus::open(TursoDriver::memory().await.unwrap(), options),
            Store::Postgres => Bus::open(
                PgDriver::connect_with(
                    &postgres_url().expect("LITEBUS_PG_URL"),
                    PgOptions::new().schema(postgres_schema(path)),
                )
                .await
                .unwrap(),
                options,
            ),
        }
        .unwrap()
    }
}

/// Publishes one message per call from `tasks` tasks until the cap or the
/// budget.
pub async fn publish(bus: &Bus, p: &Params, tasks: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let clock = Stopwatch::start();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (bus, done, budget, cap) = (bus.clone(), done.clone(), p.budget, p.cap);
            tokio::spawn(async move {
                while done.load(Ordering::Relaxed) < cap && clock.elapsed() < budget {
                    bus.publish("bench", Message::new(PAYLOAD)).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    clock.rate(done.load(Ordering::Relaxed))
}

/// Publishes `count` messages in batches of `batch`.
pub async fn fill(bus: &Bus, count: usize, batch: usize) {
    fill_keyed(bus, count, batch, 0).await;
}

/// [`fill`], the messages' keys going round `keys` keys (none if 0).
pub async fn fill_keyed(bus: &Bus, count: usize, batch: usize, keys: usize) {
    let mut left = count;
    while left > 0 {
        let take = left.min(batch);
        let first = count - left;
        bus.publish_batch(
            "bench",
            (first..first + take).map(|i| {
                let message = Message::new(PAYLOAD);
                if keys == 0 {
                    message
                } else {
                    message.with_key(format!("k{}", i % keys))
                }
            }),
        )
        .await
        .unwrap();
        left -= take;
    }
}

/// Publishes batches of `batch` until the cap or the budget.
pub async fn publish_batches(bus: &Bus, p: &Params, batch: usize) -> f64 {
    let clock = Stopwatch::start();
    let mut done = 0;
    while done < p.cap && clock.elapsed() < p.budget {
        fill(bus, batch, batch).await;
        done += batch;
    }
    clock.rate(done)
}

/// Receives what is buffered (up to 100) and acks it side by side, so the
/// acks can share a transaction; until `remaining` (shared by the consumers
/// of a group) is used up or the budget is spent. Returns how many it acked
/// and when it acked the last of them.
async fn drain(
    sub: &litebus::Subscription,
    remaining: &AtomicUsize,
    clock: Stopwatch,
    p: &Params,
) -> (usize, Duration) {
    let mut done = 0;
    let mut last = Duration::ZERO;
    while remaining.load(Ordering::Relaxed) > 0 {
        let Some(left) = p.budget.checked_sub(clock.elapsed()) else {
            break;
        };
        let Ok(first) = tokio::time::timeout(left, sub.recv()).await else {
            break;
        };
        let mut batch: Vec<Delivery> = vec![first.unwrap()];
        while batch.len() < 100 {
            match sub.try_recv().await.unwrap() {
                Some(d) => batch.push(d),
                None => break,
            }
        }
        let acks = batch
            .iter()
            .map(|d| Box::pin(d.ack()) as BoxFuture<'_, litebus::Result<()>>)
            .collect();
        for ack in litebus_conformance::join_all(acks).await {
            ack.unwrap();
        }
        done += batch.len();
        last = clock.elapsed();
        let _ = remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
            Some(r.saturating_sub(batch.len()))
        });
    }
    (done, last)
}

/// How the consumers of a consume workload are arranged.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub groups: usize,
    pub consumers: usize,
    pub order: ShapeOrder,
}

/// The order of a consume workload's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeOrder {
    /// Shared, at most 1,000 in flight, prefetch 100.
    Shared,
    /// Ordered, the default prefetch.
    Ordered,
    /// Per key, prefetch 100, the messages' keys going round this many.
    PerKey(usize),
}

/// Claims and acks from a backlog of `backlog` already stored; msgs/s per
/// group (all consumers of a group together). The consumers of a group go
/// round `buses` (buses of one store: a host each), the backlog through
/// the first.
pub async fn consume(buses: &[Bus], p: &Params, backlog: usize, shape: Shape) -> f64 {
    let bus = &buses[0];
    let (options, keys) = match shape.order {
        ShapeOrder::Ordered => (GroupOptions::new().order(Order::Ordered), 0),
        ShapeOrder::Shared => (
            GroupOptions::new()
                .order(Order::Shared {
                    max_in_flight: 1000,
                })
                .prefetch(100),
            0,
        ),
        ShapeOrder::PerKey(keys) => (GroupOptions::new().order(Order::PerKey).prefetch(100), keys),
    };
    let mut subs = Vec::new();
    for g in 0..shape.groups {
        for c in 0..shape.consumers {
            subs.push(Arc::new(
                buses[c % buses.len()]
                    .subscribe("bench", &format!("g{g}"), options.clone())
                    .await
                    .unwrap(),
            ));
        }
    }
    fill_keyed(bus, backlog, 1000, keys).await;
    let remaining: Vec<Arc<AtomicUsize>> = (0..shape.groups)
        .map(|_| Arc::new(AtomicUsize::new(backlog)))
        .collect();
    let clock = Stopwatch::start();
    let handles: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, sub)| {
            let p = p.clone();
            let remaining = remaining[i / shape.consumers].clone();
            tokio::spawn(async move { drain(&sub, &remaining, clock, &p).await })
        })
        .collect();
    let (mut total, mut last) = (0, Duration::ZERO);
    for h in handles {
        let (n, at) = h.await.unwrap();
        total += n;
        last = last.max(at);
    }
    total as f64 / last.as_secs_f64() / shape.groups as f64
}

/// A worker with a handler that does nothing, 16 handlers at once, on a
/// backlog of `backlog` (shared group, at most 1,000 in flight, prefetch
/// 100): msgs/s, each delivery acked one by one as its handler ends.
pub async fn worker(bus: &Bus, p: &Params, backlog: usize) -> f64 {
    let options = GroupOptions::new()
        .order(Order::Shared {
            max_in_flight: 1000,
        })
        .prefetch(100);
    let sub = bus.subscribe("bench", "g", options).await.unwrap();
    fill(bus, backlog, 1000).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(tokio::sync::Notify::new());
    let stop = {
        let (all, budget) = (all.clone(), p.budget);
        async move {
            futures_lite::future::or(all.notified(), tokio::time::sleep(budget)).await;
        }
    };
    let clock = Stopwatch::start();
    let report = sub
        .worker(|_delivery| {
            let (handled, all) = (handled.clone(), all.clone());
            async move {
                if handled.fetch_add(1, Ordering::Relaxed) + 1 == backlog {
                    all.notify_one();
                }
                Ok::<(), std::convert::Infallible>(())
            }
        })
        .concurrency(16)
        .shutdown(stop, Duration::from_mins(1))
        .run()
        .await
        .unwrap();
    report.acked as f64 / clock.elapsed().as_secs_f64()
}

/// Reads a backlog of `backlog` stored messages in pages of 100 with
/// `bus.read`, from the first: msgs/s.
pub async fn read_pages(bus: &Bus, p: &Params, backlog: usize) -> f64 {
    fill(bus, backlog, 1000).await;
    let clock = Stopwatch::start();
    let (mut done, mut from) = (0, 1);
    while clock.elapsed() < p.budget {
        let page = bus.read("bench", from, 100).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq() + 1;
        done += page.len();
    }
    clock.rate(done)
}

/// Publish → receive for a caught-up subscriber: p50, p99, p999 in µs.
pub async fn latency(bus: &Bus, p: &Params) -> [f64; 3] {
    let sub = bus
        .subscribe("bench", "live", GroupOptions::new())
        .await
        .unwrap();
    let mut micros = Vec::with_capacity(p.samples);
    let clock = Stopwatch::start();
    while micros.len() < p.samples && (micros.len() < 100 || clock.elapsed() < 2 * p.budget) {
        let (got, start) = futures_lite::future::zip(sub.recv(), async {
            // By then the subscriber has looked, found nothing and waits:
            // caught up, as a live feed's subscriber is between messages.
            tokio::time::sleep(Duration::from_micros(500)).await;
            let start = Instant::now();
            bus.publish("bench", Message::new(PAYLOAD)).await.unwrap();
            start
        })
        .await;
        let got = got.unwrap();
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        got.ack().await.unwrap();
    }
    crate::percentiles(micros)
}

/// With `depth` messages stored: the median µs of one claim + ack (a
/// consumer with prefetch 1), then claim + ack msgs/s of up to `depth`.
pub async fn depth(bus: &Bus, p: &Params, depth: usize) -> (f64, f64) {
    fill(bus, depth, 1000).await;
    let one = bus
        .subscribe(
            "bench",
            "one",
            GroupOptions::new()
                .order(Order::Shared { max_in_flight: 1 })
                .prefetch(1),
        )
        .await
        .unwrap();
    let mut micros = Vec::new();
    let clock = Stopwatch::start();
    while micros.len() < 200.min(depth) && clock.elapsed() < p.budget {
        let start = Instant::now();
        one.recv().await.unwrap().ack().await.unwrap();
        micros.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let median = crate::percentiles(micros)[0];
    let many = bus
        .subscribe(
            "bench",
            "many",
            GroupOptions::new()
                .order(Order::Shared {
                    max_in_flight: 1000,
                })
                .prefetch(100),
        )
        .await
        .unwrap();
    let clock = Stopwatch::start();
    let (n, last) = drain(&many, &AtomicUsize::new(depth), clock, p).await;
    (median, n as f64 / last.as_secs_f64())
}

/// A fresh file (and its WAL) under `dir`.
pub fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// The wall-clock time now, in ns since the Unix epoch: what a message
/// published by another process carries, so that the receiver can tell how
/// long it took (both processes read the same clock).
fn wall_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// The publishing side of [`cross_process_latency`], run as a process of
/// its own: `samples` messages to the sqlx file at `path`, one every
/// millisecond, each carrying the time it was published.
pub async fn publish_timestamps(path: &Path, samples: usize) {
    let bus = Bus::open(SqlxDriver::open(path).await.unwrap(), BusOptions::new()).unwrap();
    for _ in 0..samples {
        let sent = wall_nanos().to_le_bytes();
        bus.publish("bench", Message::new(sent.to_vec()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bus.close().await.unwrap();
}

/// Publish in another process → receive here, on a sqlx file, for a
/// caught-up subscriber: p50, p99, p999 in µs. The other process is this
/// binary again (`--publish-to <file> <samples>`).
pub async fn cross_process_latency(bus: &Bus, path: &Path, p: &Params) -> [f64; 3] {
    let sub = bus
        .subscribe("bench", "live", GroupOptions::new())
        .await
        .unwrap();
    let mut publisher = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--publish-to",
            path.to_str().unwrap(),
            &p.samples.to_string(),
        ])
        .spawn()
        .expect("the publishing process");
    let mut micros = Vec::with_capacity(p.samples);
    while micros.len() < p.samples {
        let delivery = sub.recv().await.unwrap();
        let received = wall_nanos();
        let sent: [u8; 16] = delivery.message().payload().try_into().unwrap();
        micros.push(received.saturating_sub(u128::from_le_bytes(sent)) as f64 / 1e3);
        delivery.ack().await.unwrap();
    }
    assert!(publisher.wait().unwrap().success(), "the publisher failed");
    crate::percentiles(micros)
}
