//! `MemoryDriver` behind injected driver failures: nothing published is lost,
//! nothing acked returns, no panic (see `litebus_proptests::faults`).

use litebus_proptests::faults::check_faults;
use litebus_proptests::ops::op;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn memory_driver_survives_faults(
        schedule in proptest::collection::vec(any::<u8>(), 0..64),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let result = futures_lite::future::block_on(check_faults(schedule, &ops));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// A heartbeat goes on through retryable failures of the store: an
/// extension that failed (before the store did it, or after, its answer
/// lost) is tried again after a pause on the bus clock (10 ms, then 20 ms),
/// and the lease is kept: another consumer gets nothing past the first
/// lease's end.
#[test]
fn a_heartbeat_tries_a_failed_extension_again_and_keeps_the_lease() {
    use futures_lite::future::{block_on, poll_once};
    use litebus::{Bus, BusOptions, GroupOptions, ManualClock, MemoryDriver, Message, Timestamp};
    use litebus_proptests::faults::FaultyDriver;
    use std::time::Duration;

    block_on(async {
        // When on: fail before, fail after, pass, and again.
        let driver = FaultyDriver::new(MemoryDriver::new(), vec![210, 230, 0]);
        driver.set_enabled(false);
        let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
        let bus = Bus::open(driver.clone(), BusOptions::new().clock(clock.clone())).unwrap();
        let lease = Duration::from_secs(10);
        let options = GroupOptions::new().lease(lease).prefetch(1);
        let holder = bus.subscribe("t", "g", options.clone()).await.unwrap();
        let other = bus.subscribe("t", "g", options).await.unwrap();
        bus.publish("t", Message::new("job")).await.unwrap();
        let d = holder.recv().await.unwrap();
        let first_end = d.lease_until();
        let mut beat = Box::pin(d.heartbeat());
        assert!(poll_once(beat.as_mut()).await.is_none());

        driver.set_enabled(true);
        // Past two thirds of the lease: the first try fails, then the next.
        clock.advance(Duration::from_secs(7));
        for pause in [10, 20] {
            assert!(poll_once(beat.as_mut()).await.is_none());
            assert_eq!(d.lease_until(), first_end, "not extended yet");
            clock.advance(Duration::from_millis(pause));
        }
        assert!(poll_once(beat.as_mut()).await.is_none());
        assert_eq!(
            d.lease_until(),
            clock.now() + lease,
            "extended on the third try"
        );
        driver.set_enabled(false);

        clock.advance(Duration::from_secs(4));
        assert!(clock.now() > first_end);
        assert!(
            other.try_recv().await.unwrap().is_none(),
            "the lease was kept"
        );
        d.ack().await.unwrap();
        clock.advance(lease);
        assert!(poll_once(beat.as_mut()).await.unwrap().is_lease_lost());
    });
}
