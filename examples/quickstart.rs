//! litebus in one screen: a topic, two groups that each get every message,
//! competing consumers, a duplicate, a nack and redelivery, a dead letter and
//! a live listener. Run with `cargo run --example quickstart`.

use std::time::Duration;

use futures_lite::future::block_on;
use litebus::{
    Bus, BusOptions, Delivery, GroupOptions, Live, MemoryDriver, Message, NackOptions, Order,
    Result,
};

fn describe(who: &str, d: &Delivery) -> String {
    format!(
        "{who:<10} got seq {} {:?} (attempt {})",
        d.seq(),
        String::from_utf8_lossy(d.message().payload()),
        d.attempt()
    )
}

fn main() -> Result<()> {
    block_on(async {
        let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
        let mut live = bus.listen("orders")?;

        // Two groups: each receives every order (fan-out).
        let billing = bus
            .subscribe("orders", "billing", GroupOptions::new())
            .await?;
        // Shipping shares its work between two competing workers.
        let shipping_options = GroupOptions::new()
            .order(Order::Shared { max_in_flight: 8 })
            .prefetch(1)
            .max_attempts(2)
            .lease(Duration::from_secs(5));
        let ship_a = bus
            .subscribe("orders", "shipping", shipping_options.clone())
            .await?;
        let ship_b = bus
            .subscribe("orders", "shipping", shipping_options)
            .await?;

        for (id, what) in [("o-1", "2 books"), ("o-2", "1 lamp"), ("o-3", "poison")] {
            let outcome = bus
                .publish("orders", Message::new(what).with_id(id))
                .await?;
            println!("publish  {id} -> {outcome:?}");
        }
        let again = bus
            .publish("orders", Message::new("2 books").with_id("o-1"))
            .await?;
        println!("publish  o-1 again -> {again:?} (stored once, never delivered twice)");

        for _ in 0..3 {
            let d = billing.recv().await?;
            println!("{}", describe("billing", &d));
            d.ack().await?;
        }

        // Worker A fails on o-1 once; it comes back with attempt 2.
        let first = ship_a.recv().await?;
        println!("{}", describe("ship-a", &first));
        first
            .nack(NackOptions::new().with_reason("printer jammed"))
            .await?;
        println!("ship-a     nacked seq {}", first.seq());

        let mut done = 0;
        while done < 3 {
            for (who, worker) in [("ship-b", &ship_b), ("ship-a", &ship_a)] {
                let Some(d) = worker.try_recv().await? else {
                    continue;
                };
                println!("{}", describe(who, &d));
                if d.message().payload() == b"poison" {
                    d.nack(NackOptions::new().with_reason("cannot parse"))
                        .await?;
                    println!("{who:<10} nacked seq {} (attempt {})", d.seq(), d.attempt());
                    if d.attempt() == 2 {
                        done += 1;
                    }
                } else {
                    d.ack().await?;
                    done += 1;
                }
            }
        }

        let dlq = bus
            .subscribe("orders.dlq", "ops", GroupOptions::new())
            .await?;
        let dead = dlq.recv().await?;
        let meta = dead.message().metadata();
        println!(
            "dead letter {:?}: {} attempts, last error {:?}",
            String::from_utf8_lossy(dead.message().payload()),
            meta["litebus.dead_letter.attempts"],
            meta["litebus.dead_letter.error"],
        );
        dead.ack().await?;

        let mut heard = Vec::new();
        while let Some(Ok(Live::Message { seq, .. })) = live.try_recv() {
            heard.push(seq);
        }
        println!("listener heard seqs {heard:?}");

        for group in bus.stats("orders").await?.groups {
            println!(
                "stats    {:<9} ready {} in flight {} acked through seq {} dead-lettered {}",
                group.group, group.ready, group.in_flight, group.acked_floor, group.dead_lettered
            );
        }
        bus.close().await
    })
}
