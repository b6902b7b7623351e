//! Audit chains: an audited topic's publishes and settlements, each a row
//! chained by hash to the one before, one chain however many buses append,
//! and a verify that names the first row changed, removed or put in.

use litebus::audit::{HASH, PREV, audit_topic};

use crate::prelude::*;

/// The rows of the audit chain of `topic`: seq and payload.
async fn chain(bus: &Bus, topic: &str) -> Vec<(u64, String)> {
    bus.read(&audit_topic(topic), 1, 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let payload = String::from_utf8(r.message().payload().to_vec()).unwrap();
            (r.seq(), payload)
        })
        .collect()
}

/// The value of field `name` of a row's JSON (a string's, unquoted).
fn field<'a>(row: &'a str, name: &str) -> &'a str {
    let start = row.find(&format!("\"{name}\":")).expect(name) + name.len() + 3;
    let rest = &row[start..];
    match rest.strip_prefix('"') {
        Some(text) => &text[..text.find('"').unwrap()],
        None => &rest[..rest.find([',', '}']).unwrap()],
    }
}

/// Every publish to an audited topic (not a duplicate), and every ack,
/// nack and dead letter of its groups, is a row of its chain, in order,
/// numbered from 1; the chain verifies; a topic not audited, and a bus
/// that audits nothing, append no row.
pub async fn an_audited_topic_chains_its_publishes_and_settlements<F: Factory>(f: &F) {
    let env = Env::new(f, "audit_chain").await;
    let bus = env.bus_with(BusOptions::new().audit("orders")).await;
    let options = GroupOptions::new().max_attempts(2).lease(LEASE);
    let sub = bus.subscribe("orders", "billing", options).await.unwrap();
    bus.publish("orders", msg("orders", 0)).await.unwrap();
    let again = bus.publish("orders", msg("orders", 0)).await.unwrap();
    assert!(again.is_duplicate());
    bus.publish("orders", msg("orders", 1)).await.unwrap();
    bus.publish("other", msg("other", 0)).await.unwrap();
    recv(&sub).await.ack().await.unwrap();
    for _ in 0..2 {
        let d = recv(&sub).await;
        d.nack(NackOptions::new().with_reason("no stock"))
            .await
            .unwrap();
    }

    let rows = chain(&bus, "orders").await;
    let events: Vec<&str> = rows.iter().map(|(_, r)| field(r, "event")).collect();
    assert_eq!(
        events,
        ["publish", "publish", "ack", "nack", "nack", "dead_letter"]
    );
    let numbers: Vec<&str> = rows.iter().map(|(_, r)| field(r, "n")).collect();
    assert_eq!(numbers, ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(field(&rows[0].1, "id"), "orders-0");
    assert_eq!(field(&rows[2].1, "group"), "billing");
    assert_eq!(
        (field(&rows[4].1, "attempt"), field(&rows[4].1, "reason")),
        ("2", "no stock")
    );
    assert_eq!(field(&rows[5].1, "dead_letter_topic"), "orders.dlq");
    assert_eq!(field(&rows[5].1, "seq"), field(&rows[1].1, "seq"));

    let report = bus.verify_audit("orders").await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, 6);
    assert_eq!((report.first_seq, report.last_seq), (rows[0].0, rows[5].0));
    let last = bus
        .read(&audit_topic("orders"), rows[5].0, 1)
        .await
        .unwrap();
    assert_eq!(
        report.last_hash.as_deref(),
        last[0].message().metadata().get(HASH).map(String::as_str)
    );

    assert!(chain(&bus, "other").await.is_empty());
    env.bus.publish("orders", msg("orders", 2)).await.unwrap();
    assert_eq!(chain(&bus, "orders").await.len(), 6);
    let none = bus.verify_audit("nothing").await.unwrap();
    assert_eq!((none.rows, none.first_seq, none.is_intact()), (0, 0, true));
}

/// Two buses on one store that audit a topic extend one chain, whoever
/// appends first, at once too, and many publishes at once through each
/// (which share appends): every publish has its row, numbered without
/// gaps, and the chain verifies.
pub async fn two_buses_on_one_store_extend_one_chain<F: Factory>(f: &F) {
    let env = Env::new(f, "audit_two_buses").await;
    let first = env.bus_with(BusOptions::new().audit("orders")).await;
    let second = env.bus_with(BusOptions::new().audit("orders")).await;
    for i in 0..6 {
        let bus = if i % 2 == 0 { &first } else { &second };
        bus.publish("orders", msg("orders", i)).await.unwrap();
    }
    let (one, two) = futures_lite::future::zip(
        first.publish("orders", msg("orders", 6)),
        second.publish("orders", msg("orders", 7)),
    )
    .await;
    one.unwrap();
    two.unwrap();
    let at_once: Vec<BoxFuture<'_, Result<Outcome>>> = (8..40)
        .map(|i| {
            let bus = if i % 2 == 0 { &first } else { &second };
            Box::pin(bus.publish("orders", msg("orders", i))) as BoxFuture<'_, _>
        })
        .collect();
    for outcome in join_all(at_once).await {
        outcome.unwrap();
    }
    let rows = chain(&first, "orders").await;
    let numbers: Vec<String> = rows.iter().map(|(_, r)| field(r, "n").to_owned()).collect();
    let expected: Vec<String> = (1..=40).map(|n| n.to_string()).collect();
    assert_eq!(numbers, expected);
    let mut ids: Vec<&str> = rows.iter().map(|(_, r)| field(r, "id")).collect();
    ids.sort_unstable();
    let mut published: Vec<String> = (0..40).map(|i| format!("orders-{i}")).collect();
    published.sort_unstable();
    assert_eq!(ids, published);
    assert!(second.verify_audit("orders").await.unwrap().is_intact());
}

/// A row put into a chain by hand, a row changed and a row removed (the
/// last two by plain SQL, where the store has it) each break the chain
/// at that row, or, for a removed one, at the row after it; the rows
/// before it verify.
pub async fn a_row_put_in_changed_or_removed_breaks_the_chain_there<F: Factory>(f: &F) {
    let env = Env::new(f, "audit_tamper").await;
    let bus = env.bus_with(BusOptions::new().audit("orders")).await;
    for i in 0..3 {
        bus.publish("orders", msg("orders", i)).await.unwrap();
    }
    let rows = chain(&bus, "orders").await;

    let zeros = "0".repeat(64);
    let forged = Message::new(r#"{"n":4,"event":"publish","topic":"orders"}"#)
        .with_metadata(PREV, zeros.as_str())
        .with_metadata(HASH, zeros.as_str());
    let put_in = env
        .bus
        .publish(&audit_topic("orders"), forged)
        .await
        .unwrap()
        .seq();
    let report = bus.verify_audit("orders").await.unwrap();
    let broken = report.broken.expect("a forged row");
    assert_eq!(broken.seq, put_in);
    assert!(broken.reason.contains("changed"), "{}", broken.reason);
    assert_eq!(report.rows, 3);

    let changed = format!(
        "UPDATE litebus_messages SET payload = CAST('{{\"n\":2,\"event\":\"ack\"}}' AS BLOB) \
         WHERE seq = {}",
        rows[1].0
    );
    if env.sql(&changed).await.is_none() {
        return;
    }
    let broken = bus.verify_audit("orders").await.unwrap().broken.unwrap();
    assert_eq!(broken.seq, rows[1].0);
    assert!(broken.reason.contains("changed"), "{}", broken.reason);

    env.sql(&format!(
        "DELETE FROM litebus_messages WHERE seq = {}",
        rows[1].0
    ))
    .await
    .unwrap();
    let report = bus.verify_audit("orders").await.unwrap();
    let broken = report.broken.unwrap();
    assert_eq!((broken.seq, report.rows), (rows[2].0, 1));
    assert!(broken.reason.contains("removed"), "{}", broken.reason);
}

/// An audited topic that is not a topic name, an audit chain, or a name
/// whose chain's would be too long: the bus does not open, and nothing is
/// stored.
pub async fn audit_refuses_bad_topics<F: Factory>(f: &F) {
    let env = Env::new(f, "audit_bad").await;
    let long = "t".repeat(250);
    for (topic, name_error) in [
        ("bad topic!", true),
        ("litebus.audit.orders", false),
        (long.as_str(), false),
    ] {
        let options = BusOptions::new().audit(topic).clock(env.clock.clone());
        match Bus::open(env.driver().await, options) {
            Err(Error::InvalidName { .. }) if name_error => {}
            Err(Error::InvalidOptions(_)) if !name_error => {}
            other => panic!("{topic}: {other:?}"),
        }
    }
    assert!(env.bus.topics().await.unwrap().is_empty());
}
