//! A worker on a SQLite file: a handler resizes uploaded photos, 16 at a
//! time. A flaky upload fails once and succeeds on its retry (after the
//! group's backoff), a corrupt one fails every attempt, waiting longer
//! each time, and ends as a dead letter with its error, a slow one
//! outlasts its lease (the worker's heartbeat keeps it), and the worker shuts
//! down gracefully once the queue is empty (or at Ctrl-C).
//!
//! `cargo run -p litebus-sqlx --example worker [path]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use litebus::{Backoff, Bus, BusOptions, GroupOptions, Message, Order};
use litebus_sqlx::SqlxDriver;

#[tokio::main]
async fn main() -> litebus::Result<()> {
    let path = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join(format!("litebus-worker-{}.db", std::process::id())),
        Into::into,
    );
    let bus = Bus::open(SqlxDriver::open(&path).await?, BusOptions::new())?;
    println!("store: {}", path.display());

    let options = GroupOptions::new()
        .order(Order::Shared { max_in_flight: 64 })
        .max_attempts(3)
        .lease(Duration::from_millis(300))
        // A failed upload waits 50 ms, then 100 ms, … (at most 1 s), less
        // up to a fifth, before its next attempt.
        .backoff(
            Backoff::exponential(Duration::from_millis(50), Duration::from_secs(1)).jitter(0.2),
        );
    let resizer = bus.subscribe("uploads", "resizer", options).await?;
    let mut uploads: Vec<Message> = (1..=8)
        .map(|n| Message::new(format!("photo-{n}.png")))
        .collect();
    uploads.extend(["flaky.png", "corrupt.png", "slow.png"].map(Message::new));
    bus.publish_batch("uploads", uploads).await?;

    let flaked = Arc::new(AtomicBool::new(false));
    let report = resizer
        .worker(|delivery| {
            let flaked = flaked.clone();
            async move {
                let name = String::from_utf8_lossy(delivery.message().payload()).into_owned();
                match name.as_str() {
                    "corrupt.png" => return Err(format!("cannot decode {name}")),
                    "flaky.png" if !flaked.swap(true, Ordering::AcqRel) => {
                        return Err("storage timed out".to_owned());
                    }
                    // Three leases long: the heartbeat keeps the lease.
                    "slow.png" => tokio::time::sleep(Duration::from_millis(900)).await,
                    _ => {}
                }
                println!("resized {name} (attempt {})", delivery.attempt());
                Ok(())
            }
        })
        .concurrency(16)
        .shutdown(stop_signal(bus.clone()), Duration::from_secs(10))
        .run()
        .await?;
    println!(
        "worker stopped: {} acked, {} nacked, {} lease lost",
        report.acked, report.nacked, report.lease_lost
    );

    for dead in bus.dead_letters("uploads", "resizer", 1, 100).await? {
        println!(
            "dead letter: {} after {} attempts: {}",
            String::from_utf8_lossy(dead.record().message().payload()),
            dead.attempts(),
            dead.error()
        );
    }
    // What this run shows, checked: nine resized (the flaky one on its
    // second attempt, the slow one without losing its lease), one failure
    // retried and three on the corrupt upload, which is now a dead letter.
    assert_eq!((report.acked, report.nacked, report.lease_lost), (10, 4, 0));
    bus.close().await?;
    if std::env::args().nth(1).is_none() {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    Ok(())
}

/// Completes at Ctrl-C, or once the group has nothing ready or in flight.
async fn stop_signal(bus: Bus) {
    let drained = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Ok(stats) = bus.stats("uploads").await else {
                return;
            };
            if stats
                .groups
                .iter()
                .all(|g| g.ready == 0 && g.in_flight == 0)
            {
                return;
            }
        }
    };
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        println!("Ctrl-C: finishing the running handlers");
    };
    futures_lite::future::or(drained, ctrl_c).await;
}
