//! Priorities: a shared group hands out a higher priority first, in seq
//! order within one; ordered and per-key groups keep seq order.

use crate::prelude::*;

/// Message `i` of `topic` ([`msg`]) at priority `p`.
fn at(topic: &str, i: usize, p: u8) -> Message {
    msg(topic, i).with_priority(p)
}

/// A shared group, one message at a time.
fn one_at_a_time() -> GroupOptions {
    shared(8).prefetch(1)
}

/// The texts of everything `sub` gets until nothing is deliverable, each
/// acked.
async fn drain(sub: &Subscription) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(d) = sub.try_recv().await.unwrap() {
        got.push(text(&d));
        d.ack().await.unwrap();
    }
    got
}

/// A shared group hands out the highest priority first and seq order
/// within a priority, behind a backlog longer than a claim takes in at
/// once too; its counts see each message once; a message it acked never
/// comes back.
pub async fn a_shared_group_hands_out_higher_priority_first<F: Factory>(f: &F) {
    let env = Env::new(f, "priority_shared").await;
    let g = env.sub("t", "g", one_at_a_time()).await;
    env.publish_n("t", 0, 3).await;
    let prioritized = [at("t", 3, 5), at("t", 4, 9), at("t", 5, 5), at("t", 6, 0)];
    env.bus.publish_batch("t", prioritized).await.unwrap();
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.ready, stats.in_flight), (7, 0));
    let first = recv(&g).await;
    assert_eq!(
        (text(&first), first.message().priority()),
        ("t-4".into(), 9)
    );
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.ready, stats.in_flight), (6, 1));
    first.ack().await.unwrap();
    let want = ["t-3", "t-5", "t-0", "t-1", "t-2", "t-6"];
    assert_eq!(drain(&g).await, want);

    // Behind a backlog: the prioritized message first, then the backlog
    // in order, each once.
    let backlog = (10..10 + BACKLOG).map(|i| msg("t", i));
    env.bus.publish_batch("t", backlog).await.unwrap();
    env.bus.publish("t", at("t", 999, 1)).await.unwrap();
    let urgent = recv(&g).await;
    assert_eq!(text(&urgent), "t-999");
    urgent.ack().await.unwrap();
    let got = drain(&g).await;
    assert_eq!(got.len(), BACKLOG);
    assert_eq!(got, names("t", 10..10 + BACKLOG));
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
}

/// More than a claim of one message takes in at once (256).
const BACKLOG: usize = 300;

/// A shared group created after prioritized messages were published, or
/// sought back to them, hands them out first too; a group created from the
/// end does not see them.
pub async fn a_new_or_sought_group_sees_the_priorities<F: Factory>(f: &F) {
    let env = Env::new(f, "priority_new_group").await;
    env.publish_n("t", 0, 2).await;
    env.bus.publish("t", at("t", 2, 3)).await.unwrap();
    let g = env
        .sub("t", "g", one_at_a_time().start(Start::Beginning))
        .await;
    assert_eq!(drain(&g).await, ["t-2", "t-0", "t-1"]);
    env.bus.seek("t", "g", Start::Beginning).await.unwrap();
    assert_eq!(drain(&g).await, ["t-2", "t-0", "t-1"]);
    env.bus.seek("t", "g", Start::End).await.unwrap();
    none(&g).await;
    let late = env
        .sub("t", "late", one_at_a_time().start(Start::End))
        .await;
    none(&late).await;
    env.publish_n("t", 3, 1).await;
    env.bus.publish("t", at("t", 4, 3)).await.unwrap();
    assert_eq!(drain(&late).await, ["t-4", "t-3"]);
}

/// Ordered and per-key groups deliver in seq order whatever the priority,
/// while a shared group of the same topic goes by priority.
pub async fn ordered_and_per_key_groups_keep_seq_order<F: Factory>(f: &F) {
    let env = Env::new(f, "priority_orders").await;
    let subs = [
        env.sub("t", "ordered", GroupOptions::new().prefetch(1))
            .await,
        env.sub(
            "t",
            "keys",
            GroupOptions::new().order(Order::PerKey).prefetch(1),
        )
        .await,
        env.sub("t", "shared", one_at_a_time()).await,
    ];
    let batch = [
        at("t", 0, 0),
        at("t", 1, 7),
        at("t", 2, 0).with_key("k"),
        at("t", 3, 9).with_key("k"),
    ];
    env.bus.publish_batch("t", batch).await.unwrap();
    assert_eq!(drain(&subs[0]).await, names("t", 0..4));
    assert_eq!(drain(&subs[1]).await, names("t", 0..4));
    assert_eq!(drain(&subs[2]).await, ["t-3", "t-1", "t-0", "t-2"]);
}

/// A publish hands a consumer waiting caught up the highest priority of
/// what it publishes first: with room for one, the prioritized message
/// (the rest waits for a claim); with room for all, in priority order.
pub async fn a_hand_off_gives_the_highest_priority_first<F: Factory>(f: &F) {
    let env = Env::new(f, "priority_hand_off").await;
    for (topic, prefetch) in [("one", 1), ("all", 4)] {
        let g = env.sub(topic, "g", shared(8).prefetch(prefetch)).await;
        none(&g).await;
        let mut waiting = Box::pin(g.recv());
        for _ in 0..3 {
            assert!(future::poll_once(&mut waiting).await.is_none());
            env.bus.stats(topic).await.unwrap();
        }
        let batch = [at(topic, 0, 0), at(topic, 1, 4), at(topic, 2, 0)];
        env.bus.publish_batch(topic, batch).await.unwrap();
        let first = within(waiting).await.unwrap();
        assert_eq!(text(&first), format!("{topic}-1"), "{topic}");
        first.ack().await.unwrap();
        assert_eq!(
            drain(&g).await,
            [0, 2].map(|i| format!("{topic}-{i}")),
            "{topic}"
        );
    }
}

/// A dead letter keeps its message's priority, and a redrive gives it
/// back: the redriven message comes before the group's backlog.
pub async fn a_dead_letter_keeps_its_priority<F: Factory>(f: &F) {
    let env = Env::new(f, "priority_dead_letter").await;
    let g = env.sub("t", "g", one_at_a_time().max_attempts(1)).await;
    env.bus.publish("t", at("t", 0, 6)).await.unwrap();
    recv(&g).await.nack(NackOptions::new()).await.unwrap();
    let dead = env.bus.dead_letters("t", "g", 1, 10).await.unwrap();
    assert_eq!(dead[0].record().message().priority(), 6);
    env.publish_n("t", 1, 3).await;
    assert_eq!(env.bus.redrive("t", "g", |_| true).await.unwrap(), 1);
    let back = recv(&g).await;
    assert_eq!((text(&back), back.message().priority()), ("t-0".into(), 6));
    back.ack().await.unwrap();
    assert_eq!(drain(&g).await, names("t", 1..4));
}

/// Retention counts what it takes from a shared group once, prioritized or
/// not, and leaves out what the group acked.
pub async fn retention_counts_prioritized_messages_once<F: Factory>(f: &F) {
    let env = Env::new(f, "priority_retention").await;
    let g = env.sub("t", "g", one_at_a_time()).await;
    let batch = [
        at("t", 0, 0),
        at("t", 1, 5),
        at("t", 2, 0),
        at("t", 3, 5),
        at("t", 4, 0),
    ];
    env.bus.publish_batch("t", batch).await.unwrap();
    let first = recv(&g).await;
    assert_eq!(text(&first), "t-1");
    first.ack().await.unwrap();
    assert_eq!(keep_only_the_last(&env.bus, "t").await, (1, 0, 3));
    assert_eq!(drain(&g).await, ["t-4"]);
}
