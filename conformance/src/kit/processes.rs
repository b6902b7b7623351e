//! Tests that need several OS processes, for any driver of files: the test
//! binary (`harness = false`) runs itself as the child processes; with
//! `LITEBUS_ROLE` set, [`main`] plays that role instead of running tests.
//!
//! Which tests run follows the driver's [`Capabilities`](litebus::driver::Capabilities):
//! - `multi_process`: `several_processes_share_one_file`: two publishers and
//!   two consumers in each of two groups, all separate processes: every
//!   message reaches every group (redeliveries counted), none is lost, no
//!   process sees a locking error.
//! - otherwise: `a_second_process_is_refused`: while one process has the
//!   file open, another opening it gets an error naming the lock, and the
//!   first goes on unharmed; once it has closed, another may open it.
//! - `durable`: `killed_processes_lose_nothing`: rounds of a process
//!   publishing and consuming, killed (SIGKILL) at a random moment. After
//!   each round the file is reopened: every message whose publish had
//!   returned is there, nothing acked comes back, and every message not
//!   acked is delivered again (or dead-lettered after too many killed
//!   consumers held it); one killed in the middle of its ack may go either
//!   way.
//!
//! A driver's `tests/processes.rs` (with `harness = false`) is its `main`:
//! `litebus_conformance::kit::processes::main::<MyFiles>()`, where
//! `MyFiles` is its [`FileDriver`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use litebus::{
    Bus, BusOptions, Clock, GroupOptions, ManualClock, Message, Order, Outcome, StdClock,
};

use super::{FileDriver, TempDir};

const ROLE: &str = "LITEBUS_ROLE";
const FILE: &str = "LITEBUS_FILE";
const PUBLISHERS: usize = 2;
const PER_PUBLISHER: usize = 300;

/// The test binary's `main`: plays a child's role, or runs the tests that
/// the driver's capabilities select (those whose name contains an argument,
/// if any is given).
pub fn main<D: FileDriver>() {
    if let Ok(role) = std::env::var(ROLE) {
        let file = PathBuf::from(std::env::var(FILE).expect("LITEBUS_FILE"));
        if let Err(e) = D::block_on(child::<D>(&role, &file)) {
            say(&format!("error {e}"));
            std::process::exit(1);
        }
        return;
    }
    let capabilities = D::capabilities();
    let mut tests: Vec<(&str, fn())> = Vec::new();
    if capabilities.multi_process {
        tests.push((
            "several_processes_share_one_file",
            several_processes_share_one_file::<D>,
        ));
    } else {
        tests.push((
            "a_second_process_is_refused",
            a_second_process_is_refused::<D>,
        ));
    }
    if capabilities.durable {
        tests.push((
            "killed_processes_lose_nothing",
            killed_processes_lose_nothing::<D>,
        ));
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut passed = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        test();
        println!("test {name} ... ok");
        passed += 1;
    }
    println!("{passed} passed, 0 failed");
}

fn shared() -> GroupOptions {
    GroupOptions::new()
        .order(Order::Shared { max_in_flight: 32 })
        .prefetch(8)
        .lease(Duration::from_secs(2))
}

/// A line to the parent, at once (a killed child flushes nothing).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn open_bus<D: FileDriver>(file: &Path, clock: Option<ManualClock>) -> litebus::Result<Bus> {
    let options = match clock {
        Some(clock) => BusOptions::new().clock(clock),
        None => BusOptions::new(),
    };
    Bus::open(D::open(file).await?, options)
}

/// Publishes ids `<who>-<k>`; `count` of them, or until killed.
async fn publish(bus: &Bus, who: &str, count: Option<usize>) -> litebus::Result<()> {
    for k in 0..count.unwrap_or(usize::MAX) {
        let id = format!("{who}-{k}");
        let outcome = bus
            .publish("jobs", Message::new(id.clone()).with_id(id.clone()))
            .await?;
        say(&format!("published {id} {}", outcome.seq()));
        // Give a consumer polled beside this loop its turn.
        futures_lite::future::yield_now().await;
    }
    Ok(())
}

/// Acks what group `group` receives; with `done`, stops once that file
/// exists and the group has nothing left.
async fn consume(bus: &Bus, group: &str, done: Option<&Path>) -> litebus::Result<()> {
    let sub = bus.subscribe("jobs", group, shared()).await?;
    loop {
        let next = futures_lite::future::or(async { Some(sub.recv().await) }, async {
            StdClock.sleep(Duration::from_millis(300)).await;
            None
        });
        match next.await {
            Some(delivery) => {
                let d = delivery?;
                // Killed between the two lines, the ack may or may not have
                // been stored.
                say(&format!("acking {}", d.seq()));
                d.ack().await?;
                say(&format!("acked {} {}", d.seq(), d.message().id()));
            }
            None => {
                if let Some(done) = done
                    && done.exists()
                {
                    let stats = bus.stats("jobs").await?;
                    let g = stats.groups.iter().find(|g| g.group == group);
                    if g.is_some_and(|g| g.ready == 0 && g.in_flight == 0) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn child<D: FileDriver>(role: &str, file: &Path) -> litebus::Result<()> {
    let bus = open_bus::<D>(file, None).await?;
    say("opened");
    let done = file.with_extension("done");
    match role.split_once(':') {
        Some(("publish", who)) => publish(&bus, who, Some(PER_PUBLISHER)).await?,
        Some(("consume", group)) => consume(&bus, group, Some(&done)).await?,
        // Publishes and consumes until killed.
        Some(("work", who)) => {
            let (published, consumed) =
                futures_lite::future::zip(publish(&bus, who, None), consume(&bus, "g", None)).await;
            published.and(consumed)?;
        }
        _ if role == "open" => {}
        _ => panic!("unknown role {role}"),
    }
    bus.close().await
}

fn spawn(role: &str, file: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .env(ROLE, role)
        .env(FILE, file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

fn wait(mut child: Child, deadline: Instant) -> (bool, Vec<String>) {
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let lines = BufReader::new(child.stdout.take().expect("stdout"))
                .lines()
                .map_while(Result::ok)
                .collect();
            return (status.success(), lines);
        }
        assert!(Instant::now() < deadline, "a child process hung");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn several_processes_share_one_file<D: FileDriver>() {
    let dir = TempDir::new("processes");
    let file = dir.file("bus.db");
    // Create the schema once, so the children race only on real work.
    D::block_on(async { drop(D::open(&file).await.expect("create")) });
    let deadline = Instant::now() + Duration::from_secs(120);
    let consumers: Vec<(String, Child)> = ["a", "a", "b", "b"]
        .iter()
        .map(|g| ((*g).to_owned(), spawn(&format!("consume:{g}"), &file)))
        .collect();
    let publishers: Vec<Child> = (0..PUBLISHERS)
        .map(|i| spawn(&format!("publish:p{i}"), &file))
        .collect();
    let mut published = BTreeSet::new();
    for p in publishers {
        let (ok, lines) = wait(p, deadline);
        assert!(ok, "a publisher failed: {:?}", lines.last());
        published.extend(lines.iter().filter_map(|l| {
            l.strip_prefix("published ")
                .and_then(|rest| rest.split(' ').next().map(str::to_owned))
        }));
    }
    assert_eq!(published.len(), PUBLISHERS * PER_PUBLISHER);
    std::fs::write(file.with_extension("done"), b"").unwrap();
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (group, c) in consumers {
        let (ok, lines) = wait(c, deadline);
        assert!(ok, "a consumer of {group} failed: {:?}", lines.last());
        received
            .entry(group)
            .or_default()
            .extend(lines.iter().filter_map(|l| {
                l.strip_prefix("acked ")?
                    .split(' ')
                    .nth(1)
                    .map(str::to_owned)
            }));
    }
    for (group, ids) in &received {
        let distinct: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(distinct, published, "group {group} lost messages");
        eprintln!(
            "group {group}: {} messages, {} redeliveries",
            distinct.len(),
            ids.len() - distinct.len()
        );
    }
}

fn a_second_process_is_refused<D: FileDriver>() {
    let dir = TempDir::new("second");
    let file = dir.file("bus.db");
    D::block_on(async {
        let bus = open_bus::<D>(&file, None).await.unwrap();
        bus.publish("t", Message::new("mine").with_id("a"))
            .await
            .unwrap();
        let (ok, lines) = wait(
            spawn("open", &file),
            Instant::now() + Duration::from_secs(60),
        );
        assert!(!ok, "a second process opened the file: {lines:?}");
        let error = lines.join("\n");
        assert!(error.contains("lock"), "the refusal says why: {error}");

        // The first process goes on, and its message is intact.
        bus.publish("t", Message::new("mine too").with_id("b"))
            .await
            .unwrap();
        let sub = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
        for id in ["a", "b"] {
            let d = sub.try_recv().await.unwrap().expect("message");
            assert_eq!(d.message().id(), id);
            d.ack().await.unwrap();
        }
        bus.close().await.unwrap();
    });
    // Once it has closed, another process may open the file.
    let (ok, lines) = wait(
        spawn("open", &file),
        Instant::now() + Duration::from_secs(60),
    );
    assert!(ok, "reopening after the first process let go: {lines:?}");
}

/// What killed children said before they died.
#[derive(Default)]
struct Said {
    published: BTreeMap<String, u64>,
    acked: BTreeSet<u64>,
    acking: BTreeSet<u64>,
}

impl Said {
    fn read(&mut self, lines: Vec<String>) {
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["published", id, seq] => {
                    self.published
                        .insert((*id).to_owned(), seq.parse().unwrap());
                }
                ["acked", seq, ..] => {
                    self.acked.insert(seq.parse().unwrap());
                }
                ["acking", seq] => {
                    self.acking.insert(seq.parse().unwrap());
                }
                _ => {}
            }
        }
    }
}

fn killed_processes_lose_nothing<D: FileDriver>() {
    let dir = TempDir::new("killed");
    let file = dir.file("bus.db");
    let mut said = Said::default();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ u64::from(std::process::id());
    for round in 0..8 {
        let mut child = spawn(&format!("work:r{round}"), &file);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 400));
        let _ = child.kill();
        let (_, lines) = wait(child, Instant::now() + Duration::from_secs(30));
        said.read(lines);
        // Reopen after the kill: what was published is there.
        D::block_on(async {
            let bus = open_bus::<D>(&file, None).await.unwrap();
            for (id, seq) in &said.published {
                let again = bus
                    .publish("jobs", Message::new("again").with_id(id.clone()))
                    .await
                    .unwrap();
                assert_eq!(
                    again,
                    Outcome::Duplicate { seq: *seq },
                    "round {round}: {id} lost"
                );
            }
            bus.close().await.unwrap();
        });
    }
    assert!(!said.published.is_empty(), "the child never got to publish");
    // Drain: nothing acked comes back, everything else does.
    D::block_on(async {
        let clock = ManualClock::new(StdClock.now());
        let bus = open_bus::<D>(&file, Some(clock.clone())).await.unwrap();
        let sub = bus.subscribe("jobs", "g", shared()).await.unwrap();
        let mut delivered = BTreeSet::new();
        let mut idle = 0;
        loop {
            let Some(d) = sub.try_recv().await.unwrap() else {
                // Leases held by killed consumers end with time.
                idle += 1;
                if idle > 2 {
                    break;
                }
                clock.advance(Duration::from_secs(60));
                continue;
            };
            idle = 0;
            assert!(
                !said.acked.contains(&d.seq()),
                "acked seq {} delivered again",
                d.seq()
            );
            delivered.insert(d.seq());
            d.ack().await.unwrap();
        }
        // A message handed out `max_attempts` times to consumers that were
        // killed holding it is a dead letter: also accounted for (I8).
        let dlq = bus.subscribe("jobs.dlq", "check", shared()).await.unwrap();
        let mut dead = BTreeSet::new();
        while let Some(d) = dlq.try_recv().await.unwrap() {
            let seq = &d.message().metadata()[litebus::driver::dead_letter_keys::SEQ];
            dead.insert(seq.parse::<u64>().unwrap());
            d.ack().await.unwrap();
        }
        for seq in said.published.values() {
            assert!(
                said.acked.contains(seq)
                    || said.acking.contains(seq)
                    || delivered.contains(seq)
                    || dead.contains(seq),
                "seq {seq} neither acked, delivered nor dead-lettered"
            );
        }
        eprintln!(
            "killed rounds: {} published, {} acked before a kill, {} delivered after, {} dead-lettered",
            said.published.len(),
            said.acked.len(),
            delivered.len(),
            dead.len()
        );
        bus.close().await.unwrap();
    });
}
