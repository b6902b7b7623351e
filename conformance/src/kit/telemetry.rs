//! The spans and events of feature `tracing` and the metrics of feature
//! `metrics`, captured as a subscriber and a recorder see them, on any
//! driver: [`check_telemetry`] installs both for the whole process (a test
//! binary of its own calls it once) and checks what one
//! [`a_day_of_work`] on a fresh store left in them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use litebus::{Bus, GroupOptions, Message, NackOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};

type Fields = BTreeMap<String, String>;

/// What the subscriber saw: spans (name and fields, as last recorded) and
/// events (message and fields), in order.
#[derive(Default)]
struct Seen {
    spans: Vec<(String, Fields)>,
    ids: HashMap<Id, usize>,
    events: Vec<Fields>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Seen>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        let mut seen = self.0.lock().unwrap();
        let n = seen.spans.len();
        seen.spans
            .push((attrs.metadata().name().to_owned(), fields));
        seen.ids.insert(id.clone(), n);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        let n = seen.ids[id];
        values.record(&mut Visitor(&mut seen.spans[n].1));
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        fields.insert("level".into(), event.metadata().level().to_string());
        self.0.lock().unwrap().events.push(fields);
    }
}

fn has(fields: &Fields, expected: &[(&str, &str)]) -> bool {
    expected
        .iter()
        .all(|(k, v)| fields.get(*k).is_some_and(|got| got == v))
}

/// On a fresh store: a duplicate, a redelivery, an ack, a dead letter, a
/// lost lease, a message left waiting, a read of the stats and a release.
pub async fn a_day_of_work(bus: &Bus) {
    let sub = bus
        .subscribe("jobs", "workers", GroupOptions::new().max_attempts(2))
        .await
        .unwrap();
    for (payload, id) in [("a", "a"), ("a again", "a"), ("b", "b")] {
        bus.publish("jobs", Message::new(payload).with_id(id))
            .await
            .unwrap();
    }
    let first = sub.recv().await.unwrap();
    first
        .nack(NackOptions::new().with_reason("flaky"))
        .await
        .unwrap();
    let again = sub.recv().await.unwrap();
    assert_eq!((again.seq(), again.attempt()), (1, 2));
    again.ack().await.unwrap();
    // b fails twice: its second nack dead-letters it.
    for _ in 0..2 {
        let b = sub.recv().await.unwrap();
        b.nack(NackOptions::new().with_reason("broken"))
            .await
            .unwrap();
    }
    // A settle of what is settled: the lease is lost.
    assert!(again.ack().await.unwrap_err().is_lease_lost());
    bus.publish("jobs", Message::new("c")).await.unwrap();
    bus.stats("jobs").await.unwrap();
    sub.close().await.unwrap();
}

/// Installs a capturing subscriber and a recorder for the whole process,
/// runs `run` (which drives [`a_day_of_work`] on a bus of a fresh store),
/// and checks the spans, events and metrics it left. Returns the name of
/// every span seen, for checks of a driver's own.
pub fn check_telemetry(run: impl FnOnce()) -> Vec<String> {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(Registry::default().with(capture.clone()))
        .expect("check_telemetry runs once per process");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("check_telemetry runs once per process");
    run();
    check_spans(&capture.0.lock().unwrap());
    check_metrics(&snapshotter.snapshot().into_vec());
    let seen = capture.0.lock().unwrap();
    seen.spans.iter().map(|(name, _)| name.clone()).collect()
}

fn check_spans(seen: &Seen) {
    let spans = |name: &str| -> Vec<&Fields> {
        seen.spans
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f)
            .collect()
    };

    let publishes = spans("litebus.publish");
    assert_eq!(publishes.len(), 4);
    assert!(has(
        publishes[0],
        &[("topic", "jobs"), ("messages", "1"), ("seq", "1")]
    ));
    assert!(has(publishes[1], &[("duplicates", "1")]));
    assert!(
        !publishes[1].contains_key("seq"),
        "a duplicate has no new seq"
    );
    assert!(has(publishes[2], &[("seq", "2"), ("duplicates", "0")]));

    let claims = spans("litebus.claim");
    assert!(claims.iter().any(|c| has(
        c,
        &[
            ("topic", "jobs"),
            ("group", "workers"),
            ("seq", "1"),
            ("attempt", "2")
        ]
    )));
    assert!(claims.iter().all(|c| c.contains_key("consumer")));

    let settles = spans("litebus.settle");
    let settled: Vec<(&str, &str, &str)> = settles
        .iter()
        .map(|s| {
            (
                s["seq"].as_str(),
                s["attempt"].as_str(),
                s["settlement"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        settled,
        [
            ("1", "1", "nack"),
            ("1", "2", "ack"),
            ("2", "1", "nack"),
            ("2", "2", "nack"),
            ("1", "2", "ack"),
        ]
    );
    assert!(
        settles
            .iter()
            .all(|s| has(s, &[("topic", "jobs"), ("group", "workers")]))
    );

    let releases = spans("litebus.release");
    assert_eq!(releases.len(), 1);
    assert!(has(
        releases[0],
        &[
            ("topic", "jobs"),
            ("group", "workers"),
            ("dead_lettered", "0")
        ]
    ));

    let event = |message: &str| -> Vec<&Fields> {
        seen.events
            .iter()
            .filter(|e| e.get("message").is_some_and(|m| m == message))
            .collect()
    };
    let redeliveries = event("litebus: redelivery");
    assert_eq!(redeliveries.len(), 2, "{:?}", seen.events);
    assert!(has(
        redeliveries[0],
        &[("seq", "1"), ("attempt", "2"), ("level", "INFO")]
    ));
    let dead = event("litebus: dead-lettered");
    assert_eq!(dead.len(), 1);
    assert!(has(
        dead[0],
        &[
            ("topic", "jobs"),
            ("group", "workers"),
            ("seq", "2"),
            ("attempts", "2"),
            ("error", "broken"),
            ("dead_letter_topic", "jobs.dlq"),
            ("level", "WARN"),
        ]
    ));
    let lost = event("litebus: lease lost (it expired, or the message was settled elsewhere)");
    assert_eq!(lost.len(), 1);
    assert!(has(lost[0], &[("seq", "1"), ("attempt", "2")]));
}

type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

fn check_metrics(snapshot: &Snapshot) {
    let mut values = BTreeMap::new();
    for (key, _, _, value) in snapshot {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let value = match value {
            DebugValue::Counter(n) => *n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(_) => continue,
        };
        values.insert(format!("{}{{{}}}", key.name(), labels.join(",")), value);
    }
    let expected = [
        ("litebus_published_total{topic=jobs}", 3.0),
        ("litebus_duplicates_total{topic=jobs}", 1.0),
        ("litebus_delivered_total{group=workers,topic=jobs}", 4.0),
        ("litebus_redelivered_total{group=workers,topic=jobs}", 2.0),
        ("litebus_acked_total{group=workers,topic=jobs}", 1.0),
        ("litebus_nacked_total{group=workers,topic=jobs}", 3.0),
        ("litebus_dead_lettered_total{group=workers,topic=jobs}", 1.0),
        ("litebus_lease_lost_total{group=workers,topic=jobs}", 1.0),
        ("litebus_topic_messages{topic=jobs}", 3.0),
        ("litebus_ready{group=workers,topic=jobs}", 1.0),
        ("litebus_in_flight{group=workers,topic=jobs}", 0.0),
        ("litebus_behind{group=workers,topic=jobs}", 1.0),
        ("litebus_dead_lettered{group=workers,topic=jobs}", 1.0),
    ];
    for (name, value) in expected {
        assert_eq!(values.get(name), Some(&value), "{name} in {values:#?}");
    }
    assert!(values.contains_key("litebus_oldest_age_seconds{group=workers,topic=jobs}"));
}

/// Expands into a `#[test]` of [`check_telemetry`] on a fresh file of
/// one [`FileDriver`](crate::kit::FileDriver), which must also show the SQL
/// engine's span of each transaction.
#[macro_export]
macro_rules! telemetry_tests {
    ($driver:ty) => {
        #[test]
        fn spans_events_and_metrics() {
            use $crate::kit::FileDriver as _;
            let dir = $crate::kit::TempDir::new("telemetry");
            let path = dir.path().join("telemetry.db");
            let spans = $crate::kit::telemetry::check_telemetry(|| {
                <$driver>::block_on(async {
                    let driver = <$driver>::open(&path).await.unwrap();
                    let bus = litebus::Bus::open(driver, litebus::BusOptions::new()).unwrap();
                    $crate::kit::telemetry::a_day_of_work(&bus).await;
                    bus.close().await.unwrap();
                });
            });
            assert!(
                spans.iter().any(|s| s == "litebus.transaction"),
                "{spans:?}"
            );
        }
    };
}
