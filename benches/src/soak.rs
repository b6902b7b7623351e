//! The retention soak: a work queue under `Retention::until_consumed` on a
//! database file, published and consumed for a long time. It prints, for
//! each tenth of the run, the rate and the size of the database file and
//! its write-ahead log, and fails if the files ever outgrow the bound: a
//! store that prunes what it consumed stays small however long it runs.
//!
//! `cargo run --release -p litebus-bench -- --soak MESSAGES [STORE]`
//! (STORE: `sqlx file` or `turso file`; both when left out).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use litebus::{GroupOptions, Message, Order, Retention};

use crate::PAYLOAD;
use crate::runs::Store;

/// What the database file and its log may reach, in bytes.
pub const FILE_BOUND: u64 = 8 * 1024 * 1024;

/// The most messages published and not yet acked: the publisher waits for
/// the consumer beyond it.
const BACKLOG: usize = 10_000;

/// Publishes `messages` in batches of 100 while one consumer (a shared
/// group, 64 prefetched) receives and acks each; checks the file bound
/// after every batch. Whether the bound held.
pub async fn soak(store: Store, dir: &Path, messages: usize) -> bool {
    let path = dir.join(format!("soak-{}.db", store.name().replace(' ', "-")));
    let bus = store.bus(&path, litebus::BusOptions::new()).await;
    bus.set_retention("jobs", Retention::new().until_consumed())
        .await
        .unwrap();
    let options = GroupOptions::new()
        .order(Order::Shared { max_in_flight: 256 })
        .prefetch(64);
    let sub = bus.subscribe("jobs", "workers", options).await.unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let consumer = tokio::spawn({
        let acked = acked.clone();
        async move {
            for _ in 0..messages {
                sub.recv().await.unwrap().ack().await.unwrap();
                acked.fetch_add(1, Ordering::Relaxed);
            }
            sub.close().await.unwrap();
        }
    });
    let files = |path: &Path| {
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal = path.with_extension("db-wal");
        (size(path), size(&wal))
    };
    println!(
        "soak: {}, {messages} messages, until_consumed, bound {} MiB",
        store.name(),
        FILE_BOUND >> 20
    );
    println!("| done | msgs/s (this tenth) | db bytes | wal bytes | stored |");
    println!("|---:|---:|---:|---:|---:|");
    let tenth = (messages / 10).max(1);
    let (mut published, mut largest) = (0, 0);
    let mut window = Instant::now();
    let started = Instant::now();
    let mut held = true;
    while published < messages {
        let take = 100.min(messages - published);
        bus.publish_batch("jobs", (0..take).map(|_| Message::new(PAYLOAD)))
            .await
            .unwrap();
        published += take;
        let (db, wal) = files(&path);
        largest = largest.max(db + wal);
        held &= db + wal <= FILE_BOUND;
        while published - acked.load(Ordering::Relaxed) > BACKLOG {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        if published % tenth < take || published == messages {
            let stored = bus.stats("jobs").await.unwrap().messages;
            let rate = tenth as f64 / window.elapsed().as_secs_f64();
            println!("| {published} | {rate:.0} | {db} | {wal} | {stored} |");
            window = Instant::now();
        }
    }
    consumer.await.unwrap();
    bus.prune("jobs").await.unwrap();
    let left = bus.stats("jobs").await.unwrap().messages;
    bus.close().await.unwrap();
    println!(
        "soak: {} {messages} messages in {:.1} s ({:.0} msgs/s), largest db + wal {largest} bytes, \
         {left} stored at the end; bound {}",
        store.name(),
        started.elapsed().as_secs_f64(),
        messages as f64 / started.elapsed().as_secs_f64(),
        if held { "held" } else { "EXCEEDED" }
    );
    held && left == 0
}
