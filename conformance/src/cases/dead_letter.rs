//! I8: after its last attempt a message moves to its dead-letter topic,
//! in one place, always, under an id that fits.

use crate::prelude::*;

/// I8: after `max_attempts` nacks the message moves to `<topic>.dlq` with its
/// last error and attempt count, and the ordered group moves on.
pub async fn i8_dead_letter_after_nacks<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_nacks").await;
    env.publish_n("t", 0, 2).await;
    let sub = env.sub("t", "g", GroupOptions::new().max_attempts(2)).await;
    let dlq = env.sub("t.dlq", "ops", GroupOptions::new()).await;
    for _ in 0..2 {
        recv(&sub)
            .await
            .nack(NackOptions::new().with_reason("bad input"))
            .await
            .unwrap();
    }
    let next = recv(&sub).await;
    assert_eq!((next.seq(), next.attempt()), (2, 1));
    let dead = recv(&dlq).await;
    let meta = dead.message().metadata();
    assert_eq!(text(&dead), "t-0");
    assert_eq!(meta[dead_letter_keys::ERROR], "bad input");
    assert_eq!(meta[dead_letter_keys::ATTEMPTS], "2");
    assert_eq!(meta[dead_letter_keys::TOPIC], "t");
    assert_eq!(meta[dead_letter_keys::GROUP], "g");
    assert_eq!(meta[dead_letter_keys::SEQ], "1");
    assert_eq!(meta[dead_letter_keys::ID], "t-0");
    assert_eq!(group_stats(&env.bus, "t", "g").await.dead_lettered, 1);
}

/// I8: a final attempt whose lease expires is dead-lettered at the next claim.
pub async fn i8_dead_letter_after_lease_expiry<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_expiry").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new().max_attempts(2)).await;
    let _first = recv(&sub).await;
    env.advance(LEASE);
    assert_eq!(some(&sub).await.attempt(), 2);
    env.advance(LEASE);
    none(&sub).await;
    let dead = env.bus.stats("t.dlq").await.unwrap();
    assert_eq!(dead.messages, 1);
    let dlq = env.sub("t.dlq", "ops", GroupOptions::new()).await;
    let d = recv(&dlq).await;
    assert_eq!(
        d.message().metadata()[dead_letter_keys::ERROR],
        litebus::driver::LEASE_EXPIRED
    );
}

/// I8: a dead letter is in exactly one place: gone from its group, present once
/// in the chosen dead-letter topic, heard by its listeners.
pub async fn i8_dead_letter_is_in_one_place<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_one_place").await;
    env.publish_n("t", 0, 3).await;
    let mut hear = env.bus.listen("graveyard").unwrap();
    let sub = env
        .sub(
            "t",
            "g",
            shared(5)
                .prefetch(1)
                .max_attempts(1)
                .dead_letter("graveyard"),
        )
        .await;
    let d = recv(&sub).await;
    d.nack(NackOptions::new()).await.unwrap();
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead_lettered),
        (2, 0, 1)
    );
    assert_eq!(env.bus.stats("graveyard").await.unwrap().messages, 1);
    assert_eq!(env.bus.stats("t.dlq").await.unwrap().messages, 0);
    let Some(Ok(Live::Message { message, .. })) = hear.try_recv() else {
        panic!("the dead letter was not heard");
    };
    assert_eq!(message.payload(), d.message().payload());
    let mut rest = BTreeSet::new();
    for _ in 0..2 {
        let d = recv(&sub).await;
        rest.insert(d.seq());
        d.ack().await.unwrap();
    }
    assert!(!rest.contains(&d.seq()));
    none(&sub).await;
    assert_eq!(group_stats(&env.bus, "t", "g").await.acked_floor, 3);
}

/// I8/I9: the dead letters of two groups of one topic do not collide.
pub async fn i8_dead_letters_of_two_groups<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_two_groups").await;
    env.publish_n("t", 0, 1).await;
    for group in ["g1", "g2"] {
        let sub = env
            .sub("t", group, GroupOptions::new().max_attempts(1))
            .await;
        recv(&sub).await.nack(NackOptions::new()).await.unwrap();
    }
    assert_eq!(env.bus.stats("t.dlq").await.unwrap().messages, 2);
}

/// I8: a consumer that goes away holding a final attempt dead-letters it.
pub async fn i8_release_of_final_attempt<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_release").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new().max_attempts(1)).await;
    let _held = recv(&sub).await;
    sub.close().await.unwrap();
    assert_eq!(env.bus.stats("t.dlq").await.unwrap().messages, 1);
    assert_eq!(group_stats(&env.bus, "t", "g").await.dead_lettered, 1);
}

/// I8, I12: a dead letter always lands, even when its dead-letter topic
/// already holds a message with the id it would take (anyone may publish
/// any id there): by nack, by an expired final lease and by release.
pub async fn i8_dead_letter_lands_whatever_ids_its_topic_holds<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_taken_id").await;
    let seqs = env.publish_n("t", 0, 3).await;
    for seq in &seqs {
        let forged = Message::new("forged").with_id(format!("t/g/{seq}"));
        assert!(
            !env.bus
                .publish("t.dlq", forged)
                .await
                .unwrap()
                .is_duplicate()
        );
    }
    let sub = env
        .sub("t", "g", shared(3).prefetch(1).max_attempts(1))
        .await;
    recv(&sub)
        .await
        .nack(NackOptions::new().with_reason("nacked"))
        .await
        .unwrap();
    let _expires = recv(&sub).await;
    env.advance(LEASE);
    let _released = some(&sub).await;
    sub.close().await.unwrap();
    assert_eq!(group_stats(&env.bus, "t", "g").await.dead_lettered, 3);
    assert_eq!(env.bus.stats("t.dlq").await.unwrap().messages, 6);
    let dlq = env.sub("t.dlq", "ops", GroupOptions::new()).await;
    let got = receive_all(&dlq, 6).await;
    assert_eq!(&got[..3], ["forged"; 3]);
    let mut letters = got[3..].to_vec();
    letters.sort();
    assert_eq!(letters, names("t", 0..3));
    none(&dlq).await;
}

/// Names at their longest work from the first call to the last: a 255-byte
/// topic and group subscribe with the default dead-letter topic, their dead
/// letters get ids that are valid ids (and publish again as they are), and
/// the dead-letter topic can itself be subscribed with default options.
pub async fn longest_names_work_end_to_end<F: Factory>(f: &F) {
    let env = Env::new(f, "longest_names").await;
    let topic = "t".repeat(litebus::MAX_NAME_LEN);
    let group = "g".repeat(litebus::MAX_NAME_LEN);
    env.bus
        .publish(&topic, Message::new("long").with_id("m"))
        .await
        .unwrap();
    let sub = env
        .sub(&topic, &group, GroupOptions::new().max_attempts(1))
        .await;
    recv(&sub).await.nack(NackOptions::new()).await.unwrap();
    let dead_letters = litebus::driver::default_dead_letter_topic(&topic);
    assert!(dead_letters.len() <= litebus::MAX_NAME_LEN);
    let dlq = env
        .sub(&dead_letters, &group, GroupOptions::new().max_attempts(1))
        .await;
    let letter = recv(&dlq).await;
    assert_eq!(letter.message().metadata()[dead_letter_keys::ID], "m");
    let id = letter.message().id().to_owned();
    assert!(id.len() <= litebus::MAX_NAME_LEN, "{} bytes", id.len());
    let again = Message::new(letter.message().payload().to_vec()).with_id(id.clone());
    let outcome = env.bus.publish(&topic, again).await.unwrap();
    assert!(!outcome.is_duplicate());
    // The dead letter's own dead letter fits as well.
    letter.nack(NackOptions::new()).await.unwrap();
    let deeper = litebus::driver::default_dead_letter_topic(&dead_letters);
    assert_eq!(env.bus.stats(&deeper).await.unwrap().messages, 1);
}

/// I8: `dead_letters` lists one group's dead letters from its dead-letter
/// topic, in order, with where each came from, its attempts and last error
/// (a nack's reason, `nacked`, `lease expired`); it passes over the topic's
/// other messages (another group's dead letters, hundreds published there
/// by hand, across pages), goes in pages by the dead-letter topic's seqs,
/// reads a group's own dead-letter topic, and refuses bad input.
pub async fn dead_letters_list_a_groups_own_with_attempts_and_error<F: Factory>(f: &F) {
    let env = Env::new(f, "dead_letters_list").await;
    let by_hand = (0..300)
        .map(|i| Message::new(format!("by hand {i}")).with_metadata(dead_letter_keys::TOPIC, "t"));
    env.bus.publish_batch("t.dlq", by_hand).await.unwrap();
    let seqs = env.publish_n("t", 0, 3).await;
    let g1 = env
        .sub("t", "g1", GroupOptions::new().max_attempts(2))
        .await;
    let g2 = env
        .sub("t", "g2", GroupOptions::new().max_attempts(1))
        .await;
    let g3 = env
        .sub(
            "t",
            "g3",
            GroupOptions::new().max_attempts(1).dead_letter("graveyard"),
        )
        .await;
    for reason in ["bad input", "still bad"] {
        let d = recv(&g1).await;
        assert_eq!(text(&d), "t-0");
        d.nack(NackOptions::new().with_reason(reason))
            .await
            .unwrap();
    }
    recv(&g1).await.ack().await.unwrap();
    recv(&g1).await.nack(NackOptions::new()).await.unwrap();
    assert_eq!(recv(&g1).await.attempt(), 2);
    env.advance(LEASE);
    none(&g1).await;
    recv(&g2).await.nack(NackOptions::new()).await.unwrap();
    let d = recv(&g3).await;
    d.nack(NackOptions::new().with_reason("x")).await.unwrap();

    let listed = env.bus.dead_letters("t", "g1", 1, 10).await.unwrap();
    let seen: Vec<(&str, u64, &str, u32, &str, &str)> = listed
        .iter()
        .map(|d| {
            (
                d.id(),
                d.seq(),
                d.error(),
                d.attempts(),
                d.topic(),
                d.group(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("t-0", seqs[0], "still bad", 2, "t", "g1"),
            ("t-2", seqs[2], litebus::driver::LEASE_EXPIRED, 2, "t", "g1"),
        ]
    );
    assert_eq!(listed[0].record().message().payload(), b"t-0");
    assert!(listed[0].record().seq() > 300);
    assert!(listed[0].record().seq() < listed[1].record().seq());

    let other = env.bus.dead_letters("t", "g2", 1, 10).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(
        (other[0].id(), other[0].attempts(), other[0].error()),
        ("t-0", 1, litebus::driver::NACKED)
    );
    let own = env.bus.dead_letters("t", "g3", 1, 10).await.unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!((own[0].seq(), own[0].error()), (seqs[0], "x"));
    let graveyard = env.bus.read("graveyard", 1, 10).await.unwrap();
    assert_eq!(own[0].record().seq(), graveyard[0].seq());

    let first = env.bus.dead_letters("t", "g1", 1, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let next = first[0].record().seq() + 1;
    let second = env.bus.dead_letters("t", "g1", next, 1).await.unwrap();
    assert_eq!(second[0].id(), "t-2");
    let after = second[0].record().seq() + 1;
    assert!(
        env.bus
            .dead_letters("t", "g1", after, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        env.bus
            .dead_letters("t", "g1", 1, 0)
            .await
            .unwrap()
            .is_empty()
    );

    assert!(matches!(
        env.bus.dead_letters("t", "nobody", 1, 10).await,
        Err(Error::UnknownGroup { .. })
    ));
    assert!(matches!(
        env.bus.dead_letters("", "g1", 1, 10).await,
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        env.bus.dead_letters("t", "g1", u64::MAX, 10).await,
        Err(Error::InvalidOptions(_))
    ));
}

/// With unlimited attempts a message that keeps failing — by nacks, by
/// expired leases, in every ordering mode — is delivered again each time
/// and never dead-lettered; the setting is stored as `u32::MAX` attempts,
/// so a subscription asking for a limit is refused and one asking for
/// `max_attempts(u32::MAX)` joins.
pub async fn unlimited_attempts_never_dead_letter<F: Factory>(f: &F) {
    let env = Env::new(f, "unlimited_attempts").await;
    env.publish_n("t", 0, 1).await;
    for (group, order) in ORDERS {
        let options = GroupOptions::new().order(order).unlimited_attempts();
        let sub = env.sub("t", group, options.clone()).await;
        for attempt in 1..=40 {
            let d = recv(&sub).await;
            assert_eq!((text(&d), d.attempt()), ("t-0".to_owned(), attempt));
            if attempt % 4 == 0 {
                drop(d);
                env.advance(LEASE);
            } else {
                d.nack(NackOptions::new().with_reason("still broken"))
                    .await
                    .unwrap();
            }
        }
        let stats = group_stats(&env.bus, "t", group).await;
        assert_eq!((stats.dead_lettered, stats.acked_floor), (0, 0));
        let limited = options.clone().max_attempts(5).lease(LEASE);
        let refused = env.bus.subscribe("t", group, limited).await.unwrap_err();
        assert!(matches!(refused, Error::InvalidOptions(_)), "{refused:?}");
        let same = options.max_attempts(u32::MAX);
        let joined = env.sub("t", group, same).await;
        drop(sub);
        env.advance(LEASE);
        let d = recv(&joined).await;
        assert_eq!(d.attempt(), 41);
        d.ack().await.unwrap();
    }
    assert_eq!(env.bus.stats("t.dlq").await.unwrap().messages, 0);
}
