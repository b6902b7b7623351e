//! litebus on every driver (memory, sqlx and turso; files and `:memory:`)
//! beside its baselines (async-channel; raw SQL through sqlx, turso and
//! rusqlite with the drivers' pragmas) and two peers (honker, apalis-sqlite),
//! all in one run, one table.
//!
//! `cargo run --release -p litebus-bench [-- --quick | --smoke]`
//!
//! `-- --soak MESSAGES [STORE]` runs the retention soak instead (`soak.rs`).
//!
//! `--quick` runs every workload briefly; `--smoke` runs each system once
//! (one publish and one consume workload, tiny sizes), to show that the
//! command and every system still work, not to measure.
//!
//! Every timed workload runs until its message cap or its time budget,
//! whichever comes first, and reports the rate it reached. Results go to
//! stdout (markdown tables) and to `target/bench/results.{csv,json}` and
//! `target/bench/batch.svg`.

mod apalis;
mod baselines;
mod report;
mod runs;
mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use baselines::{
    channel_latency, channel_recv, channel_send, pg_consume, pg_inserts, sqlx_consume,
    sqlx_inserts, sqlx_read, turso_consume, turso_inserts, turso_read,
};
use litebus::BusOptions;
use report::{Results, Workload};
use runs::{Shape, ShapeOrder, Store};

/// Every message's payload.
pub(crate) const PAYLOAD: [u8; 100] = [7; 100];

const BATCHES: [usize; 3] = [10, 100, 1000];

/// How much a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Quick,
    Smoke,
}

impl Mode {
    fn from_args(args: &[String]) -> Self {
        if args.iter().any(|a| a == "--smoke") {
            Mode::Smoke
        } else if args.iter().any(|a| a == "--quick") {
            Mode::Quick
        } else {
            Mode::Full
        }
    }

    /// The flag a child process gets.
    fn flag(self) -> Option<&'static str> {
        match self {
            Mode::Full => None,
            Mode::Quick => Some("--quick"),
            Mode::Smoke => Some("--smoke"),
        }
    }
}

/// The sizes of a run.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// How long each timed workload may run.
    pub(crate) budget: Duration,
    /// The most messages a publish workload sends.
    pub(crate) cap: usize,
    /// Messages stored before a consume workload starts.
    pub(crate) backlog: usize,
    /// Stored messages for the cost-growth workloads.
    pub(crate) depths: Vec<usize>,
    /// Latency samples.
    pub(crate) samples: usize,
    pub(crate) dir: PathBuf,
}

impl Params {
    /// `job` names a child's scratch directory.
    fn new(mode: Mode, job: Option<&str>) -> Self {
        let name = job.map_or_else(String::new, |j| format!("-{}", j.replace(' ', "-")));
        let dir = std::env::temp_dir().join(format!("litebus-bench-{}{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if mode == Mode::Smoke {
            return Params {
                budget: Duration::from_millis(50),
                cap: 1_000,
                backlog: 200,
                depths: Vec::new(),
                samples: 20,
                dir,
            };
        }
        if mode == Mode::Quick {
            Params {
                budget: Duration::from_millis(100),
                cap: 1_000_000,
                backlog: 2_000,
                depths: vec![1_000, 10_000],
                samples: 100,
                dir,
            }
        } else {
            Params {
                budget: Duration::from_secs(2),
                cap: 1_000_000,
                backlog: 100_000,
                depths: vec![1_000, 100_000, 1_000_000],
                samples: 5_000,
                dir,
            }
        }
    }

    fn fresh(&self, name: &str) -> PathBuf {
        runs::fresh(&self.dir, name)
    }
}

/// Removes the run's files when the run ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// When a timed workload started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch(Instant);

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Stopwatch(Instant::now())
    }

    pub(crate) fn elapsed(self) -> Duration {
        self.0.elapsed()
    }

    /// `n` per second since the start.
    pub(crate) fn rate(self, n: usize) -> f64 {
        n as f64 / self.elapsed().as_secs_f64()
    }
}

/// p50, p99, p999 of `samples` (NaN when empty).
pub(crate) fn percentiles(mut samples: Vec<f64>) -> [f64; 3] {
    if samples.is_empty() {
        return [f64::NAN; 3];
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.99), at(0.999)]
}

fn workloads(p: &Params) -> Vec<Workload> {
    let w = |key: &str, title: &str, micros: bool| Workload {
        key: key.to_owned(),
        title: title.to_owned(),
        micros,
    };
    let mut list = vec![
        w("publish.1", "publish, 1 task, 1 per call", false),
        w("publish.16", "publish, 16 tasks, 1 per call", false),
        w(
            "publish.audited1",
            "publish to an audited topic, 1 task, 1 per call",
            false,
        ),
        w(
            "publish.audited16",
            "publish to an audited topic, 16 tasks, 1 per call",
            false,
        ),
    ];
    for b in BATCHES {
        list.push(w(
            &format!("publish.batch{b}"),
            &format!("publish, batches of {b}"),
            false,
        ));
    }
    list.extend([
        w("consume.1x1", "claim + ack, 1 group × 1 consumer", false),
        w("consume.1x4", "claim + ack, 1 group × 4 consumers", false),
        w("consume.1x50", "claim + ack, 1 group × 50 consumers", false),
        w(
            "consume.1x4buses",
            "claim + ack, 1 group × 4 consumers, a bus (a host) each",
            false,
        ),
        w(
            "consume.fanout4",
            "claim + ack, 4 groups (per group)",
            false,
        ),
        w(
            "consume.ordered",
            "claim + ack, ordered (1 in flight)",
            false,
        ),
        w("consume.perkey16", "claim + ack, per key (16 keys)", false),
        w("worker.16", "worker, no-op handler, concurrency 16", false),
        w("read.100", "read without consuming, pages of 100", false),
        w("latency.p50", "live latency p50 (µs)", true),
        w("latency.p99", "live latency p99 (µs)", true),
        w("latency.p999", "live latency p999 (µs)", true),
        w(
            "xlatency.p50",
            "live latency from another process p50 (µs)",
            true,
        ),
        w(
            "xlatency.p99",
            "live latency from another process p99 (µs)",
            true,
        ),
        w(
            "xlatency.p999",
            "live latency from another process p999 (µs)",
            true,
        ),
    ]);
    for &d in &p.depths {
        list.push(w(
            &format!("consume.depth{d}"),
            &format!("claim + ack, {} stored", report::thousands(d as f64)),
            false,
        ));
        list.push(w(
            &format!("claim_us.{d}"),
            &format!(
                "one claim + ack, {} stored (µs p50)",
                report::thousands(d as f64)
            ),
            true,
        ));
    }
    list
}

/// One measurement, run in a process of its own so that its peak RSS is
/// its own: a system and what it runs (`publish.1`, `latency`, `depth1000`).
#[derive(Debug, Clone)]
struct Job {
    system: &'static str,
    key: String,
}

fn jobs(p: &Params, mode: Mode) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut add = |system: &'static str, keys: &[&str], depths: bool| {
        for key in keys {
            jobs.push(Job {
                system,
                key: (*key).to_owned(),
            });
            if *key == "publish.16" || *key == "publish.1" && !keys.contains(&"publish.16") {
                for b in BATCHES {
                    jobs.push(Job {
                        system,
                        key: format!("publish.batch{b}"),
                    });
                }
            }
        }
        if depths {
            for d in &p.depths {
                jobs.push(Job {
                    system,
                    key: format!("depth{d}"),
                });
            }
        }
    };
    let everything = [
        "publish.1",
        "publish.16",
        "consume.1x1",
        "consume.1x4",
        "consume.1x50",
        "consume.fanout4",
        "consume.ordered",
        "latency",
    ];
    for store in Store::ALL.into_iter().filter(|s| s.available()) {
        add(store.name(), &everything, true);
        add(
            store.name(),
            &["consume.perkey16", "worker.16", "read.100"],
            true,
        );
        if store.shared() {
            add(store.name(), &["consume.1x4buses"], false);
        }
        // The audit chain's cost: beside publish.1 and publish.16.
        add(
            store.name(),
            &["publish.audited1", "publish.audited16"],
            false,
        );
    }
    // Across processes: the driver that is made for it.
    add("sqlx file", &["xlatency"], false);
    add(
        "apalis-sqlite",
        &["publish.1", "publish.16", "consume.1x1", "consume.1x4"],
        true,
    );
    add("async-channel", &everything, true);
    add(
        "raw sqlx file",
        &["publish.1", "publish.16", "consume.1x1", "read.100"],
        false,
    );
    add(
        "raw sqlx mem",
        &["publish.1", "publish.16", "consume.1x1", "read.100"],
        false,
    );
    add(
        "raw turso file",
        &["publish.1", "consume.1x1", "read.100"],
        false,
    );
    add(
        "raw turso mem",
        &["publish.1", "consume.1x1", "read.100"],
        false,
    );
    if runs::postgres_url().is_some() {
        add(
            "raw postgres",
            &["publish.1", "publish.16", "consume.1x1", "consume.1x4"],
            false,
        );
    }
    if mode == Mode::Smoke {
        // Every system once: one publish and one consume workload, and the
        // one workload of two processes.
        jobs.retain(|job| {
            ["publish.1", "publish.audited1", "consume.1x1", "xlatency"].contains(&job.key.as_str())
        });
    }
    jobs
}

const LITEBUS_SHAPES: [(&str, Shape); 7] = [
    (
        "consume.1x1",
        Shape {
            groups: 1,
            consumers: 1,
            order: ShapeOrder::Shared,
        },
    ),
    (
        "consume.1x4",
        Shape {
            groups: 1,
            consumers: 4,
            order: ShapeOrder::Shared,
        },
    ),
    (
        "consume.1x4buses",
        Shape {
            groups: 1,
            consumers: 4,
            order: ShapeOrder::Shared,
        },
    ),
    (
        "consume.1x50",
        Shape {
            groups: 1,
            consumers: 50,
            order: ShapeOrder::Shared,
        },
    ),
    (
        "consume.fanout4",
        Shape {
            groups: 4,
            consumers: 1,
            order: ShapeOrder::Shared,
        },
    ),
    (
        "consume.ordered",
        Shape {
            groups: 1,
            consumers: 1,
            order: ShapeOrder::Ordered,
        },
    ),
    (
        "consume.perkey16",
        Shape {
            groups: 1,
            consumers: 1,
            order: ShapeOrder::PerKey(16),
        },
    ),
];

/// Runs one job in this process: (workload, value) pairs, or why it failed.
async fn run_job(system: &str, key: &str, p: &Params) -> Result<Vec<(String, f64)>, String> {
    let one = |value: f64| Ok(vec![(key.to_owned(), value)]);
    let batch: Option<usize> = key
        .strip_prefix("publish.batch")
        .and_then(|b| b.parse().ok());
    let depth: Option<usize> = key.strip_prefix("depth").and_then(|d| d.parse().ok());
    let path = p.fresh(&format!("{system}-{key}").replace(' ', "-"));
    let file = |yes: bool| yes.then_some(path.as_path());
    let latency = |name: &str, lat: [f64; 3]| {
        Ok(["p50", "p99", "p999"]
            .iter()
            .zip(lat)
            .map(|(k, v)| (format!("{name}.{k}"), v))
            .collect())
    };
    if let Some(store) = Store::ALL.into_iter().find(|s| s.name() == system) {
        let options = if key.starts_with("publish.audited") {
            BusOptions::new().audit("bench")
        } else {
            BusOptions::new()
        };
        let bus = store.bus(&path, options).await;
        let result = match (key, batch, depth) {
            ("publish.1" | "publish.audited1", ..) => one(runs::publish(&bus, p, 1).await),
            ("publish.16" | "publish.audited16", ..) => one(runs::publish(&bus, p, 16).await),
            (_, Some(b), _) => one(runs::publish_batches(&bus, p, b).await),
            ("latency", ..) => latency(key, runs::latency(&bus, p).await),
            ("xlatency", ..) => latency(key, runs::cross_process_latency(&bus, &path, p).await),
            ("read.100", ..) => one(runs::read_pages(&bus, p, p.backlog).await),
            ("worker.16", ..) => one(runs::worker(&bus, p, p.backlog).await),
            (_, _, Some(d)) => {
                let (claim_us, rate) = runs::depth(&bus, p, d).await;
                Ok(vec![
                    (format!("claim_us.{d}"), claim_us),
                    (format!("consume.depth{d}"), rate),
                ])
            }
            _ => {
                let (_, shape) = LITEBUS_SHAPES
                    .iter()
                    .find(|(k, _)| *k == key)
                    .ok_or_else(|| format!("no workload {key}"))?;
                let backlog = if shape.order == ShapeOrder::Ordered {
                    p.backlog / 10
                } else {
                    p.backlog
                };
                let mut buses = vec![bus.clone()];
                if key == "consume.1x4buses" {
                    for _ in 1..4 {
                        buses.push(store.bus(&path, BusOptions::new()).await);
                    }
                }
                let rate = runs::consume(&buses, p, backlog, *shape).await;
                for other in &buses[1..] {
                    other.close().await.map_err(|e| e.to_string())?;
                }
                one(rate)
            }
        };
        bus.close().await.map_err(|e| e.to_string())?;
        return result;
    }
    match (system, key, batch, depth) {
        ("async-channel", "publish.16", ..) => one(channel_send(p, 16).await),
        // A channel takes one message at a time: batches are single sends.
        ("async-channel", "publish.1", ..) | ("async-channel", _, Some(_), _) => {
            one(channel_send(p, 1).await)
        }
        ("async-channel", "consume.1x1" | "consume.ordered", ..) => {
            one(channel_recv(p, p.backlog, 1, 1).await)
        }
        ("async-channel", "consume.1x4", ..) => one(channel_recv(p, p.backlog, 1, 4).await),
        ("async-channel", "consume.1x50", ..) => one(channel_recv(p, p.backlog, 1, 50).await),
        ("async-channel", "consume.fanout4", ..) => one(channel_recv(p, p.backlog, 4, 1).await),
        ("async-channel", "latency", ..) => latency(key, channel_latency(p).await),
        ("async-channel", _, _, Some(d)) => Ok(vec![(
            format!("consume.depth{d}"),
            channel_recv(p, d, 1, 1).await,
        )]),
        ("raw sqlx file" | "raw sqlx mem", "publish.1", ..) => {
            one(sqlx_inserts(p, file(system.ends_with("file")), 1, 1).await)
        }
        ("raw sqlx file" | "raw sqlx mem", "publish.16", ..) => {
            one(sqlx_inserts(p, file(system.ends_with("file")), 1, 16).await)
        }
        ("raw sqlx file" | "raw sqlx mem", _, Some(b), _) => {
            one(sqlx_inserts(p, file(system.ends_with("file")), b, 1).await)
        }
        ("raw sqlx file" | "raw sqlx mem", "consume.1x1", ..) => {
            one(sqlx_consume(p, file(system.ends_with("file")), p.backlog).await)
        }
        ("raw sqlx file" | "raw sqlx mem", "read.100", ..) => {
            one(sqlx_read(p, file(system.ends_with("file")), p.backlog).await)
        }
        ("raw turso file" | "raw turso mem", "read.100", ..) => {
            one(turso_read(p, file(system.ends_with("file")), p.backlog).await)
        }
        ("raw turso file" | "raw turso mem", "publish.1", ..) => {
            one(turso_inserts(p, file(system.ends_with("file")), 1).await)
        }
        ("raw turso file" | "raw turso mem", _, Some(b), _) => {
            one(turso_inserts(p, file(system.ends_with("file")), b).await)
        }
        ("raw turso file" | "raw turso mem", "consume.1x1", ..) => {
            one(turso_consume(p, file(system.ends_with("file")), p.backlog).await)
        }
        ("raw postgres", "publish.1", ..) => one(pg_inserts(p, &path, 1, 1).await),
        ("raw postgres", "publish.16", ..) => one(pg_inserts(p, &path, 1, 16).await),
        ("raw postgres", _, Some(b), _) => one(pg_inserts(p, &path, b, 1).await),
        ("raw postgres", "consume.1x1", ..) => one(pg_consume(p, &path, p.backlog, 1).await),
        ("raw postgres", "consume.1x4", ..) => one(pg_consume(p, &path, p.backlog, 4).await),
        ("apalis-sqlite", "publish.1", ..) => one(apalis::publish(p, &path, 1).await),
        ("apalis-sqlite", "publish.16", ..) => one(apalis::publish(p, &path, 16).await),
        ("apalis-sqlite", _, Some(b), _) => one(apalis::publish_batches(p, &path, b).await),
        ("apalis-sqlite", "consume.1x1", ..) => {
            one(apalis::consume(p, &path, p.backlog, 1, 100).await?)
        }
        ("apalis-sqlite", "consume.1x4", ..) => {
            one(apalis::consume(p, &path, p.backlog, 4, 100).await?)
        }
        ("apalis-sqlite", _, _, Some(d)) => Ok(vec![(
            format!("consume.depth{d}"),
            apalis::consume(p, &path, d, 1, 100).await?,
        )]),
        _ => Err(format!("no job {key} for {system}")),
    }
}

/// Runs `job` in a child process (this binary with `--job`) and merges its
/// lines; a failure is noted, not fatal.
fn spawn_job(job: &Job, mode: Mode, results: &mut Results, notes: &mut Vec<String>) {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command.args(["--job", job.system, &job.key]);
    command.args(mode.flag());
    // A job that outlives its limit is stopped and noted, so one stuck
    // workload cannot stall the whole run.
    let limit = Duration::from_secs(if mode == Mode::Full { 600 } else { 120 });
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the bench runs itself");
    let started = Instant::now();
    let mut timed_out = false;
    while child.try_wait().expect("wait for a job").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("a job's output");
    merge_lines(&output.stdout, results);
    if timed_out || !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = if timed_out {
            format!("did not finish within {} s", limit.as_secs())
        } else {
            stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .to_owned()
        };
        eprintln!("  {:<20} {:<16} failed: {why}", job.key, job.system);
        notes.push(format!("{} {}: failed: {why}", job.system, job.key));
    }
}

/// Merges `workload<TAB>system<TAB>value<TAB>peak_rss_kib` lines.
fn merge_lines(stdout: &[u8], results: &mut Results) {
    for line in String::from_utf8_lossy(stdout).lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [workload, system, value, rss] = fields[..] else {
            panic!("unexpected line from a bench process: {line}");
        };
        let value: f64 = value.parse().expect("a number");
        results.add(workload, system, value, rss.parse().unwrap_or(0));
        eprintln!("  {workload:<20} {system:<16} {}", report::thousands(value));
    }
}

/// Builds and runs the honker workspace (its own Cargo graph) with the same
/// parameters and merges its lines.
fn honker_peer(p: &Params, results: &mut Results) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("honker/Cargo.toml");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/honker");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // Built with this binary's profile: release for figures, debug when CI
    // only checks that the command still runs.
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "--manifest-path"]);
    build.arg(&manifest).arg("--target-dir").arg(&target);
    if profile == "release" {
        build.arg("--release");
    }
    let built = build.status().expect("cargo runs");
    assert!(built.success(), "building {} failed", manifest.display());
    let depths: Vec<String> = p.depths.iter().map(ToString::to_string).collect();
    let output = Command::new(target.join(profile).join("litebus-bench-honker"))
        .arg(p.dir.join("honker"))
        .arg(p.cap.to_string())
        .arg(p.backlog.to_string())
        .arg(p.budget.as_millis().to_string())
        .arg(depths.join(","))
        .output()
        .expect("litebus-bench-honker runs");
    assert!(
        output.status.success(),
        "litebus-bench-honker failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    merge_lines(&output.stdout, results);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = Mode::from_args(&args);
    if let Some(at) = args.iter().position(|a| a == "--publish-to") {
        let samples = args[at + 2].parse().expect("a number of samples");
        runs::publish_timestamps(std::path::Path::new(&args[at + 1]), samples).await;
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--soak") {
        let messages = args[at + 1].parse().expect("a number of messages");
        let stores = match args.get(at + 2).map(String::as_str) {
            None => vec![Store::SqlxFile, Store::TursoFile],
            Some(name) => Store::ALL
                .into_iter()
                .filter(|s| s.name() == name)
                .collect(),
        };
        let p = Params::new(mode, Some("soak"));
        let _scratch = Scratch(p.dir.clone());
        let mut held = true;
        for store in stores {
            held &= soak::soak(store, &p.dir, messages).await;
        }
        if !held {
            std::process::exit(1);
        }
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--job") {
        let (system, key) = (&args[at + 1], &args[at + 2]);
        let p = Params::new(mode, Some(&format!("{system}-{key}")));
        let _scratch = Scratch(p.dir.clone());
        let result = run_job(system, key, &p).await;
        if system.contains("postgres") {
            // The server is not scratch: its schemas go with the job.
            let path = p.fresh(&format!("{system}-{key}").replace(' ', "-"));
            runs::drop_postgres_schemas(&path).await;
        }
        match result {
            Ok(lines) => {
                let rss = report::peak_rss_kib();
                for (workload, value) in lines {
                    println!("{workload}\t{system}\t{value:.3}\t{rss}");
                }
            }
            Err(why) => {
                eprintln!("{why}");
                std::process::exit(1);
            }
        }
        return;
    }

    let p = Params::new(mode, None);
    let _scratch = Scratch(p.dir.clone());
    let workloads = workloads(&p);
    let mut results = Results::default();
    let mut notes = Vec::new();
    let started = Instant::now();
    eprintln!("honker (its own process, its own Cargo workspace)");
    honker_peer(&p, &mut results);
    for job in jobs(&p, mode) {
        spawn_job(&job, mode, &mut results, &mut notes);
    }

    let tables = results.tables(&workloads);
    println!(
        "litebus-bench{}: 100-byte payloads, 2 tokio worker threads, {} ms per timed workload, \
         {} stored before each consume workload",
        mode.flag().map_or(String::new(), |f| format!(" {f}")),
        p.budget.as_millis(),
        p.backlog
    );
    println!();
    println!("{tables}");
    for note in &notes {
        println!("note: {note}");
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    report::write(&out, "results.md", &tables);
    report::write(&out, "results.csv", &results.csv(&workloads));
    let meta = format!(
        "\"mode\": \"{mode:?}\", \"budget_ms\": {}, \"backlog\": {}, \"payload_bytes\": {}, \"cpus\": {}",
        p.budget.as_millis(),
        p.backlog,
        PAYLOAD.len(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    report::write(&out, "results.json", &results.json(&workloads, &meta));
    let batch_keys: Vec<(String, f64)> = std::iter::once(("publish.1".to_owned(), 1.0))
        .chain(
            BATCHES
                .iter()
                .map(|b| (format!("publish.batch{b}"), *b as f64)),
        )
        .collect();
    let keys: Vec<(&str, f64)> = batch_keys.iter().map(|(k, x)| (k.as_str(), *x)).collect();
    report::write(
        &out,
        "batch.svg",
        &results.svg(&keys, "publish throughput vs batch size"),
    );
    println!(
        "written: {}/results.{{md,csv,json}}, batch.svg ({:.0} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    // A smoke run is a check: every system must have run.
    if mode == Mode::Smoke && !notes.is_empty() {
        std::process::exit(1);
    }
}
