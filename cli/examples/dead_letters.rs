//! Fills a store with dead letters to try `litebus dlq` on: `N` jobs
//! (default 1,000) published to `jobs`, each given up by group `workers`
//! (one attempt) with a reason.
//!
//! `cargo run --release -p litebus-cli --example dead_letters -- PATH [N]`

use litebus::{Bus, BusOptions, GroupOptions, Message, NackOptions, Order};
use litebus_sqlx::SqlxDriver;

#[tokio::main]
async fn main() -> litebus::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "litebus.db".into());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000);
    let bus = Bus::open(SqlxDriver::open(&path).await?, BusOptions::new())?;
    let options = GroupOptions::new()
        .order(Order::Shared {
            max_in_flight: 1000,
        })
        .prefetch(500)
        .max_attempts(1);
    let workers = bus.subscribe("jobs", "workers", options).await?;
    for start in (0..n).step_by(1000) {
        let batch = (start..n.min(start + 1000)).map(|i| Message::new(format!("job {i}")));
        bus.publish_batch("jobs", batch).await?;
    }
    for _ in 0..n {
        let job = workers.recv().await?;
        job.nack(NackOptions::new().with_reason("disk full"))
            .await?;
    }
    workers.close().await?;
    bus.close().await?;
    println!("{path}: {n} dead letters of group 'workers' of topic 'jobs'");
    Ok(())
}
