//! Bad input and the limits: clear errors that change nothing, limits
//! that hold from the first call, and rows written by plain SQL (I12).

use crate::prelude::*;

/// Bad topic names are `InvalidName` and create nothing.
pub async fn bad_topic_names<F: Factory>(f: &F) {
    let env = Env::new(f, "bad_topic").await;
    let long = "x".repeat(256);
    for bad in ["", "has space", "semi;colon", "é", long.as_str(), "nul\0"] {
        let err = env.bus.publish(bad, Message::new("x")).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidName {
                    kind: NameKind::Topic,
                    ..
                }
            ),
            "{bad:?}: {err}"
        );
        let err = env
            .bus
            .subscribe(bad, "g", GroupOptions::new())
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidName {
                kind: NameKind::Topic,
                ..
            }
        ));
        assert!(env.bus.listen(bad).is_err());
        assert!(env.bus.stats(bad).await.is_err());
    }
    let longest = "x".repeat(255);
    env.bus.publish(&longest, Message::new("x")).await.unwrap();
    assert_eq!(env.bus.stats(&longest).await.unwrap().messages, 1);
}

/// Bad group names and options are refused and create no group.
pub async fn bad_group_names_and_options<F: Factory>(f: &F) {
    let env = Env::new(f, "bad_group").await;
    let err = env
        .bus
        .subscribe("t", "bad group", GroupOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidName {
                kind: NameKind::Group,
                ..
            }
        ),
        "{err}"
    );
    for options in [
        GroupOptions::new().max_attempts(0),
        GroupOptions::new().prefetch(0),
        GroupOptions::new().lease(Duration::ZERO),
        shared(0),
        GroupOptions::new().dead_letter("t"),
        GroupOptions::new().dead_letter("bad topic"),
    ] {
        assert!(
            env.bus.subscribe("t", "g", options.clone()).await.is_err(),
            "{options:?}"
        );
    }
    assert!(env.bus.stats("t").await.unwrap().groups.is_empty());
}

/// The limit bounds the whole message (payload, id, key, metadata):
/// `MessageTooLarge` over it, stored and delivered at it.
pub async fn message_too_large<F: Factory>(f: &F) {
    let env = Env::new(f, "message_limit").await;
    let max = litebus::DEFAULT_MAX_MESSAGE_SIZE;
    let over = [
        Message::new(vec![1u8; max + 1]).with_id("p"),
        Message::new("x")
            .with_id("m")
            .with_metadata("big", "v".repeat(max)),
        Message::new(vec![1u8; max - 2]).with_id("k").with_key("kk"),
    ];
    for message in over {
        let size = message.size();
        let err = env.bus.publish("t", message).await.unwrap_err();
        assert!(
            matches!(err, Error::MessageTooLarge { size: s, max: m } if s == size && m == max),
            "{err}"
        );
    }
    // A generated id counts too.
    let err = env
        .bus
        .publish("t", Message::new(vec![1u8; max]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
    assert_eq!(env.bus.stats("t").await.unwrap().messages, 0);
    let at_limit = Message::new(vec![1u8; max - 10])
        .with_id("max")
        .with_key("k")
        .with_metadata("ab", "cdef");
    assert_eq!(at_limit.size(), max);
    env.bus.publish("t", at_limit.clone()).await.unwrap();
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    assert_eq!(recv(&sub).await.message(), &at_limit);
}

/// Positions and times are the same on every driver: a start after a seq
/// no store can give is refused, and a far `deliver_at` reads back as
/// [`Timestamp::MAX`].
pub async fn positions_and_times_have_one_range<F: Factory>(f: &F) {
    let env = Env::new(f, "one_range").await;
    let err = env
        .bus
        .subscribe(
            "t",
            "g",
            GroupOptions::new().start(Start::AfterSeq(u64::MAX)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions(_)), "{err}");
    let last = i64::MAX as u64;
    let late = env
        .sub(
            "t",
            "late",
            GroupOptions::new().start(Start::AfterSeq(last)),
        )
        .await;
    env.publish_n("t", 0, 1).await;
    none(&late).await;
    assert_eq!(group_stats(&env.bus, "t", "late").await.acked_floor, last);
    let far = Message::new("far")
        .with_id("far")
        .with_deliver_at(Timestamp::from_millis(u64::MAX));
    assert_eq!(far.deliver_at(), Some(Timestamp::MAX));
    env.bus.publish("u", far).await.unwrap();
    let sub = env.sub("u", "g", GroupOptions::new()).await;
    none(&sub).await;
    env.clock.set(Timestamp::MAX);
    let d = recv(&sub).await;
    assert_eq!(d.message().deliver_at(), Some(Timestamp::MAX));
    assert_eq!(d.lease_until(), Timestamp::MAX);
}

/// Bad ids, keys and metadata keys are `InvalidName` and store nothing.
pub async fn bad_ids_and_keys<F: Factory>(f: &F) {
    let env = Env::new(f, "bad_ids").await;
    let cases = [
        (
            Message::new("x").with_id("x".repeat(256)),
            NameKind::MessageId,
        ),
        (
            Message::new("x").with_id("line\nbreak"),
            NameKind::MessageId,
        ),
        (Message::new("x").with_key(""), NameKind::MessageKey),
        (
            Message::new("x").with_metadata("", "v"),
            NameKind::MetadataKey,
        ),
    ];
    for (message, kind) in cases {
        let err = env.bus.publish("t", message).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidName { kind: k, .. } if k == kind),
            "{err}"
        );
    }
    assert_eq!(env.bus.stats("t").await.unwrap().messages, 0);
    let ok = Message::new("x")
        .with_id("ünïcode id")
        .with_key("k")
        .with_metadata("a", "\n");
    env.bus.publish("t", ok.clone()).await.unwrap();
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    assert_eq!(recv(&sub).await.message(), &ok);
}

/// I12, I11: rows that plain SQL wrote with wrong types, text that is not
/// UTF-8 or metadata that is not a JSON object of strings are
/// dead-lettered with the reason as they are met, in every ordering mode,
/// and the group goes on at once to the good rows after them.
pub async fn i12_rows_written_by_sql_never_stop_a_group<F: Factory>(f: &F) {
    let env = Env::new(f, "i12_foreign_rows").await;
    // (columns, values) after `topic, id`. (Text that is not UTF-8 is
    // SQLite's; turso's `CAST(x'ff' AS TEXT)` is U+FFFD, which is text.)
    let bad_rows = [
        ("payload", "42"),
        ("payload", "1.5"),
        ("payload, deliver_at", "x'00', -1"),
        ("payload, deliver_at", "x'00', 'soon'"),
        ("payload, deliver_at", "x'00', 2.5"),
        ("payload, msg_key", "x'00', x'6b'"),
        ("payload, metadata", "x'00', CAST(x'ff' AS TEXT)"),
        ("payload, metadata", "x'00', '{not json'"),
        ("payload, metadata", "x'00', '{\"n\":1}'"),
        ("payload, metadata", "x'00', 7"),
        ("payload, priority", "x'00', 300"),
        ("payload, priority", "x'00', -2"),
        ("payload, priority", "x'00', 'high'"),
        ("payload, priority", "x'00', 1.5"),
    ];
    let modes = [
        ("ordered", GroupOptions::new()),
        ("per_key", GroupOptions::new().order(Order::PerKey)),
        ("shared", shared(4).prefetch(4)),
    ];
    for (name, options) in modes {
        let topic = format!("r.{name}");
        env.bus
            .publish(&topic, Message::new("before").with_id("before"))
            .await
            .unwrap();
        // A store with typed columns (PostgreSQL) refuses some of these
        // rows, and makes a message of others (2.5 stored as 3): what it
        // refuses is not stored, what reads as a message is delivered, and
        // the rest must be dead-lettered.
        let mut stored = 0;
        let rows = bad_rows.iter().enumerate().map(|(i, (columns, values))| {
            format!(
                "INSERT INTO litebus_messages (topic, id, {columns}) \
                 VALUES ('{topic}', 'bad-{i}', {values})"
            )
        });
        let foreign_id = format!(
            "INSERT INTO litebus_messages (topic, id, payload) VALUES ('{topic}', x'ff', x'00')"
        );
        for sql in rows.chain([foreign_id]) {
            match env.try_sql(&sql).await {
                None => return,
                Some(Ok(())) => stored += 1,
                Some(Err(_)) => {}
            }
        }
        assert!(
            stored > 3,
            "{name}: the store took only {stored} of the rows"
        );
        env.bus
            .publish(&topic, Message::new("after").with_id("after"))
            .await
            .unwrap();
        let records = env.bus.read(&topic, 0, 100).await.unwrap();
        let messages: Vec<String> = records
            .iter()
            .filter(|r| r.undecodable().is_none())
            .map(|r| String::from_utf8_lossy(r.message().payload()).into_owned())
            .collect();
        let undecodable = records.len() - messages.len();
        assert_eq!(records.len(), stored + 2, "{name}");
        assert!(
            undecodable > 3,
            "{name}: only {undecodable} rows do not decode"
        );
        assert_eq!(
            (messages.first(), messages.last()),
            (Some(&"before".to_owned()), Some(&"after".to_owned())),
            "{name}"
        );
        let sub = env.sub(&topic, "g", options).await;
        let mut received = receive_all(&sub, messages.len()).await;
        let mut messages = messages;
        if name == "shared" {
            // A row stored with a priority comes first.
            received.sort();
            messages.sort();
        }
        assert_eq!(received, messages, "{name}");
        none(&sub).await;
        let stats = group_stats(&env.bus, &topic, "g").await;
        assert_eq!(
            (stats.ready, stats.in_flight, stats.dead_lettered),
            (0, 0, undecodable as u64),
            "{name}"
        );
        let dlq = env
            .sub(&format!("{topic}.dlq"), "ops", shared(16).prefetch(16))
            .await;
        for _ in 0..undecodable {
            let letter = recv(&dlq).await;
            let error = &letter.message().metadata()[dead_letter_keys::ERROR];
            assert!(
                error.starts_with("undecodable message: "),
                "{name}: {error}"
            );
            letter.ack().await.unwrap();
        }
        none(&dlq).await;
    }
}

/// A group whose row plain SQL deleted under a live subscription is
/// `Error::UnknownGroup`, not a problem with the options or the data.
pub async fn a_group_deleted_by_sql_is_unknown<F: Factory>(f: &F) {
    let env = Env::new(f, "unknown_group").await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    env.publish_n("t", 0, 1).await;
    if env
        .sql("DELETE FROM litebus_groups WHERE topic = 't' AND grp = 'g'")
        .await
        .is_none()
    {
        return;
    }
    let err = sub.try_recv().await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownGroup { topic, group } if topic == "t" && group == "g"),
        "{err}"
    );
}

/// A trigger on the message table that inserts rows of its own (a copy of
/// each message to another topic) does not change the seqs a publish
/// reports: each names its own message, in a batch too.
pub async fn a_trigger_inserting_messages_leaves_the_seqs_right<F: Factory>(f: &F) {
    let env = Env::new(f, "trigger_copies").await;
    let trigger = match env.sql_dialect() {
        SqlDialect::Sqlite => {
            "CREATE TRIGGER litebus_test_copy AFTER INSERT ON litebus_messages
             WHEN NEW.topic = 't'
             BEGIN
               INSERT INTO litebus_messages (topic, id, payload)
               VALUES ('copies', NEW.id, NEW.payload);
             END"
        }
        SqlDialect::Postgres => {
            "CREATE FUNCTION litebus_test_copy() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO litebus_messages (topic, id, payload)
               VALUES ('copies', NEW.id, NEW.payload);
               RETURN NULL;
             END $$;
             CREATE TRIGGER litebus_test_copy AFTER INSERT ON litebus_messages
             FOR EACH ROW WHEN (NEW.topic = 't') EXECUTE FUNCTION litebus_test_copy()"
        }
    };
    if env.sql(trigger).await.is_none() {
        return;
    }
    let sub = env.sub("t", "g", GroupOptions::new().prefetch(10)).await;
    let mut published = Vec::new();
    for batch in [vec![msg("t", 0)], (1..4).map(|i| msg("t", i)).collect()] {
        let outcomes = env.bus.publish_batch("t", batch).await.unwrap();
        published.extend(outcomes.into_iter().map(Outcome::seq));
    }
    let mut delivered = Vec::new();
    for _ in 0..4 {
        let d = recv(&sub).await;
        delivered.push((d.seq(), text(&d)));
        d.ack().await.unwrap();
    }
    let expected: Vec<(u64, String)> = published.into_iter().zip(names("t", 0..4)).collect();
    assert_eq!(delivered, expected, "each publish names its own message");
    assert_eq!(env.bus.stats("copies").await.unwrap().messages, 4);
}

/// A row plain SQL wrote that is not a message is read with its reason,
/// between the messages around it, and a follow goes on past it (I12:
/// it never stops a reader either).
pub async fn a_foreign_row_that_does_not_decode_is_read_with_its_reason<F: Factory>(f: &F) {
    let env = Env::new(f, "read_foreign").await;
    env.publish_n("t", 0, 1).await;
    // A payload of the wrong type where the store takes one (SQLite), or
    // else metadata that is not JSON.
    let wrong_type = "INSERT INTO litebus_messages (topic, id, payload) VALUES ('t', 'bad', 42)";
    let not_json = "INSERT INTO litebus_messages (topic, id, payload, metadata) \
                    VALUES ('t', 'bad', x'00', '{not json')";
    match env.try_sql(wrong_type).await {
        None => return,
        Some(Ok(())) => {}
        Some(Err(_)) => env.sql(not_json).await.expect("plain SQL"),
    }
    env.publish_n("t", 1, 1).await;
    let records = env.bus.read("t", 1, 10).await.unwrap();
    let reasons: Vec<Option<&str>> = records.iter().map(Record::undecodable).collect();
    assert_eq!(records.len(), 3);
    assert_eq!((reasons[0], reasons[2]), (None, None));
    let why = reasons[1].expect("the foreign row's reason");
    assert!(why.starts_with("undecodable message: "), "{why}");
    assert_eq!(records[1].message().id(), "bad");

    let mut follow = env.bus.follow("t", 1).unwrap();
    let mut payloads = Vec::new();
    for _ in 0..3 {
        let record = within(follow.recv()).await.unwrap();
        payloads.push(record.undecodable().is_some());
    }
    assert_eq!(payloads, [false, true, false]);
}
