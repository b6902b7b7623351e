//! What users read: error kinds, their predicates and messages, error
//! sources, and the `Debug` output of the public types.

use std::error::Error as _;
use std::time::Duration;

use futures_lite::StreamExt;
use futures_lite::future::block_on;
use litebus::{
    Bus, BusOptions, Clock, DriverError, Error, GroupOptions, Live, ManualClock, MemoryDriver,
    Message, NameKind, Timestamp,
};

#[test]
fn each_error_kind_answers_its_predicates() {
    let kinds = [
        Error::Closed,
        Error::LeaseLost,
        Error::InvalidOptions("x".into()),
        Error::MessageTooLarge { size: 2, max: 1 },
        Error::Conflict {
            expected: 1,
            actual: 2,
        },
        Error::Corrupt("x".into()),
        DriverError::retryable("busy").into(),
        DriverError::fatal("disk").into(),
        Error::UnknownGroup {
            topic: "t".into(),
            group: "g".into(),
        },
        Error::Internal("x".into()),
    ];
    let closed: Vec<bool> = kinds.iter().map(Error::is_closed).collect();
    let lost: Vec<bool> = kinds.iter().map(Error::is_lease_lost).collect();
    let retry: Vec<bool> = kinds.iter().map(Error::is_retryable).collect();
    let only = |i: usize| (0..kinds.len()).map(|k| k == i).collect::<Vec<bool>>();
    assert_eq!(closed, only(0));
    assert_eq!(lost, only(1));
    assert_eq!(retry, only(6));
}

#[test]
fn error_messages_say_what_happened() {
    let cases: Vec<(Error, &str)> = vec![
        (Error::Closed, "the bus is closed"),
        (Error::LeaseLost, "the lease is no longer current"),
        (
            Error::MessageTooLarge { size: 20, max: 10 },
            "message of 20 bytes exceeds the limit of 10 bytes",
        ),
        (
            Error::InvalidOptions("lease".into()),
            "invalid options: lease",
        ),
        (
            Error::Conflict {
                expected: 3,
                actual: 5,
            },
            "expected last seq 3, found 5",
        ),
        (Error::Corrupt("row 7".into()), "corrupt stored data: row 7"),
        (
            Error::UnknownGroup {
                topic: "t".into(),
                group: "g".into(),
            },
            "group \"g\" does not exist on topic \"t\"",
        ),
        (
            Error::Internal("x".into()),
            "internal error (a bug: please report it): x",
        ),
        (
            DriverError::fatal("disk full").into(),
            "storage error: disk full",
        ),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
    }
    let e = block_on(async {
        let bus = Bus::open(MemoryDriver::new(), BusOptions::new()).unwrap();
        bus.subscribe("t", "no space", GroupOptions::new())
            .await
            .unwrap_err()
    });
    assert_eq!(
        e.to_string(),
        "invalid group \"no space\": only A-Z, a-z, 0-9 and . _ : / - are allowed"
    );
    let kinds = [
        NameKind::Topic,
        NameKind::Group,
        NameKind::MessageId,
        NameKind::MessageKey,
        NameKind::MetadataKey,
    ];
    let names: Vec<String> = kinds.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "topic",
            "group",
            "message id",
            "message key",
            "metadata key"
        ]
    );
}

#[test]
fn driver_errors_keep_their_source() {
    let io = std::io::Error::other("the engine's own error");
    let e: Error = DriverError::fatal("write failed").with_source(io).into();
    let source = e.source().expect("driver error as source");
    assert_eq!(source.to_string(), "write failed");
    assert_eq!(
        source.source().expect("engine error").to_string(),
        "the engine's own error"
    );
    assert!(Error::Closed.source().is_none());
}

#[test]
fn long_names_are_cut_on_a_character_boundary() {
    let long = "€".repeat(100);
    let e = block_on(async {
        let bus = Bus::open(MemoryDriver::new(), BusOptions::new()).unwrap();
        bus.publish(&long, Message::new("x")).await.unwrap_err()
    });
    let Error::InvalidName { name, .. } = e else {
        panic!("expected InvalidName");
    };
    assert_eq!(name, "€".repeat(21));
}

#[test]
fn ids_keys_and_metadata_keys_may_be_255_bytes() {
    block_on(async {
        let bus = Bus::open(MemoryDriver::new(), BusOptions::new()).unwrap();
        let longest = "k".repeat(255);
        let m = Message::new("x")
            .with_id(longest.clone())
            .with_key(longest.clone())
            .with_metadata(longest.clone(), "v");
        assert!(bus.publish("t", m).await.is_ok());
        let too_long = Message::new("x").with_key("k".repeat(256));
        assert!(bus.publish("t", too_long).await.is_err());
    });
}

#[test]
fn debug_output_shows_what_matters() {
    let short = Message::new("hello")
        .with_id("m1")
        .with_key("k")
        .with_metadata("a", "b");
    assert_eq!(
        format!("{short:?}"),
        r#"Message { id: "m1", payload: "hello", metadata: {"a": "b"}, key: "k" }"#
    );
    let long = Message::new(vec![b'x'; 65]).with_deliver_at(Timestamp::from_millis(5));
    assert_eq!(
        format!("{long:?}"),
        r#"Message { id: "", payload_len: 65, deliver_at: 5ms }"#
    );
    assert_eq!(
        format!("{:?}", Message::new(vec![0xff])),
        r#"Message { id: "", payload_len: 1 }"#
    );
    assert_eq!(long.into_payload(), vec![b'x'; 65]);

    let bus = Bus::open(MemoryDriver::new(), BusOptions::new()).unwrap();
    let text = format!("{bus:?}");
    assert!(
        text.starts_with("Bus {") && text.contains("closed: false"),
        "{text}"
    );
    let listener = bus.listen("t").unwrap();
    assert!(format!("{listener:?}").contains("capacity: 1024"));
    let options = format!("{:?}", BusOptions::new());
    assert!(
        options.starts_with("BusOptions {") && options.contains("max_message_size"),
        "{options}"
    );
}

#[test]
fn a_subscription_names_its_topic_and_group() {
    futures_lite::future::block_on(async {
        let bus = Bus::open(MemoryDriver::new(), BusOptions::new()).unwrap();
        // The shortest lease allowed.
        let sub = bus
            .subscribe(
                "orders",
                "billing",
                GroupOptions::new().lease(Duration::from_millis(1)),
            )
            .await
            .unwrap();
        assert_eq!((sub.topic(), sub.group()), ("orders", "billing"));
        assert!(!sub.consumer_id().is_empty());
        // Closing after the bus closed says so.
        bus.close().await.unwrap();
        assert!(matches!(sub.close().await, Err(litebus::Error::Closed)));
    });
}

#[test]
fn timestamps_measure_and_print() {
    let a = Timestamp::from_millis(1_500);
    let b = Timestamp::from_millis(1_000);
    assert_eq!(a.saturating_duration_since(b), Duration::from_millis(500));
    assert_eq!(b.saturating_duration_since(a), Duration::ZERO);
    assert_eq!(format!("{a:?}"), "1500ms");
}

#[test]
fn sleepers_with_the_same_deadline_all_wake() {
    let clock = ManualClock::new(Timestamp::from_millis(0));
    let first = clock.sleep(Duration::from_millis(10));
    let second = clock.sleep(Duration::from_millis(10));
    let both = futures_lite::future::zip(first, second);
    let mut both = Box::pin(both);
    assert!(block_on(futures_lite::future::poll_once(&mut both)).is_none());
    assert_eq!(clock.sleepers(), 2);
    clock.advance(Duration::from_millis(10));
    assert!(block_on(futures_lite::future::poll_once(&mut both)).is_some());
}

#[test]
fn a_listener_stream_ends_when_the_bus_closes() {
    block_on(async {
        let bus = Bus::open(MemoryDriver::new(), BusOptions::new()).unwrap();
        let mut live = bus.listen("t").unwrap();
        bus.publish("t", Message::new("x")).await.unwrap();
        assert!(matches!(
            live.next().await,
            Some(Live::Message { seq: 1, .. })
        ));
        bus.close().await.unwrap();
        assert!(live.next().await.is_none());
    });
}
