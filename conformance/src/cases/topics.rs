//! Topic administration: `bus.delete_topic` (its messages, groups,
//! retention and remembered ids, in steps, with a tombstone that refuses
//! what would bring it back) and `bus.create_topic` (which lifts it).

use litebus::driver::{DeleteTopic, Driver};

use crate::prelude::*;

fn is_deleted<T: std::fmt::Debug>(result: &Result<T>, topic: &str) -> bool {
    matches!(result, Err(Error::TopicDeleted { topic: t }) if t == topic)
}

/// Deleting a topic deletes its messages, its groups in every mode (a
/// consumer waiting in one wakes with `UnknownGroup`, a delivery out is
/// no longer current) and its retention; from then on, on this bus and on
/// another of the store, publishing, subscribing, naming it as a
/// dead-letter topic and setting its retention are `TopicDeleted`, and
/// nothing of it shows. Other topics keep everything.
pub async fn delete_topic_deletes_it_and_leaves_a_tombstone<F: Factory>(f: &F) {
    let env = Env::new(f, "delete_topic").await;
    let other = env.another_bus().await;
    for (name, options) in modes() {
        let topic = format!("gone.{name}");
        env.bus
            .set_retention(&topic, Retention::new().max_messages(100))
            .await
            .unwrap();
        for i in 0..4 {
            let m = msg(&topic, i).with_key(format!("k{}", i % 2));
            env.bus.publish(&topic, m).await.unwrap();
        }
        let kept_topic = format!("kept.{name}");
        env.publish_n(&kept_topic, 0, 2).await;
        let kept = env.sub(&kept_topic, "g", GroupOptions::new()).await;
        let sub = env.sub(&topic, "g", options.clone()).await;
        let waiting = env.sub(&topic, "g", options.clone()).await;
        let out = recv(&sub).await;
        let delete = env.bus.delete_topic(&topic);
        deleted_under_consumers(&sub, &waiting, out, delete, name).await;

        for bus in [&env.bus, &other] {
            assert!(bus.read(&topic, 0, 10).await.unwrap().is_empty(), "{name}");
            let stats = bus.stats(&topic).await.unwrap();
            assert_eq!((stats.messages, stats.groups.len()), (0, 0), "{name}");
            assert_eq!(stats.retention, Retention::new(), "{name}");
            assert!(!bus.topics().await.unwrap().contains(&topic), "{name}");
            let publish = bus.publish(&topic, msg(&topic, 9)).await;
            assert!(is_deleted(&publish, &topic), "{name}: {publish:?}");
            let batch = bus.publish_batch(&topic, vec![msg(&topic, 9)]).await;
            assert!(is_deleted(&batch, &topic), "{name}: {batch:?}");
            let expecting = bus
                .publish_batch_expecting(&topic, 0, vec![msg(&topic, 9)])
                .await;
            assert!(is_deleted(&expecting, &topic), "{name}: {expecting:?}");
            let subscribe = bus.subscribe(&topic, "new", options.clone()).await;
            assert!(is_deleted(&subscribe, &topic), "{name}");
            let naming = bus
                .subscribe(
                    "elsewhere",
                    &format!("g.{name}"),
                    GroupOptions::new().dead_letter(&topic),
                )
                .await;
            assert!(is_deleted(&naming, &topic), "{name}");
            let retention = bus.set_retention(&topic, Retention::new()).await;
            assert!(is_deleted(&retention, &topic), "{name}: {retention:?}");
            assert!(bus.read(&topic, 0, 10).await.unwrap().is_empty(), "{name}");
        }
        assert!(!env.bus.delete_topic(&topic).await.unwrap(), "{name}");

        // The other topic kept its messages and its group.
        assert_eq!(env.bus.read(&kept_topic, 0, 10).await.unwrap().len(), 2);
        assert_eq!(recv(&kept).await.attempt(), 1);
        drop((sub, waiting, kept));
    }
}

/// `create_topic` lifts a deletion: the topic is empty and usable again,
/// its old ids publish as new messages (the dedupe forgot them), with seqs
/// after every seq it had, and a group from the beginning sees only what
/// came after. A topic that was never deleted is left as it was.
pub async fn create_topic_lifts_the_tombstone<F: Factory>(f: &F) {
    let env = Env::new(f, "create_topic").await;
    env.bus
        .set_retention(
            "t",
            Retention::new().dedupe_window(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let old = env.publish_n("t", 0, 3).await;
    assert!(env.bus.delete_topic("t").await.unwrap());
    assert!(env.bus.create_topic("t").await.unwrap());
    assert!(!env.bus.create_topic("t").await.unwrap());

    let again = env.bus.publish("t", msg("t", 0)).await.unwrap();
    assert!(!again.is_duplicate());
    assert!(again.seq() > old[2]);
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let first = recv(&sub).await;
    assert_eq!((first.seq(), text(&first)), (again.seq(), "t-0".to_owned()));
    none(&sub).await;
    let stats = env.bus.stats("t").await.unwrap();
    assert_eq!((stats.messages, stats.last_seq), (1, again.seq()));

    // Never deleted: nothing changes.
    env.publish_n("live", 0, 2).await;
    assert!(!env.bus.create_topic("live").await.unwrap());
    assert_eq!(env.bus.read("live", 0, 10).await.unwrap().len(), 2);
}

/// A topic a group of another topic dead-letters into is not deleted
/// (`TopicInUse`, naming the group), and nothing of it changes; once that
/// group is gone it is.
pub async fn a_dead_letter_topic_in_use_is_not_deleted<F: Factory>(f: &F) {
    let env = Env::new(f, "dead_letter_in_use").await;
    let sub = env
        .sub("jobs", "workers", GroupOptions::new().max_attempts(1))
        .await;
    env.publish_n("jobs", 0, 1).await;
    recv(&sub).await.nack(NackOptions::new()).await.unwrap();
    let dlq = group_stats(&env.bus, "jobs", "workers")
        .await
        .settings
        .dead_letter;
    assert_eq!(env.bus.read(&dlq, 0, 10).await.unwrap().len(), 1);

    let refused = env.bus.delete_topic(&dlq).await;
    assert!(
        matches!(&refused, Err(Error::TopicInUse { topic, by_topic, by_group })
            if *topic == dlq && by_topic == "jobs" && by_group == "workers"),
        "{refused:?}"
    );
    assert_eq!(env.bus.read(&dlq, 0, 10).await.unwrap().len(), 1);
    env.bus.publish(&dlq, msg(&dlq, 1)).await.unwrap();

    drop(sub);
    assert!(env.bus.delete_group("jobs", "workers").await.unwrap());
    assert!(env.bus.delete_topic(&dlq).await.unwrap());
    assert!(env.bus.read(&dlq, 0, 10).await.unwrap().is_empty());
}

/// A topic of more messages than one step deletes goes in steps, all of
/// it. A deletion that stopped after its first step (a dropped call, a
/// crash) leaves the topic deleted with the rest of its messages:
/// publishing is still refused, and `create_topic` deletes the rest
/// before it lifts the tombstone, so none of them comes back.
pub async fn a_large_topic_is_deleted_in_steps<F: Factory>(f: &F) {
    let env = Env::new(f, "delete_steps").await;
    let many = PRUNE_BATCH as usize * 2 + 3;
    let batch: Vec<Message> = (0..many).map(|i| msg("big", i)).collect();
    env.bus.publish_batch("big", batch).await.unwrap();
    assert!(env.bus.delete_topic("big").await.unwrap());
    assert!(env.bus.read("big", 0, 10).await.unwrap().is_empty());
    assert_eq!(env.bus.stats("big").await.unwrap().messages, 0);

    env.publish_n("cut", 0, 5).await;
    let driver = env.driver().await;
    let step = DeleteTopic {
        topic: "cut",
        limit: 2,
        lift: false,
    };
    let first = driver.delete_topic(step).await.unwrap();
    assert!(!first.was_deleted);
    assert!(first.messages >= 2, "{first:?}");
    let publish = env.bus.publish("cut", msg("cut", 9)).await;
    assert!(is_deleted(&publish, "cut"), "{publish:?}");
    assert!(env.bus.create_topic("cut").await.unwrap());
    assert!(env.bus.read("cut", 0, 10).await.unwrap().is_empty());
    env.bus.publish("cut", msg("cut", 0)).await.unwrap();
    assert_eq!(env.bus.read("cut", 0, 10).await.unwrap().len(), 1);
}

/// Plain SQL cannot write a message of a deleted topic either: the store
/// refuses the `INSERT`, and nothing is stored.
pub async fn plain_sql_cannot_publish_to_a_deleted_topic<F: Factory>(f: &F) {
    let env = Env::new(f, "delete_sql").await;
    env.publish_n("t", 0, 1).await;
    assert!(env.bus.delete_topic("t").await.unwrap());
    let insert = "INSERT INTO litebus_messages (topic, id, payload, published_at) \
                  VALUES ('t', 'plain', X'00', 0)";
    let Some(refused) = env.try_sql(insert).await else {
        return;
    };
    assert!(
        refused.is_err(),
        "a plain INSERT into a deleted topic was stored"
    );
    assert!(env.bus.read("t", 0, 10).await.unwrap().is_empty());
    env.bus.create_topic("t").await.unwrap();
    env.sql(insert).await.unwrap();
    assert_eq!(env.bus.read("t", 0, 10).await.unwrap().len(), 1);
}
