//! Several OS processes on one database file, and processes killed in the
//! middle of their work (SIGKILL). The test binary runs itself as the child
//! processes: with `LITEBUS_ROLE` set, `main` plays that role instead.
//!
//! - `several_processes_share_one_file`: two publishers and two consumers in
//!   each of two groups, all separate processes: every message reaches every
//!   group (at least once; redeliveries counted), none is lost, and no process
//!   sees a locking error.
//! - `killed_processes_lose_nothing`: rounds of a publisher and a consumer
//!   killed at a random moment. After each round the file is reopened: every
//!   message whose publish had returned is there, nothing acked comes back,
//!   and every message not acked is delivered again (or dead-lettered after
//!   too many killed consumers held it); one killed in the middle of its ack
//!   may go either way.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use litebus::{Bus, BusOptions, GroupOptions, Message, Order};
use litebus_sqlx::SqlxDriver;

const ROLE: &str = "LITEBUS_ROLE";
const FILE: &str = "LITEBUS_FILE";
const PUBLISHERS: usize = 2;
const PER_PUBLISHER: usize = 300;

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let file = PathBuf::from(std::env::var(FILE).expect("LITEBUS_FILE"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio");
        if let Err(e) = runtime.block_on(child(&role, &file)) {
            eprintln!("{role}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let tests: [(&str, fn()); 2] = [
        (
            "several_processes_share_one_file",
            several_processes_share_one_file,
        ),
        (
            "killed_processes_lose_nothing",
            killed_processes_lose_nothing,
        ),
    ];
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

async fn child(role: &str, file: &Path) -> litebus::Result<()> {
    let bus = Bus::open(SqlxDriver::open(file).await?, BusOptions::new())?;
    let mut parts = role.split(':');
    match (parts.next(), parts.next()) {
        (Some("publish"), Some(who)) => {
            for k in 0..PER_PUBLISHER {
                let id = format!("{who}-{k}");
                let outcome = bus
                    .publish("jobs", Message::new(id.clone()).with_id(id.clone()))
                    .await?;
                println!("published {id} {}", outcome.seq());
                if k % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        (Some("consume"), Some(group)) => {
            let sub = bus.subscribe("jobs", group, shared()).await?;
            let done = file.with_extension("done");
            loop {
                match tokio::time::timeout(Duration::from_millis(300), sub.recv()).await {
                    Ok(delivery) => {
                        let d = delivery?;
                        // Killed between the two lines, the ack may or may
                        // not have been stored.
                        println!("acking {}", d.seq());
                        d.ack().await?;
                        println!("acked {} {}", d.seq(), d.message().id());
                    }
                    Err(_) if done.exists() => {
                        let stats = bus.stats("jobs").await?;
                        let g = stats.groups.iter().find(|g| g.group == group);
                        if g.is_some_and(|g| g.ready == 0 && g.in_flight == 0) {
                            break;
                        }
                    }
                    Err(_) => {}
                }
            }
        }
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

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("litebus-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("bus.db")
}

fn several_processes_share_one_file() {
    let file = temp_file("processes");
    // Create the schema once, so the children race only on real work.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(SqlxDriver::open(&file))
        .expect("create");
    let deadline = Instant::now() + Duration::from_mins(2);
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
        assert!(ok, "a publisher failed");
        published.extend(
            lines
                .iter()
                .filter_map(|l| l.split(' ').nth(1).map(str::to_owned)),
        );
    }
    assert_eq!(published.len(), PUBLISHERS * PER_PUBLISHER);
    std::fs::write(file.with_extension("done"), b"").unwrap();
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (group, c) in consumers {
        let (ok, lines) = wait(c, deadline);
        assert!(ok, "a consumer of {group} failed");
        received.entry(group).or_default().extend(
            lines
                .iter()
                .filter_map(|l| l.split(' ').nth(2).map(str::to_owned)),
        );
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
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

fn killed_processes_lose_nothing() {
    let file = temp_file("killed");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut published: BTreeMap<String, u64> = BTreeMap::new();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut acking: BTreeSet<u64> = BTreeSet::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ u64::from(std::process::id());
    for round in 0..8 {
        let publisher = spawn(&format!("publish:r{round}"), &file);
        let consumer = spawn("consume:g", &file);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 400));
        for mut child in [publisher, consumer] {
            let _ = child.kill();
            let (_, lines) = wait(child, Instant::now() + Duration::from_secs(30));
            for line in lines {
                let parts: Vec<&str> = line.split(' ').collect();
                match parts.as_slice() {
                    ["published", id, seq] => {
                        published.insert((*id).to_owned(), seq.parse().unwrap());
                    }
                    ["acked", seq, _] => {
                        acked.insert(seq.parse().unwrap());
                    }
                    ["acking", seq] => {
                        acking.insert(seq.parse().unwrap());
                    }
                    _ => {}
                }
            }
        }
        // Reopen after the kill: what was published is there.
        runtime.block_on(async {
            let bus = Bus::open(SqlxDriver::open(&file).await.unwrap(), BusOptions::new()).unwrap();
            for (id, seq) in &published {
                let again = bus
                    .publish("jobs", Message::new("again").with_id(id.clone()))
                    .await
                    .unwrap();
                assert_eq!(
                    again,
                    litebus::Outcome::Duplicate { seq: *seq },
                    "round {round}: {id} lost"
                );
            }
            bus.close().await.unwrap();
        });
    }
    assert!(!published.is_empty(), "the publisher never got to publish");
    // Drain: nothing acked comes back, everything else does.
    runtime.block_on(async {
        let clock = litebus::ManualClock::new(litebus::Clock::now(&litebus::StdClock));
        let bus = Bus::open(SqlxDriver::open(&file).await.unwrap(), BusOptions::new().clock(clock.clone()))
            .unwrap();
        let sub = bus.subscribe("jobs", "g", shared()).await.unwrap();
        let mut delivered = BTreeSet::new();
        loop {
            clock.advance(Duration::from_mins(1));
            let Some(d) = sub.try_recv().await.unwrap() else { break };
            assert!(!acked.contains(&d.seq()), "acked seq {} delivered again", d.seq());
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
        for seq in published.values() {
            assert!(
                acked.contains(seq)
                    || acking.contains(seq)
                    || delivered.contains(seq)
                    || dead.contains(seq),
                "seq {seq} neither acked, delivered nor dead-lettered"
            );
        }
        eprintln!(
            "killed rounds: {} published, {} acked before a kill, {} delivered after, {} dead-lettered",
            published.len(),
            acked.len(),
            delivered.len(),
            dead.len()
        );
        bus.close().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}
