//! `TursoDriver` and other OS processes. The test binary runs itself as the
//! child processes: with `LITEBUS_ROLE` set, `main` plays that role instead.
//!
//! - `a_second_process_is_refused`: while one process has the file open,
//!   another opening it gets a clear error naming the lock, and the first
//!   goes on unharmed.
//! - `killed_processes_lose_nothing`: rounds of one process publishing and
//!   consuming, killed (SIGKILL) at a random moment. After each round the file
//!   is reopened: every message whose publish had returned is there, nothing
//!   acked comes back, and every message not acked is delivered again (or
//!   dead-lettered after too many killed consumers held it); one killed in
//!   the middle of its ack may go either way.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use litebus::{Bus, BusOptions, GroupOptions, Message, Order};
use litebus_turso::TursoDriver;

const ROLE: &str = "LITEBUS_ROLE";
const FILE: &str = "LITEBUS_FILE";

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let file = PathBuf::from(std::env::var(FILE).expect("LITEBUS_FILE"));
        if let Err(e) = block_on(child(&role, &file)) {
            println!("error {e}");
            std::process::exit(1);
        }
        return;
    }
    let tests: [(&str, fn()); 2] = [
        ("a_second_process_is_refused", a_second_process_is_refused),
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

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn child(role: &str, file: &Path) -> litebus::Result<()> {
    let bus = Bus::open(TursoDriver::open(file).await?, BusOptions::new())?;
    say("opened");
    if role == "open" {
        return bus.close().await;
    }
    let publish = async {
        for k in 0.. {
            let id = format!("{role}-{k}");
            let outcome = bus
                .publish("jobs", Message::new(id.clone()).with_id(id.clone()))
                .await?;
            say(&format!("published {id} {}", outcome.seq()));
            // turso's calls complete at once: let the consumer have a turn.
            futures_lite::future::yield_now().await;
        }
        Ok::<(), litebus::Error>(())
    };
    let consume = async {
        let sub = bus.subscribe("jobs", "g", shared()).await?;
        loop {
            let d = sub.recv().await?;
            // Killed between the two lines, the ack may or may not have
            // been stored.
            say(&format!("acking {}", d.seq()));
            d.ack().await?;
            say(&format!("acked {}", d.seq()));
        }
        #[allow(unreachable_code)]
        Ok::<(), litebus::Error>(())
    };
    let (published, consumed) = futures_lite::future::zip(publish, consume).await;
    published.and(consumed)
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
    let dir = std::env::temp_dir().join(format!("litebus-turso-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("bus.db")
}

fn a_second_process_is_refused() {
    let file = temp_file("second");
    block_on(async {
        let bus = Bus::open(TursoDriver::open(&file).await.unwrap(), BusOptions::new()).unwrap();
        bus.publish("t", Message::new("mine").with_id("a"))
            .await
            .unwrap();

        let (ok, lines) = wait(
            spawn("open", &file),
            Instant::now() + Duration::from_secs(60),
        );
        assert!(!ok, "a second process opened the file: {lines:?}");
        let error = lines.join("\n");
        assert!(
            error.contains("locked by another process"),
            "the refusal says why: {error}"
        );

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
    drop_and_reopen_in_child(&file);
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

fn drop_and_reopen_in_child(file: &Path) {
    let (ok, lines) = wait(
        spawn("open", file),
        Instant::now() + Duration::from_secs(60),
    );
    assert!(ok, "reopening after the first process let go: {lines:?}");
}

fn killed_processes_lose_nothing() {
    let file = temp_file("killed");
    let mut published: BTreeMap<String, u64> = BTreeMap::new();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut acking: BTreeSet<u64> = BTreeSet::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ u64::from(std::process::id());
    for round in 0..8 {
        let mut child = spawn(&format!("r{round}"), &file);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 400));
        let _ = child.kill();
        let (_, lines) = wait(child, Instant::now() + Duration::from_secs(30));
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["published", id, seq] => {
                    published.insert((*id).to_owned(), seq.parse().unwrap());
                }
                ["acked", seq] => {
                    acked.insert(seq.parse().unwrap());
                }
                ["acking", seq] => {
                    acking.insert(seq.parse().unwrap());
                }
                _ => {}
            }
        }
        // Reopen after the kill: what was published is there.
        block_on(async {
            let bus =
                Bus::open(TursoDriver::open(&file).await.unwrap(), BusOptions::new()).unwrap();
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
    assert!(!published.is_empty(), "the child never got to publish");
    // Drain: nothing acked comes back, everything else does.
    block_on(async {
        let clock = litebus::ManualClock::new(litebus::Clock::now(&litebus::StdClock));
        let bus = Bus::open(
            TursoDriver::open(&file).await.unwrap(),
            BusOptions::new().clock(clock.clone()),
        )
        .unwrap();
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
                !acked.contains(&d.seq()),
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
