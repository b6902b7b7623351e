//! I3 and I9: every group gets every message from its start, groups are
//! independent, their settings are fixed, their statistics are exact.

use crate::prelude::*;

/// I3: every group, whenever created with `Beginning`, gets every message.
pub async fn i3_every_group_gets_every_message<F: Factory>(f: &F) {
    let env = Env::new(f, "i3_every_group").await;
    let early = env.sub("t", "early", GroupOptions::new()).await;
    env.publish_n("t", 0, 5).await;
    let late = env.sub("t", "late", shared(10)).await;
    env.publish_n("t", 5, 5).await;
    assert_eq!(receive_all(&early, 10).await, names("t", 0..10));
    let mut got = receive_all(&late, 10).await;
    got.sort();
    let mut want = names("t", 0..10);
    want.sort();
    assert_eq!(got, want);
}

/// I3: `Start::End` and `Start::AfterSeq` choose where a new group begins.
pub async fn i3_start_positions<F: Factory>(f: &F) {
    let env = Env::new(f, "i3_start").await;
    env.publish_n("t", 0, 5).await;
    let end = env
        .sub("t", "end", GroupOptions::new().start(Start::End))
        .await;
    let after = env
        .sub("t", "after", GroupOptions::new().start(Start::AfterSeq(3)))
        .await;
    none(&end).await;
    env.publish_n("t", 5, 1).await;
    assert_eq!(receive_all(&end, 1).await, names("t", 5..6));
    assert_eq!(receive_all(&after, 3).await, names("t", 3..6));
    // An existing group keeps its position whatever a later subscriber asks.
    let again = env
        .sub("t", "end", GroupOptions::new().start(Start::Beginning))
        .await;
    none(&again).await;
}

/// I3: acks, leases and unacked messages survive closing and reopening the
/// store; acked messages do not come back (I5).
pub async fn i3_state_survives_reopen<F: Factory>(f: &F) {
    let mut env = Env::new(f, "i3_reopen").await;
    env.publish_n("t", 0, 5).await;
    let sub = env.sub("t", "g", shared(10).prefetch(1)).await;
    receive_all(&sub, 2).await;
    let held = recv(&sub).await;
    assert_eq!(held.seq(), 3);
    drop(sub);
    env.reopen().await;
    let sub = env.sub("t", "g", shared(10).prefetch(1)).await;
    let d = recv(&sub).await;
    assert_eq!((d.seq(), d.attempt()), (3, 2));
    d.ack().await.unwrap();
    let rest = receive_all(&sub, 2).await;
    assert_eq!(rest, names("t", 3..5));
    none(&sub).await;
    assert!(
        env.bus
            .publish("t", msg("t", 0))
            .await
            .unwrap()
            .is_duplicate(),
        "dedupe survives"
    );
}

/// I9: what one group does (acks, nacks, dead letters) leaves others untouched.
pub async fn i9_groups_are_independent<F: Factory>(f: &F) {
    let env = Env::new(f, "i9_groups").await;
    env.publish_n("t", 0, 3).await;
    let a = env.sub("t", "a", GroupOptions::new().max_attempts(1)).await;
    let b = env.sub("t", "b", GroupOptions::new()).await;
    recv(&a).await.nack(NackOptions::new()).await.unwrap();
    receive_all(&a, 2).await;
    let first = recv(&b).await;
    assert_eq!((first.seq(), first.attempt()), (1, 1));
    first.ack().await.unwrap();
    let sa = group_stats(&env.bus, "t", "a").await;
    let sb = group_stats(&env.bus, "t", "b").await;
    assert_eq!((sa.acked_floor, sa.dead_lettered), (3, 1));
    // `b` took its next message (read ahead) with its ack.
    assert_eq!(
        (sb.acked_floor, sb.dead_lettered, sb.ready, sb.in_flight),
        (1, 0, 1, 1)
    );
}

/// Stats count ready, in-flight, the acked floor and dead letters per group.
pub async fn stats_per_group<F: Factory>(f: &F) {
    let env = Env::new(f, "stats").await;
    assert_eq!(env.bus.stats("t").await.unwrap().groups.len(), 0);
    env.publish_n("t", 0, 5).await;
    let a = env
        .sub("t", "a", shared(10).prefetch(1).max_attempts(1))
        .await;
    let _b = env.sub("t", "b", GroupOptions::new()).await;
    receive_all(&a, 1).await;
    let _held = recv(&a).await;
    recv(&a).await.nack(NackOptions::new()).await.unwrap();
    let stats = env.bus.stats("t").await.unwrap();
    assert_eq!((stats.last_seq, stats.messages), (5, 5));
    let names: Vec<&str> = stats.groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);
    let a = &stats.groups[0];
    assert_eq!(
        (a.ready, a.in_flight, a.acked_floor, a.dead_lettered),
        (2, 1, 1, 1)
    );
    let b = &stats.groups[1];
    assert_eq!(
        (b.ready, b.in_flight, b.acked_floor, b.dead_lettered),
        (5, 0, 0, 0)
    );
}

/// A group's stored settings cannot be changed by a later subscriber.
pub async fn group_settings_are_fixed<F: Factory>(f: &F) {
    let env = Env::new(f, "group_fixed").await;
    let _a = env.sub("t", "g", GroupOptions::new()).await;
    let err = env.bus.subscribe("t", "g", shared(4)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidOptions(_)), "{err}");
    let err = env
        .bus
        .subscribe("t", "g", GroupOptions::new().max_attempts(9))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions(_)), "{err}");
    // Per-subscription settings may differ.
    let _b = env.sub("t", "g", GroupOptions::new().prefetch(3)).await;
}
