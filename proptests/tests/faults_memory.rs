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
