//! Durable messages on a SQLite file. Run it twice: each run finds what the
//! runs before it left for the `billing` group, publishes three orders,
//! bills the oldest waiting one and leaves the rest in the file.
//!
//! `cargo run -p litebus-sqlx --example durable [path]`

use litebus::{Bus, BusOptions, GroupOptions, Message};
use litebus_sqlx::SqlxDriver;

#[tokio::main]
async fn main() -> litebus::Result<()> {
    let path = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join("litebus-durable.db"),
        Into::into,
    );
    let bus = Bus::open(SqlxDriver::open(&path).await?, BusOptions::new())?;
    println!("store: {}", path.display());

    // A group sees every message of its topic; this one exists from the
    // first run on, so it finds what earlier runs left.
    let billing = bus
        .subscribe("orders", "billing", GroupOptions::new())
        .await?;
    let before = bus.stats("orders").await?;
    let waiting = before.groups.iter().find(|g| g.group == "billing");
    println!(
        "waiting for billing from earlier runs: {}",
        waiting.map_or(0, |g| g.ready)
    );

    let first = before.messages + 1;
    for n in first..first + 3 {
        let order = format!("order {n}");
        // The id makes a repeated publish of the same order a duplicate.
        let outcome = bus
            .publish(
                "orders",
                Message::new(order.clone()).with_id(format!("order-{n}")),
            )
            .await?;
        println!("published {order} at seq {}", outcome.seq());
    }

    // The oldest waiting order, under a lease until it is acked.
    let delivery = billing.recv().await?;
    println!(
        "billing handled {} (seq {}, attempt {})",
        String::from_utf8_lossy(delivery.message().payload()),
        delivery.seq(),
        delivery.attempt()
    );
    delivery.ack().await?;

    let after = bus.stats("orders").await?;
    let left = after.groups.iter().find(|g| g.group == "billing");
    println!(
        "left for billing: {} (run again to see them)",
        left.map_or(0, |g| g.ready)
    );
    bus.close().await
}
