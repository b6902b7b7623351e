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

/// The timer thread waits for the earliest deadline it knows; a sleep with an
/// earlier one, registered later, must wake it rather than wait behind the
/// long one. A watchdog thread (one minute, against the hour-long sleep)
/// turns a missed wake-up into a failure instead of a hang; nothing is
/// asserted about how fast the short sleep ends.
#[test]
fn std_clock_wakes_an_earlier_sleep_registered_after_a_later_one() {
    futures_lite::future::block_on(async {
        let mut long = StdClock.sleep(Duration::from_secs(3600));
        assert!(futures_lite::future::poll_once(&mut long).await.is_none());
        // Lets the timer thread start (on first use) and settle into its
        // wait for the hour, and the other tests' short sleeps end.
        std::thread::sleep(Duration::from_millis(200));
        let watchdog_fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = async_channel::bounded::<()>(1);
        let fired = watchdog_fired.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(60));
            fired.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = tx.send_blocking(());
        });
        // Whichever ends first; once the watchdog wakes the task, the short
        // sleep is past its deadline too, so the flag tells them apart.
        futures_lite::future::or(StdClock.sleep(Duration::from_millis(20)), async {
            let _ = rx.recv().await;
        })
        .await;
        assert!(
            !watchdog_fired.load(std::sync::atomic::Ordering::SeqCst),
            "a 20 ms sleep was not woken within a minute"
        );
        drop(long);
    });
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
