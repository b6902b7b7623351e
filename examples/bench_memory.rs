//! `MemoryDriver` throughput beside a raw `async-channel` pipeline moving the
//! same 100-byte messages in the same run.
//!
//! `cargo run --release --example bench_memory [-- --quick]`

use std::time::{Duration, Instant};

use futures_lite::future::{block_on, zip};
use litebus::{Bus, BusOptions, GroupOptions, MemoryDriver, Message, Order};

const PAYLOAD: [u8; 100] = [7; 100];

struct Row {
    workload: &'static str,
    litebus: f64,
    baseline: f64,
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// Best of `runs` runs, to keep one slow scheduling hiccup out of the figure.
fn best(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..runs).map(|_| f()).fold(0.0, f64::max)
}

fn bus() -> Bus {
    Bus::open(MemoryDriver::new(), BusOptions::new()).expect("open")
}

fn publish_single(n: usize) -> f64 {
    block_on(async {
        let bus = bus();
        let start = Instant::now();
        for _ in 0..n {
            bus.publish("bench", Message::new(PAYLOAD))
                .await
                .expect("publish");
        }
        rate(n, start.elapsed())
    })
}

fn publish_batched(n: usize, batch: usize) -> f64 {
    block_on(async {
        let bus = bus();
        let start = Instant::now();
        for _ in 0..n / batch {
            bus.publish_batch("bench", (0..batch).map(|_| Message::new(PAYLOAD)))
                .await
                .expect("publish");
        }
        rate(n, start.elapsed())
    })
}

fn end_to_end(n: usize, order: Order, prefetch: u32) -> f64 {
    block_on(async {
        let bus = bus();
        let sub = bus
            .subscribe(
                "bench",
                "g",
                GroupOptions::new().order(order).prefetch(prefetch),
            )
            .await
            .expect("subscribe");
        let start = Instant::now();
        let producer = async {
            for _ in 0..n / 100 {
                bus.publish_batch("bench", (0..100).map(|_| Message::new(PAYLOAD)))
                    .await
                    .expect("publish");
                futures_lite::future::yield_now().await;
            }
        };
        let consumer = async {
            for _ in 0..n {
                let d = sub.recv().await.expect("recv");
                d.ack().await.expect("ack");
            }
        };
        zip(producer, consumer).await;
        rate(n, start.elapsed())
    })
}

fn channel_send(n: usize) -> f64 {
    block_on(async {
        let (tx, rx) = async_channel::unbounded();
        let start = Instant::now();
        for _ in 0..n {
            tx.send(PAYLOAD.to_vec()).await.expect("send");
        }
        let elapsed = start.elapsed();
        drop(rx);
        rate(n, elapsed)
    })
}

fn channel_pipeline(n: usize) -> f64 {
    block_on(async {
        let (tx, rx) = async_channel::bounded(1024);
        let start = Instant::now();
        let producer = async {
            for _ in 0..n {
                tx.send(PAYLOAD.to_vec()).await.expect("send");
            }
        };
        let consumer = async {
            let mut bytes = 0;
            for _ in 0..n {
                bytes += rx.recv().await.expect("recv").len();
            }
            bytes
        };
        let ((), bytes) = zip(producer, consumer).await;
        assert_eq!(bytes, n * PAYLOAD.len());
        rate(n, start.elapsed())
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, runs) = if quick { (20_000, 1) } else { (500_000, 3) };
    let rows = [
        Row {
            workload: "publish, 1 per call",
            litebus: best(runs, || publish_single(n / 5)),
            baseline: best(runs, || channel_send(n / 5)),
        },
        Row {
            workload: "publish, batches of 100",
            litebus: best(runs, || publish_batched(n, 100)),
            baseline: best(runs, || channel_send(n)),
        },
        Row {
            workload: "end to end, shared, prefetch 100",
            litebus: best(runs, || {
                end_to_end(
                    n,
                    Order::Shared {
                        max_in_flight: 1000,
                    },
                    100,
                )
            }),
            baseline: best(runs, || channel_pipeline(n)),
        },
        Row {
            workload: "end to end, ordered",
            litebus: best(runs, || end_to_end(n / 5, Order::Ordered, 1)),
            baseline: best(runs, || channel_pipeline(n / 5)),
        },
    ];
    println!("MemoryDriver vs raw async-channel, 100-byte payloads, {n} messages, best of {runs}");
    println!(
        "{:<34} {:>14} {:>16} {:>8}",
        "workload", "litebus msg/s", "channel msg/s", "ratio"
    );
    for row in rows {
        println!(
            "{:<34} {:>14.0} {:>16.0} {:>8.2}",
            row.workload,
            row.litebus,
            row.baseline,
            row.litebus / row.baseline
        );
    }
}
