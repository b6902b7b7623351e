//! I7: ordered, per-key and shared groups, and prefetch.

use crate::prelude::*;

/// I7 `Ordered`: one message in flight for the whole group, in seq order,
/// redelivered before anything after it.
pub async fn i7_ordered_one_at_a_time<F: Factory>(f: &F) {
    let env = Env::new(f, "i7_ordered").await;
    env.publish_n("t", 0, 3).await;
    let a = env.sub("t", "g", GroupOptions::new().prefetch(10)).await;
    let b = env.sub("t", "g", GroupOptions::new().prefetch(10)).await;
    let first = recv(&a).await;
    none(&b).await;
    assert_eq!(group_stats(&env.bus, "t", "g").await.in_flight, 1);
    env.advance(LEASE);
    let again = some(&b).await;
    assert_eq!((again.seq(), again.attempt()), (1, 2));
    drop(first);
    again.ack().await.unwrap();
    assert_eq!(receive_all(&a, 2).await, names("t", 1..3));
}

/// I7 `PerKey`: one in flight per key, in order; keys run in parallel.
pub async fn i7_per_key_fifo<F: Factory>(f: &F) {
    let env = Env::new(f, "i7_per_key").await;
    let keyed = |k: &str, i: usize| {
        Message::new(format!("{k}{i}"))
            .with_id(format!("{k}{i}"))
            .with_key(k)
    };
    env.bus
        .publish_batch(
            "t",
            [keyed("a", 1), keyed("b", 1), keyed("a", 2), keyed("b", 2)],
        )
        .await
        .unwrap();
    let s1 = env
        .sub(
            "t",
            "g",
            GroupOptions::new().order(Order::PerKey).prefetch(1),
        )
        .await;
    let s2 = env
        .sub(
            "t",
            "g",
            GroupOptions::new().order(Order::PerKey).prefetch(1),
        )
        .await;
    let a1 = some(&s1).await;
    let b1 = some(&s2).await;
    assert_eq!((text(&a1), text(&b1)), ("a1".into(), "b1".into()));
    none(&s1).await;
    none(&s2).await;
    b1.ack().await.unwrap();
    assert_eq!(text(&some(&s1).await), "b2");
    a1.ack().await.unwrap();
    assert_eq!(text(&some(&s2).await), "a2");
}

/// I7 `PerKey`: messages without a key do not wait for one another.
pub async fn i7_per_key_unkeyed_are_independent<F: Factory>(f: &F) {
    let env = Env::new(f, "i7_unkeyed").await;
    env.publish_n("t", 0, 3).await;
    let sub = env
        .sub(
            "t",
            "g",
            GroupOptions::new().order(Order::PerKey).prefetch(1),
        )
        .await;
    let held: Vec<Delivery> = vec![some(&sub).await, some(&sub).await, some(&sub).await];
    assert_eq!(
        held.iter().map(Delivery::seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

/// I7 `Shared`: never more than `max_in_flight` leases at once.
pub async fn i7_shared_max_in_flight<F: Factory>(f: &F) {
    let env = Env::new(f, "i7_shared").await;
    env.publish_n("t", 0, 10).await;
    let a = env.sub("t", "g", shared(3).prefetch(2)).await;
    let b = env.sub("t", "g", shared(3).prefetch(2)).await;
    let mut held = vec![some(&a).await, some(&a).await, some(&b).await];
    none(&b).await;
    none(&a).await;
    assert_eq!(group_stats(&env.bus, "t", "g").await.in_flight, 3);
    held.remove(0).ack().await.unwrap();
    held.push(some(&b).await);
    none(&b).await;
}

/// I7: prefetch leases several messages in one claim.
pub async fn i7_prefetch_claims_a_batch<F: Factory>(f: &F) {
    let env = Env::new(f, "i7_prefetch").await;
    env.publish_n("t", 0, 10).await;
    let sub = env.sub("t", "g", shared(100).prefetch(4)).await;
    let d = recv(&sub).await;
    assert_eq!(d.seq(), 1);
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.in_flight, stats.ready), (4, 6));
}
