//! Spans, events and metrics on `MemoryDriver` (the SQL drivers run the
//! same check with the SQL engine's spans: `telemetry_tests!`).

use futures_lite::future::block_on;
use litebus::{Bus, BusOptions, MemoryDriver};
use litebus_conformance::kit::telemetry::{a_day_of_work, check_telemetry};

#[test]
fn spans_events_and_metrics() {
    let spans = check_telemetry(|| {
        block_on(async {
            let bus = Bus::open(MemoryDriver::new(), BusOptions::new()).unwrap();
            a_day_of_work(&bus).await;
            bus.close().await.unwrap();
        });
    });
    assert!(!spans.iter().any(|s| s == "litebus.transaction"));
}
