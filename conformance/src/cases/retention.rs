//! Retention: each rule of `Retention` (until consumed, max age, max
//! messages, max bytes) and their sum, what a group that fell behind
//! loses and sees, pruning in bounded steps and by publishes on their own.

use litebus::driver::{Driver, Prune};

use crate::prelude::*;

/// The payloads `bus.read` gives for `topic` from its start.
async fn kept<F: Factory>(env: &Env<'_, F>, topic: &str) -> Vec<String> {
    env.bus
        .read(topic, 0, 10_000)
        .await
        .expect("read")
        .iter()
        .map(|r| String::from_utf8_lossy(r.message().payload()).into_owned())
        .collect()
}

/// The default keeps every message, consumed or not, and says so.
pub async fn a_topic_keeps_everything_by_default<F: Factory>(f: &F) {
    let env = Env::new(f, "keep-all").await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    env.publish_n("t", 0, 3).await;
    receive_all(&sub, 3).await;
    assert_eq!(env.bus.prune("t").await.unwrap(), 0);
    assert_eq!(kept(&env, "t").await, names("t", 0..3));
    let stats = env.bus.stats("t").await.unwrap();
    assert_eq!(stats.retention, Retention::new());
    assert!(stats.retention.keeps_everything());
    assert_eq!(stats.groups[0].pruned, 0);
}

/// `max_messages` keeps the newest; a group that had consumed nothing
/// counts what it lost and goes on with what is kept, in every mode; a
/// group created later from the beginning starts at the oldest kept.
pub async fn max_messages_keeps_the_newest_and_a_lagging_group_counts_its_loss<F: Factory>(f: &F) {
    let env = Env::new(f, "max-messages").await;
    for (name, options) in modes() {
        let topic = format!("m.{name}");
        let sub = env.sub(&topic, "g", options.clone()).await;
        env.bus
            .set_retention(&topic, Retention::new().max_messages(3))
            .await
            .unwrap();
        env.publish_n(&topic, 0, 10).await;
        assert_eq!(env.bus.prune(&topic).await.unwrap(), 7, "{name}");
        assert_eq!(kept(&env, &topic).await, names(&topic, 7..10), "{name}");
        let stats = env.bus.stats(&topic).await.unwrap();
        assert_eq!(stats.messages, 3, "{name}");
        assert_eq!(stats.retention.get_max_messages(), Some(3), "{name}");
        let g = &stats.groups[0];
        assert_eq!((g.pruned, g.ready), (7, 3), "{name}");

        let mut got = receive_all(&sub, 3).await;
        got.sort();
        assert_eq!(got, names(&topic, 7..10), "{name}");
        none(&sub).await;
        let late = env.sub(&topic, "late", options.clone()).await;
        let mut got = receive_all(&late, 3).await;
        got.sort();
        assert_eq!(got, names(&topic, 7..10), "{name}: late group");
        assert_eq!(group_stats(&env.bus, &topic, "late").await.pruned, 0);
    }
}

/// `until_consumed` lets a message go once every group has settled it and
/// everything before it: a group that acked out of order holds back what
/// follows its first unsettled message; a dead letter counts as settled.
pub async fn until_consumed_waits_for_every_group<F: Factory>(f: &F) {
    let env = Env::new(f, "until-consumed").await;
    let fast = env.sub("t", "fast", GroupOptions::new()).await;
    let slow = env
        .sub("t", "slow", shared(8).prefetch(8).max_attempts(1))
        .await;
    env.bus
        .set_retention("t", Retention::new().until_consumed())
        .await
        .unwrap();
    env.publish_n("t", 0, 5).await;
    receive_all(&fast, 5).await;
    assert_eq!(
        env.bus.prune("t").await.unwrap(),
        0,
        "slow has acked nothing"
    );

    let mut held: Vec<Delivery> = Vec::new();
    for _ in 0..5 {
        held.push(recv(&slow).await);
    }
    held.sort_by_key(Delivery::seq);
    // Acks 0, 1 and 3; 2 is still out.
    for i in [0, 1, 3] {
        held[i].ack().await.unwrap();
    }
    assert_eq!(env.bus.prune("t").await.unwrap(), 2);
    assert_eq!(kept(&env, "t").await, names("t", 2..5));
    held[2]
        .nack(NackOptions::new().with_reason("no"))
        .await
        .unwrap();
    assert_eq!(env.bus.prune("t").await.unwrap(), 2, "2 dead, 3 acked");
    held[4].ack().await.unwrap();
    assert_eq!(env.bus.prune("t").await.unwrap(), 1);
    let stats = env.bus.stats("t").await.unwrap();
    assert_eq!(stats.messages, 0);
    assert!(stats.groups.iter().all(|g| g.pruned == 0), "{stats:?}");
    // Its dead letter stays where it went.
    assert_eq!(env.bus.stats("t.dlq").await.unwrap().messages, 1);
}

/// Under `until_consumed` alone a topic without groups keeps nothing, and
/// a group made later from the beginning sees only what came after. Its
/// last seq does not go back: an expected append and stats see the last
/// message that went.
pub async fn until_consumed_without_groups_keeps_nothing<F: Factory>(f: &F) {
    let env = Env::new(f, "until-consumed-none").await;
    env.bus
        .set_retention("t", Retention::new().until_consumed())
        .await
        .unwrap();
    let last = *env.publish_n("t", 0, 4).await.last().unwrap();
    assert_eq!(env.bus.prune("t").await.unwrap(), 4);
    let stats = env.bus.stats("t").await.unwrap();
    assert_eq!((stats.last_seq, stats.messages), (last, 0));
    assert!(matches!(
        env.bus.publish_batch_expecting("t", 0, [msg("t", 9)]).await,
        Err(Error::Conflict { actual, .. }) if actual == last
    ));
    let sub = env
        .sub("t", "g", GroupOptions::new().start(Start::Beginning))
        .await;
    none(&sub).await;
    env.publish_n("t", 4, 1).await;
    assert_eq!(receive_all(&sub, 1).await, names("t", 4..5));
}

/// `max_age` counts from each message's publish, on the bus clock.
pub async fn max_age_lets_messages_go_at_their_age<F: Factory>(f: &F) {
    let env = Env::new(f, "max-age").await;
    env.bus
        .set_retention("t", Retention::new().max_age(Duration::from_secs(60)))
        .await
        .unwrap();
    env.publish_n("t", 0, 3).await;
    env.advance(Duration::from_secs(30));
    env.publish_n("t", 3, 2).await;
    env.advance(Duration::from_millis(29_999));
    assert_eq!(env.bus.prune("t").await.unwrap(), 0, "59.999 s old");
    env.advance(Duration::from_millis(1));
    assert_eq!(env.bus.prune("t").await.unwrap(), 3, "60 s old");
    assert_eq!(kept(&env, "t").await, names("t", 3..5));
    env.advance(Duration::from_secs(30));
    assert_eq!(env.bus.prune("t").await.unwrap(), 2);
    assert_eq!(env.bus.stats("t").await.unwrap().messages, 0);
}

/// `max_bytes` keeps the newest messages whose payloads fit.
pub async fn max_bytes_keeps_the_newest_payload_bytes<F: Factory>(f: &F) {
    let env = Env::new(f, "max-bytes").await;
    env.bus
        .set_retention("t", Retention::new().max_bytes(25))
        .await
        .unwrap();
    for i in 0..5 {
        let m = Message::new(format!("{i}").repeat(10));
        env.bus.publish("t", m).await.unwrap();
    }
    assert_eq!(env.bus.prune("t").await.unwrap(), 3);
    assert_eq!(kept(&env, "t").await, ["3".repeat(10), "4".repeat(10)]);
    env.bus.publish("t", Message::new("12345")).await.unwrap();
    assert_eq!(env.bus.prune("t").await.unwrap(), 0, "25 bytes fit");
    env.bus.publish("t", Message::new("1")).await.unwrap();
    assert_eq!(env.bus.prune("t").await.unwrap(), 1, "26 do not");
}

/// Rules combine: a message goes once any of them lets it go. Changing
/// the retention replaces it.
pub async fn retention_rules_combine_and_can_be_replaced<F: Factory>(f: &F) {
    let env = Env::new(f, "combine").await;
    let _sub = env.sub("t", "g", GroupOptions::new()).await;
    let both = Retention::new().until_consumed().max_messages(2);
    env.bus.set_retention("t", both).await.unwrap();
    env.publish_n("t", 0, 5).await;
    assert_eq!(env.bus.prune("t").await.unwrap(), 3, "max_messages");
    assert_eq!(env.bus.stats("t").await.unwrap().retention, both);
    env.bus.set_retention("t", Retention::new()).await.unwrap();
    env.publish_n("t", 5, 3).await;
    assert_eq!(env.bus.prune("t").await.unwrap(), 0);
    assert_eq!(kept(&env, "t").await, names("t", 3..8));
    assert_eq!(group_stats(&env.bus, "t", "g").await.pruned, 3);
}

/// A delivery whose message was let go of is no longer current, in every
/// mode; the consumer goes on with what is kept, each as a first attempt
/// (per key: each key's first kept message is its head).
pub async fn a_delivery_of_a_pruned_message_is_lease_lost<F: Factory>(f: &F) {
    let env = Env::new(f, "pruned-lease").await;
    for (name, options) in modes() {
        let topic = format!("p.{name}");
        let sub = env.sub(&topic, "g", options).await;
        for i in 0..5 {
            let m = msg(&topic, i).with_key(format!("k{}", i % 2));
            env.bus.publish(&topic, m).await.unwrap();
        }
        let out = recv(&sub).await;
        assert_eq!(text(&out), format!("{topic}-0"), "{name}");
        env.bus
            .set_retention(&topic, Retention::new().max_messages(2))
            .await
            .unwrap();
        assert_eq!(env.bus.prune(&topic).await.unwrap(), 3, "{name}");
        assert!(
            matches!(out.ack().await, Err(Error::LeaseLost)),
            "{name}: its message is gone"
        );
        let mut got = Vec::new();
        for _ in 0..2 {
            let d = recv(&sub).await;
            got.push((text(&d), d.attempt()));
            d.ack().await.unwrap();
        }
        got.sort();
        let want: Vec<(String, u32)> = names(&topic, 3..5).into_iter().map(|n| (n, 1)).collect();
        assert_eq!(got, want, "{name}");
        none(&sub).await;
        let g = group_stats(&env.bus, &topic, "g").await;
        assert_eq!((g.pruned, g.ready, g.in_flight), (3, 0, 0), "{name}");
    }
}

/// One prune step lets go of at most its limit, oldest first; the bus's
/// `prune` takes as many steps as it needs.
pub async fn pruning_goes_in_bounded_steps<F: Factory>(f: &F) {
    let env = Env::new(f, "steps").await;
    let total = PRUNE_BATCH as usize * 2 + 500;
    let batch: Vec<Message> = (0..total).map(|i| msg("t", i)).collect();
    env.bus.publish_batch("t", batch).await.unwrap();
    env.bus
        .set_retention("t", Retention::new().max_messages(10))
        .await
        .unwrap();
    let driver = env.driver().await;
    let step = Prune {
        topic: "t",
        now: env.bus.clock().now(),
        limit: 100,
    };
    assert_eq!(driver.prune(step).await.unwrap(), 100);
    assert_eq!(kept(&env, "t").await[0], "t-100");
    let rest = (total - 110) as u64;
    assert_eq!(env.bus.prune("t").await.unwrap(), rest);
    assert_eq!(kept(&env, "t").await, names("t", total - 10..total));
}

/// Publishes prune on their own, every `prune_every` messages, so a topic
/// that is only ever published to stays near its bound.
pub async fn publishes_prune_on_their_own<F: Factory>(f: &F) {
    let env = Env::new(f, "auto-prune").await;
    env.bus
        .set_retention("t", Retention::new().max_messages(10))
        .await
        .unwrap();
    env.publish_n("t", 0, 300).await;
    let messages = env.bus.stats("t").await.unwrap().messages;
    // The default prunes every 64 messages.
    assert!((10..=10 + 64).contains(&messages), "{messages} kept");
}

/// Acks prune on their own too: a work queue under `until_consumed`
/// stays small while it is consumed.
pub async fn acks_prune_on_their_own<F: Factory>(f: &F) {
    let env = Env::new(f, "ack-prune").await;
    let sub = env.sub("t", "g", shared(16).prefetch(16)).await;
    env.bus
        .set_retention("t", Retention::new().until_consumed())
        .await
        .unwrap();
    for round in 0..10 {
        env.publish_n("t", round * 30, 30).await;
        receive_all(&sub, 30).await;
    }
    let messages = env.bus.stats("t").await.unwrap().messages;
    assert!(messages <= 64, "{messages} kept of 300 consumed");
}

/// The dedupe window is the message's retention: once a message is gone,
/// its id may be published again, as a new message.
pub async fn an_id_can_be_published_again_once_its_message_is_gone<F: Factory>(f: &F) {
    let env = Env::new(f, "id-again").await;
    env.bus
        .set_retention("t", Retention::new().max_messages(1))
        .await
        .unwrap();
    let first = env.bus.publish("t", msg("t", 0)).await.unwrap();
    assert!(
        env.bus
            .publish("t", msg("t", 0))
            .await
            .unwrap()
            .is_duplicate()
    );
    env.publish_n("t", 1, 1).await;
    assert_eq!(env.bus.prune("t").await.unwrap(), 1);
    let again = env.bus.publish("t", msg("t", 0)).await.unwrap();
    assert!(!again.is_duplicate());
    assert!(again.seq() > first.seq());
}

/// A rule of 0 and a bad topic name are refused and change nothing.
pub async fn bad_retention_is_refused<F: Factory>(f: &F) {
    let env = Env::new(f, "bad-retention").await;
    for bad in [
        Retention::new().max_messages(0),
        Retention::new().max_bytes(0),
        Retention::new().max_age(Duration::ZERO),
        Retention::new().until_consumed().max_messages(u64::MAX),
    ] {
        assert!(
            matches!(
                env.bus.set_retention("t", bad).await,
                Err(Error::InvalidOptions(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        env.bus
            .set_retention("", Retention::new().max_messages(1))
            .await,
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        env.bus.prune("a b").await,
        Err(Error::InvalidName { .. })
    ));
    env.publish_n("t", 0, 2).await;
    assert_eq!(env.bus.prune("t").await.unwrap(), 0);
    assert_eq!(
        env.bus.stats("t").await.unwrap().retention,
        Retention::new()
    );
}

/// Retention is stored with the topic: another bus of the store, and the
/// store reopened, follow it.
pub async fn retention_is_stored_with_the_topic<F: Factory>(f: &F) {
    let mut env = Env::new(f, "stored").await;
    let rule = Retention::new()
        .max_messages(2)
        .max_age(Duration::from_secs(5));
    env.bus.set_retention("t", rule).await.unwrap();
    let other = env.another_bus().await;
    assert_eq!(other.stats("t").await.unwrap().retention, rule);
    env.publish_n("t", 0, 4).await;
    assert_eq!(other.prune("t").await.unwrap(), 2);
    other.close().await.unwrap();
    env.reopen().await;
    assert_eq!(env.bus.stats("t").await.unwrap().retention, rule);
    env.advance(Duration::from_secs(5));
    assert_eq!(env.bus.prune("t").await.unwrap(), 2);
}

/// With a dedupe window, the id of a message that went is remembered
/// until the window after its publish: a publish of it, alone, in a batch
/// or as an expected append, is a duplicate of the original; after the
/// window it is a new message.
pub async fn a_dedupe_window_remembers_the_ids_of_messages_that_went<F: Factory>(f: &F) {
    let env = Env::new(f, "dedupe-window").await;
    let window = Duration::from_secs(60);
    env.bus
        .set_retention("t", Retention::new().max_messages(1).dedupe_window(window))
        .await
        .unwrap();
    let first = env.bus.publish("t", msg("t", 0)).await.unwrap().seq();
    env.advance(Duration::from_secs(10));
    let last = env.publish_n("t", 1, 1).await[0];
    assert_eq!(env.bus.prune("t").await.unwrap(), 1);
    assert_eq!(kept(&env, "t").await, names("t", 1..2));

    let again = env.bus.publish("t", msg("t", 0)).await.unwrap();
    assert_eq!(again, Outcome::Duplicate { seq: first }, "alone");
    let batch = env
        .bus
        .publish_batch("t", [msg("t", 0), msg("t", 2)])
        .await
        .unwrap();
    assert_eq!(batch[0], Outcome::Duplicate { seq: first }, "in a batch");
    let expected = env
        .bus
        .publish_batch_expecting("t", batch[1].seq(), [msg("t", 0)])
        .await
        .unwrap();
    assert_eq!(expected[0], Outcome::Duplicate { seq: first }, "expecting");
    assert!(last < batch[1].seq());

    env.advance(Duration::from_secs(50));
    env.bus.prune("t").await.unwrap();
    let new = env.bus.publish("t", msg("t", 0)).await.unwrap();
    assert!(!new.is_duplicate(), "the window has passed");
    assert!(new.seq() > batch[1].seq());
}

/// A dedupe window of 0 is refused.
pub async fn a_dedupe_window_of_zero_is_refused<F: Factory>(f: &F) {
    let env = Env::new(f, "dedupe-window-zero").await;
    let zero = Retention::new().dedupe_window(Duration::ZERO);
    assert!(matches!(
        env.bus.set_retention("t", zero).await,
        Err(Error::InvalidOptions(_))
    ));
}
