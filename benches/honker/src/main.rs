//! The litebus-bench workloads on honker 0.5 (a SQLite queue on rusqlite),
//! beside raw rusqlite on the calling thread (the physical limit of
//! SQLite here). Run by `litebus-bench`, which passes the parameters:
//!
//! `litebus-bench-honker <dir> <cap> <backlog> <budget_ms> <depths,...>`
//!
//! Prints one line per result: `workload<TAB>system<TAB>value<TAB>peak_rss_kib`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use honker::{Database, EnqueueOpts, QueueOpts};

/// 100 bytes once JSON-encoded (honker stores JSON payloads).
const PAYLOAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

struct Params {
    dir: PathBuf,
    /// The most messages a publish workload sends.
    cap: usize,
    /// Messages stored before a consume workload starts.
    backlog: usize,
    budget: Duration,
    depths: Vec<usize>,
}

fn params() -> Params {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert_eq!(
        args.len(),
        5,
        "usage: litebus-bench-honker <dir> <cap> <backlog> <budget_ms> <depths,...>"
    );
    Params {
        dir: PathBuf::from(&args[0]),
        cap: args[1].parse().expect("cap"),
        backlog: args[2].parse().expect("backlog"),
        budget: Duration::from_millis(args[3].parse().expect("budget_ms")),
        depths: args[4]
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| d.parse().expect("depth"))
            .collect(),
    }
}

/// Resets the process's peak RSS (Linux `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak RSS since the last reset, in KiB (0 where unknown).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn emit(workload: &str, system: &str, value: f64) {
    println!("{workload}\t{system}\t{value:.3}\t{}", peak_rss_kib());
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    reset_peak_rss();
    path
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn queue(db: &Database) -> honker::Queue {
    db.queue("bench", QueueOpts::default())
}

/// Enqueues `count` jobs, `batch` per transaction.
fn fill(db: &Database, count: usize, batch: usize) {
    let q = queue(db);
    let mut left = count;
    while left > 0 {
        let take = left.min(batch);
        let tx = db.transaction().unwrap();
        for _ in 0..take {
            q.enqueue_tx(&tx, &PAYLOAD, EnqueueOpts::default()).unwrap();
        }
        tx.commit().unwrap();
        left -= take;
    }
}

/// Enqueues one job per call from `threads` threads until the cap or the budget.
fn publish(p: &Params, threads: usize) -> f64 {
    let db = Database::open(fresh(&p.dir, &format!("publish-{threads}"))).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let q = queue(&db);
            let done = done.clone();
            s.spawn(move || {
                while done.load(Ordering::Relaxed) < p.cap && start.elapsed() < p.budget {
                    q.enqueue(&PAYLOAD, EnqueueOpts::default()).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    rate(done.load(Ordering::Relaxed), start.elapsed())
}

/// Enqueues in transactions of `batch` until the cap or the budget.
fn publish_batches(p: &Params, batch: usize) -> f64 {
    let db = Database::open(fresh(&p.dir, &format!("batch-{batch}"))).unwrap();
    let start = Instant::now();
    let mut done = 0;
    while done < p.cap && start.elapsed() < p.budget {
        fill(&db, batch, batch);
        done += batch;
    }
    rate(done, start.elapsed())
}

/// Claims (100 at a time) and acks from a backlog of `backlog` with
/// `workers` threads until the backlog is gone or the budget is spent.
fn consume(p: &Params, name: &str, backlog: usize, workers: usize) -> f64 {
    let db = Database::open(fresh(&p.dir, name)).unwrap();
    fill(&db, backlog, 1000);
    reset_peak_rss();
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..workers {
            let q = queue(&db);
            let done = &done;
            s.spawn(move || {
                let worker = format!("w{w}");
                while start.elapsed() < p.budget {
                    let jobs = q.claim_batch(&worker, 100).unwrap();
                    if jobs.is_empty() {
                        break;
                    }
                    let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
                    q.ack_batch(&ids, &worker).unwrap();
                    done.fetch_add(ids.len(), Ordering::Relaxed);
                }
            });
        }
    });
    rate(done.load(Ordering::Relaxed), start.elapsed())
}

/// Median µs of one `claim_one` + `ack` from a backlog of `depth`.
fn claim_latency(db: &Database, samples: usize, budget: Duration) -> f64 {
    let q = queue(db);
    let mut micros = Vec::with_capacity(samples);
    let start = Instant::now();
    while micros.len() < samples && start.elapsed() < budget {
        let t = Instant::now();
        let job = q.claim_one("lat").unwrap().expect("backlog");
        job.ack().unwrap();
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    micros.sort_by(f64::total_cmp);
    micros[micros.len() / 2]
}

fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;
         CREATE TABLE rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, id TEXT, payload BLOB);",
    )
    .unwrap();
    conn
}

/// Raw rusqlite: `rows` rows per transaction in one multi-row INSERT
/// (one single-row INSERT when `rows` is 1), until `total` or the budget.
fn raw_inserts(p: &Params, rows: usize, total: usize) -> f64 {
    let conn = raw(&fresh(&p.dir, &format!("raw-{rows}")));
    let mut sql = String::from("INSERT INTO rows (topic, id, payload) VALUES ");
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?, ?, ?)" } else { ",(?, ?, ?)" });
    }
    let payload = [7u8; 100];
    let start = Instant::now();
    let mut done = 0;
    while done < total && start.elapsed() < p.budget {
        let mut stmt = conn.prepare_cached(&sql).unwrap();
        let ids: Vec<String> = (0..rows).map(|i| format!("{done}-{i}")).collect();
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows * 3);
        for id in &ids {
            values.push(&"bench");
            values.push(id);
            values.push(&payload);
        }
        stmt.execute(values.as_slice()).unwrap();
        done += rows;
    }
    rate(done, start.elapsed())
}

/// Raw rusqlite: delete-and-return 100 rows per statement from a backlog.
fn raw_consume(p: &Params, backlog: usize) -> f64 {
    let conn = raw(&fresh(&p.dir, "raw-consume"));
    {
        let mut stmt = conn
            .prepare("INSERT INTO rows (topic, id, payload) VALUES ('bench', ?1, ?2)")
            .unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..backlog {
            stmt.execute((i.to_string(), [7u8; 100].as_slice()))
                .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    let mut stmt = conn
        .prepare("DELETE FROM rows WHERE seq IN (SELECT seq FROM rows ORDER BY seq LIMIT 100) RETURNING payload")
        .unwrap();
    let start = Instant::now();
    let mut done = 0;
    while start.elapsed() < p.budget {
        let got = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
            .count();
        if got == 0 {
            break;
        }
        done += got;
    }
    rate(done, start.elapsed())
}

fn main() {
    let p = params();
    std::fs::create_dir_all(&p.dir).unwrap();
    let backlog = p.backlog;

    emit("publish.1", "raw rusqlite", raw_inserts(&p, 1, p.cap));
    for batch in [10, 100, 1000] {
        emit(
            &format!("publish.batch{batch}"),
            "raw rusqlite",
            raw_inserts(&p, batch, p.cap),
        );
    }
    emit("consume.1x1", "raw rusqlite", raw_consume(&p, backlog));

    emit("publish.1", "honker", publish(&p, 1));
    emit("publish.16", "honker", publish(&p, 16));
    for batch in [10, 100, 1000] {
        emit(
            &format!("publish.batch{batch}"),
            "honker",
            publish_batches(&p, batch),
        );
    }
    emit("consume.1x1", "honker", consume(&p, "c1", backlog, 1));
    emit("consume.1x4", "honker", consume(&p, "c4", backlog, 4));
    for &depth in &p.depths {
        let db = Database::open(fresh(&p.dir, &format!("depth-{depth}"))).unwrap();
        fill(&db, depth, 1000);
        reset_peak_rss();
        let latency = claim_latency(&db, 200.min(depth / 2), p.budget);
        emit(&format!("claim_us.{depth}"), "honker", latency);
        drop(db);
        emit(
            &format!("consume.depth{depth}"),
            "honker",
            consume(&p, &format!("depthc-{depth}"), depth, 1),
        );
    }
    let _ = std::fs::remove_dir_all(&p.dir);
}
