//! I8: dead letters taken back. A redrive sends a group's chosen dead
//! letters back to that group alone, as new; a purge gives them up. Each
//! is taken back once, atomically, and stays in its dead-letter topic.

use crate::prelude::*;

/// The ids of a group's dead letters, as listed.
async fn dead_ids(bus: &Bus, topic: &str, group: &str) -> Vec<String> {
    let listed = bus.dead_letters(topic, group, 1, 100).await.unwrap();
    listed.iter().map(|d| d.id().to_owned()).collect()
}

/// A per-key group `g` of `t` whose failures are dead letters at once.
async fn one_attempt_per_key<F: Factory>(env: &Env<'_, F>) -> Subscription {
    let options = GroupOptions::new().order(Order::PerKey).max_attempts(1);
    env.sub("t", "g", options).await
}

/// A shared group `g` of `t` (one attempt) whose three messages `t-0..2`
/// all died, and a group `other` that acked them.
async fn three_dead<F: Factory>(env: &Env<'_, F>) -> (Subscription, Subscription) {
    let g = env.sub("t", "g", shared(8).max_attempts(1)).await;
    let other = env.sub("t", "other", shared(8)).await;
    env.publish_n("t", 0, 3).await;
    for _ in 0..3 {
        recv(&g)
            .await
            .nack(NackOptions::new().with_reason("broken"))
            .await
            .unwrap();
        recv(&other).await.ack().await.unwrap();
    }
    (g, other)
}

/// A redrive sends the dead letters `select` chooses back to their group,
/// and to no other: each comes back once, as new (attempt 1), with its
/// id, payload and metadata (without the dead-letter entries); it leaves
/// the group's dead letters but stays in the dead-letter topic; the topic
/// gains no message and lists no new topic; a redriven message that dies
/// again is a dead letter again.
pub async fn a_redrive_sends_chosen_dead_letters_back_to_their_group_alone<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_chosen").await;
    let (g, other) = three_dead(&env).await;
    assert_eq!(dead_ids(&env.bus, "t", "g").await, ["t-0", "t-1", "t-2"]);
    let sent = env
        .bus
        .redrive("t", "g", |d| d.id() != "t-1")
        .await
        .unwrap();
    assert_eq!(sent, 2);
    assert_eq!(dead_ids(&env.bus, "t", "g").await, ["t-1"]);
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead_lettered),
        (2, 0, 3)
    );

    let first = recv(&g).await;
    assert_eq!((text(&first), first.message().id()), ("t-0".into(), "t-0"));
    assert_eq!(first.attempt(), 1);
    assert!(
        first
            .message()
            .metadata()
            .keys()
            .all(|k| !k.starts_with(dead_letter_keys::PREFIX)),
        "{:?}",
        first.message().metadata()
    );
    first.ack().await.unwrap();
    let second = recv(&g).await;
    assert_eq!(text(&second), "t-2");
    none(&g).await;
    none(&other).await;

    assert_eq!(env.bus.read("t", 1, 100).await.unwrap().len(), 3);
    assert_eq!(env.bus.read("t.dlq", 1, 100).await.unwrap().len(), 3);
    assert_eq!(env.bus.topics().await.unwrap(), ["t", "t.dlq"]);
    // Once back, not a dead letter to send back again.
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 1);
    assert_eq!(text(&recv(&g).await), "t-1");
    assert!(dead_ids(&env.bus, "t", "g").await.is_empty());

    // It dies again: a dead letter again.
    second
        .nack(NackOptions::new().with_reason("still broken"))
        .await
        .unwrap();
    let again = env.bus.dead_letters("t", "g", 1, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id(), again[0].error(), again[0].attempts()),
        ("t-2", "still broken", 1)
    );
    assert_eq!(env.bus.read("t.dlq", 1, 100).await.unwrap().len(), 4);
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead_lettered),
        (0, 1, 4)
    );
}

/// A redriven message of a per-key group comes after the messages of its
/// key published before the redrive, and before those published after;
/// other keys go on meanwhile.
pub async fn a_redriven_message_keeps_its_place_among_its_key<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_key").await;
    let g = one_attempt_per_key(&env).await;
    let keyed = |id: &str| Message::new(id).with_id(id).with_key("k");
    env.bus.publish("t", keyed("k1")).await.unwrap();
    recv(&g).await.nack(NackOptions::new()).await.unwrap();
    env.bus.publish("t", keyed("k2")).await.unwrap();
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 1);
    env.bus.publish("t", keyed("k3")).await.unwrap();
    env.bus
        .publish("t", Message::new("other").with_key("o"))
        .await
        .unwrap();
    let mut order = Vec::new();
    loop {
        let mut held = Vec::new();
        while let Some(d) = g.try_recv().await.unwrap() {
            held.push(d);
        }
        if held.is_empty() {
            break;
        }
        // One of key `k` at a time.
        let of_k = held
            .iter()
            .filter(|d| d.message().key() == Some("k"))
            .count();
        assert_eq!(of_k, 1, "{order:?}");
        for d in held {
            order.push(text(&d));
            d.ack().await.unwrap();
        }
    }
    let of_k: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|t| *t != "other")
        .collect();
    assert_eq!(of_k, ["k2", "k1", "k3"]);
    assert!(order.contains(&"other".to_owned()));
}

/// A purge gives chosen dead letters up: no longer listed, never sent back;
/// the dead-letter topic and its own group still have them.
pub async fn a_purge_gives_dead_letters_up<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_purge").await;
    let dlq = env.sub("t.dlq", "ops", shared(8)).await;
    let (g, _other) = three_dead(&env).await;
    let purged = env
        .bus
        .purge_dead_letters("t", "g", |d| d.id() == "t-1")
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(dead_ids(&env.bus, "t", "g").await, ["t-0", "t-2"]);
    assert_eq!(
        env.bus
            .purge_dead_letters("t", "g", |d| d.id() == "t-1")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        env.bus
            .purge_dead_letters("t", "g", |_| true)
            .await
            .unwrap(),
        2
    );
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 0);
    none(&g).await;
    assert!(dead_ids(&env.bus, "t", "g").await.is_empty());
    assert_eq!(env.bus.read("t.dlq", 1, 100).await.unwrap().len(), 3);
    for _ in 0..3 {
        recv(&dlq).await.ack().await.unwrap();
    }
}

/// A purge of an ordered group's dead letters gives them up and the
/// group goes on; an unknown group and bad names are refused.
pub async fn a_redrive_refuses_bad_input<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_refused").await;
    let g = env
        .sub("t", "g", GroupOptions::new().prefetch(1).max_attempts(1))
        .await;
    env.publish_n("t", 0, 2).await;
    recv(&g).await.nack(NackOptions::new()).await.unwrap();
    assert_eq!(dead_ids(&env.bus, "t", "g").await, ["t-0"]);
    assert_eq!(text(&recv(&g).await), "t-1");
    assert_eq!(
        env.bus
            .purge_dead_letters("t", "g", |_| true)
            .await
            .unwrap(),
        1
    );
    assert!(dead_ids(&env.bus, "t", "g").await.is_empty());
    assert!(matches!(
        env.bus.redrive("t", "nobody", |_| true).await,
        Err(Error::UnknownGroup { .. })
    ));
    assert!(matches!(
        env.bus.purge_dead_letters("t", "nobody", |_| true).await,
        Err(Error::UnknownGroup { .. })
    ));
    assert!(matches!(
        env.bus.redrive("bad topic", "g", |_| true).await,
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        env.bus.redrive("t", "", |_| true).await,
        Err(Error::InvalidName { .. })
    ));
}

/// Two buses of one store redrive the same dead letters at once: each is
/// sent back once in all, and the group gets each once.
pub async fn two_buses_redrive_each_dead_letter_once<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_twice").await;
    let g = env.sub("t", "g", shared(100).max_attempts(1)).await;
    env.publish_n("t", 0, 20).await;
    for _ in 0..20 {
        recv(&g).await.nack(NackOptions::new()).await.unwrap();
    }
    let other = env.another_bus().await;
    let (a, b) = futures_lite::future::zip(
        env.bus.redrive("t", "g", |_| true),
        other.redrive("t", "g", |_| true),
    )
    .await;
    assert_eq!(a.unwrap() + b.unwrap(), 20);
    let mut got = Vec::new();
    while let Some(d) = g.try_recv().await.unwrap() {
        got.push(text(&d));
        d.ack().await.unwrap();
    }
    got.sort_unstable();
    let mut want: Vec<String> = (0..20).map(|i| format!("t-{i}")).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert!(dead_ids(&env.bus, "t", "g").await.is_empty());
}

/// A redriven message is not a message of its topic: the topic's retention
/// does not let it go and the group does not count it as pruned; it goes
/// once acked, and a seek drops one not yet settled.
pub async fn a_redriven_message_outlives_its_topics_retention<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_retention").await;
    let (g, other) = three_dead(&env).await;
    env.bus
        .set_retention("t", Retention::new().max_messages(1))
        .await
        .unwrap();
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 3);
    env.publish_n("t", 3, 5).await;
    env.bus.prune("t").await.unwrap();
    assert_eq!(env.bus.read("t", 1, 100).await.unwrap().len(), 1);
    let mut got = Vec::new();
    while let Some(d) = g.try_recv().await.unwrap() {
        got.push(text(&d));
        d.ack().await.unwrap();
    }
    assert_eq!(got, ["t-0", "t-1", "t-2", "t-7"]);
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.ready, stats.in_flight, stats.pruned), (0, 0, 4));
    drop(other);

    // A seek drops what a redrive sent back and the group did not settle.
    for i in 8..10 {
        env.bus.publish("t", msg("t", i)).await.unwrap();
        recv(&g).await.nack(NackOptions::new()).await.unwrap();
    }
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 2);
    env.bus.seek("t", "g", Start::End).await.unwrap();
    none(&g).await;
    assert!(dead_ids(&env.bus, "t", "g").await.is_empty());
    // No row of a redriven message is left (SQL stores): the `INSERT`
    // copies one row per such row, and `schema_version` is taken.
    if let Some(left) = env
        .try_sql(
            "INSERT INTO litebus_meta (name, value)
             SELECT 'schema_version', 0 FROM litebus_messages WHERE topic LIKE '~%' LIMIT 1",
        )
        .await
    {
        left.expect("no row of a redriven message is left");
    }
}

/// A redriven message comes after the messages its group had not yet taken
/// in at the redrive (they were published before it: more than a claim
/// takes in at once), one at a time (prefetch 1) with none skipped, in
/// each ordering mode.
pub async fn a_redriven_message_comes_after_its_groups_backlog<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_backlog").await;
    for (name, options) in modes() {
        let topic = format!("t-{name}");
        let g = env.sub(&topic, "g", options.max_attempts(1)).await;
        env.publish_n(&topic, 0, 1).await;
        recv(&g).await.nack(NackOptions::new()).await.unwrap();
        let backlog = (1..=BACKLOG).map(|i| msg(&topic, i));
        env.bus.publish_batch(&topic, backlog).await.unwrap();
        assert_eq!(env.bus.redrive(&topic, "g", |_| true).await.unwrap(), 1);
        env.publish_n(&topic, BACKLOG + 1, 1).await;
        let mut got = Vec::new();
        while let Some(d) = g.try_recv().await.unwrap() {
            got.push(text(&d));
            d.ack().await.unwrap();
        }
        let order = (1..=BACKLOG).chain([0, BACKLOG + 1]);
        let want: Vec<String> = order.map(|i| format!("{topic}-{i}")).collect();
        assert_eq!(got, want, "{name}");
    }
}

/// More than a claim of one message takes in at once (256).
const BACKLOG: usize = 300;

/// A per-key group's counts see the messages of a key that wait behind a
/// redriven message of that key: `ready` counts them, and retention that
/// lets them go counts them as pruned.
pub async fn counts_see_what_waits_behind_a_redriven_message<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_counts").await;
    let g = one_attempt_per_key(&env).await;
    let keyed = |i: usize| msg("t", i).with_key("k");
    env.bus.publish("t", keyed(0)).await.unwrap();
    recv(&g).await.nack(NackOptions::new()).await.unwrap();
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 1);
    env.bus
        .publish_batch("t", [keyed(1), keyed(2)])
        .await
        .unwrap();
    let back = recv(&g).await;
    assert_eq!(text(&back), "t-0");
    none(&g).await;
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.ready, stats.in_flight, stats.pruned), (2, 1, 0));

    assert_eq!(keep_only_the_last(&env.bus, "t").await, (1, 1, 1));
    back.ack().await.unwrap();
    assert_eq!(text(&recv(&g).await), "t-2");
}

/// An ordered group delivers a redriven message in its place: after the
/// messages published before the redrive (those its consumer had read
/// ahead among them), before those published after, once, as new. A
/// consumer waiting caught up gets a redriven message before one published
/// while it waits: no hand-off passes it by.
pub async fn an_ordered_group_takes_a_redriven_message_in_its_place<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_ordered").await;
    let options = GroupOptions::new().prefetch(4).max_attempts(1);
    let g = env.sub("t", "g", options).await;
    env.publish_n("t", 0, 3).await;
    recv(&g).await.nack(NackOptions::new()).await.unwrap();
    // t-1 out, t-2 read ahead.
    let held = recv(&g).await;
    assert_eq!(text(&held), "t-1");
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 1);
    env.publish_n("t", 3, 1).await;
    held.ack().await.unwrap();
    let mut got = Vec::new();
    while let Some(d) = g.try_recv().await.unwrap() {
        got.push((text(&d), d.attempt()));
        d.ack().await.unwrap();
    }
    let want = [("t-2", 1), ("t-0", 1), ("t-3", 1)].map(|(t, a)| (t.to_owned(), a));
    assert_eq!(got, want);
    assert!(dead_ids(&env.bus, "t", "g").await.is_empty());
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead_lettered),
        (0, 0, 1)
    );

    env.publish_n("t", 4, 1).await;
    recv(&g).await.nack(NackOptions::new()).await.unwrap();
    let mut waiting = Box::pin(g.recv());
    for _ in 0..3 {
        assert!(future::poll_once(&mut waiting).await.is_none());
        env.bus.stats("t").await.unwrap();
    }
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 1);
    env.publish_n("t", 5, 1).await;
    let first = within(waiting).await.unwrap();
    assert_eq!((text(&first), first.attempt()), ("t-4".to_owned(), 1));
    first.ack().await.unwrap();
    assert_eq!(text(&recv(&g).await), "t-5");
}

/// An ordered group's redriven message outlives the topic's retention as
/// a shared group's does, in its place: retention that lets go of the
/// messages before and after it counts them as pruned and leaves it
/// deliverable, and leaves it with the consumer that holds it.
pub async fn an_ordered_groups_redriven_message_outlives_retention<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_ordered_retention").await;
    let options = GroupOptions::new().prefetch(1).max_attempts(1);
    let g = env.sub("t", "g", options).await;
    env.publish_n("t", 0, 1).await;
    recv(&g).await.nack(NackOptions::new()).await.unwrap();
    env.publish_n("t", 1, 1).await;
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 1);
    env.publish_n("t", 2, 3).await;
    assert_eq!(keep_only_the_last(&env.bus, "t").await, (2, 0, 3));
    assert_eq!(env.bus.read("t", 0, 100).await.unwrap().len(), 1);

    let back = recv(&g).await;
    assert_eq!((text(&back), back.attempt()), ("t-0".to_owned(), 1));
    // Retention passes it while it is out: t-4 goes, the delivery stays.
    env.publish_n("t", 5, 1).await;
    env.bus.prune("t").await.unwrap();
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.ready, stats.in_flight, stats.pruned), (1, 1, 4));
    back.ack().await.unwrap();
    assert_eq!(text(&recv(&g).await), "t-5");
    none(&g).await;
}

/// A dead letter taken back by a group whose position is at or past it
/// (its last message; a seek past the topic's end, to the seq the
/// redriven message gets or beyond) is delivered, though the group has
/// passed its place (the redrive asked for it), once, in every mode: its
/// ack settles it, it does not come again, and the messages the seek
/// passed over stay passed over, those published after the redrive too.
pub async fn a_redrive_behind_a_groups_position_delivers_once<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_behind").await;
    for (name, options) in modes() {
        for seek in [None, Some(1), Some(10)] {
            let topic = format!("p.{name}.{}", seek.unwrap_or(0));
            let at = format!("{name}, seek {seek:?}");
            let g = env.sub(&topic, "g", options.clone().max_attempts(1)).await;
            env.publish_n(&topic, 0, 3).await;
            let dead = if seek.is_some() {
                recv(&g).await.nack(NackOptions::new()).await.unwrap();
                for _ in 1..3 {
                    recv(&g).await.ack().await.unwrap();
                }
                0
            } else {
                for _ in 0..2 {
                    recv(&g).await.ack().await.unwrap();
                }
                recv(&g).await.nack(NackOptions::new()).await.unwrap();
                2
            };
            if let Some(past) = seek {
                // The store's last seq now, on any topic: the redrive's
                // message comes after it.
                let other = format!("{topic}.other");
                let last = env.bus.publish(&other, msg(&other, 0)).await.unwrap().seq();
                env.bus
                    .seek(&topic, "g", Start::AfterSeq(last + past))
                    .await
                    .unwrap();
            }
            assert_eq!(
                env.bus.redrive(&topic, "g", |_| true).await.unwrap(),
                1,
                "{at}"
            );
            if seek == Some(10) {
                // Within the seek: passed over, after the redriven message
                // is settled too.
                env.publish_n(&topic, 3, 1).await;
            }
            let back = recv(&g).await;
            assert_eq!(
                (text(&back), back.attempt()),
                (format!("{topic}-{dead}"), 1),
                "{at}"
            );
            back.ack().await.unwrap();
            none(&g).await;
            let stats = group_stats(&env.bus, &topic, "g").await;
            assert_eq!((stats.ready, stats.in_flight), (0, 0), "{at}");
        }
    }
}

/// A redriven message whose row no longer decodes (plain SQL broke it) is
/// dead-lettered with a reason, also when it is behind an ordered group's
/// position (a seek past the topic's end), once, and the group goes on.
pub async fn an_undecodable_redriven_message_behind_a_seek_goes<F: Factory>(f: &F) {
    let env = Env::new(f, "redrive_undecodable").await;
    let options = GroupOptions::new().prefetch(1).max_attempts(1);
    let g = env.sub("t", "g", options).await;
    env.publish_n("t", 0, 1).await;
    recv(&g).await.nack(NackOptions::new()).await.unwrap();
    let last = env.bus.publish("m", msg("m", 0)).await.unwrap().seq();
    env.bus
        .seek("t", "g", Start::AfterSeq(last + 10))
        .await
        .unwrap();
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 1);
    let broken = "UPDATE litebus_messages SET metadata = '{not json'
                  WHERE topic LIKE '~redriven/%'";
    if env.sql(broken).await.is_none() {
        return;
    }
    none(&g).await;
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead_lettered),
        (0, 0, 2)
    );
    // The group goes on: past its position, the next message comes.
    let seqs = env.publish_n("t", 1, 12).await;
    let next = recv(&g).await;
    assert!(next.seq() > last + 10 && seqs.contains(&next.seq()));
}
