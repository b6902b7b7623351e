//! The system clocks drive real redelivery under the executors they are made
//! for: a lease ends, and a waiting `recv` wakes with the next attempt without
//! any other call. (Only that it happens is asserted, never how fast.)

use std::time::Duration;

use litebus::{Bus, BusOptions, Clock, GroupOptions, MemoryDriver, Message, StdClock};

async fn lease_expiry_wakes_waiting_recv(options: BusOptions) {
    let bus = Bus::open(MemoryDriver::new(), options).unwrap();
    bus.publish("t", Message::new("x")).await.unwrap();
    let group = GroupOptions::new().lease(Duration::from_millis(30));
    let a = bus.subscribe("t", "g", group.clone()).await.unwrap();
    let b = bus.subscribe("t", "g", group).await.unwrap();
    let first = a.recv().await.unwrap();
    assert_eq!(first.attempt(), 1);
    let again = b.recv().await.unwrap();
    assert_eq!((again.seq(), again.attempt()), (1, 2));
    assert!(first.ack().await.unwrap_err().is_lease_lost());
    again.ack().await.unwrap();
}

#[test]
fn std_clock_under_plain_block_on() {
    futures_lite::future::block_on(lease_expiry_wakes_waiting_recv(BusOptions::new()));
}

#[test]
fn std_clock_reads_wall_time() {
    let now = StdClock.now().as_millis();
    // 2020-01-01 in Unix milliseconds: a clock reading earlier is broken.
    assert!(now > 1_577_836_800_000, "{now}");
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_clock_under_tokio() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(lease_expiry_wakes_waiting_recv(
            BusOptions::new().clock(litebus::TokioClock),
        ));
}

#[cfg(feature = "async-io")]
#[test]
fn async_io_clock_under_smol() {
    smol::block_on(lease_expiry_wakes_waiting_recv(
        BusOptions::new().clock(litebus::AsyncIoClock),
    ));
}
