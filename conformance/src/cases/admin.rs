//! Group administration: `bus.seek` (a consumer reset to the beginning,
//! the end or after a seq) and `bus.delete_group`, in every ordering mode,
//! with consumers running.

use crate::prelude::*;

/// Publishes `<topic>-0` … `<topic>-5`, keys `k0`/`k1` alternating.
async fn six<F: Factory>(env: &Env<'_, F>, topic: &str) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in 0..6 {
        let m = msg(topic, i).with_key(format!("k{}", i % 2));
        seqs.push(env.bus.publish(topic, m).await.unwrap().seq());
    }
    seqs
}

/// Receives `n` deliveries and acks each; their payloads and attempts.
async fn take(sub: &Subscription, n: usize) -> Vec<(String, u32)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let d = recv(sub).await;
        got.push((text(&d), d.attempt()));
        d.ack().await.unwrap();
    }
    got.sort();
    got
}

fn fresh(topic: &str, range: std::ops::Range<usize>) -> Vec<(String, u32)> {
    let mut all: Vec<(String, u32)> = names(topic, range).into_iter().map(|n| (n, 1)).collect();
    all.sort();
    all
}

/// A seek to the beginning gives the group every message again, each as
/// new (attempt 1), and the delivery it had out is no longer current; a
/// seek after a seq gives what follows it; a seek to the end gives only
/// what is published after it. Another group does not move.
pub async fn seek_moves_a_group_in_every_mode<F: Factory>(f: &F) {
    let env = Env::new(f, "seek").await;
    for (name, options) in modes() {
        let topic = format!("s.{name}");
        let seqs = six(&env, &topic).await;
        let sub = env.sub(&topic, "g", options.clone()).await;
        let other = env.sub(&topic, "other", GroupOptions::new()).await;
        assert_eq!(take(&sub, 3).await, fresh(&topic, 0..3), "{name}");
        let out = recv(&sub).await;
        assert_eq!(out.attempt(), 1);

        env.bus.seek(&topic, "g", Start::Beginning).await.unwrap();
        assert!(
            matches!(out.ack().await, Err(Error::LeaseLost)),
            "{name}: the delivery out before the seek is not current"
        );
        assert_eq!(take(&sub, 6).await, fresh(&topic, 0..6), "{name}");
        none(&sub).await;

        env.bus
            .seek(&topic, "g", Start::AfterSeq(seqs[3]))
            .await
            .unwrap();
        assert_eq!(take(&sub, 2).await, fresh(&topic, 4..6), "{name}");
        none(&sub).await;
        let stats = group_stats(&env.bus, &topic, "g").await;
        assert_eq!((stats.acked_floor, stats.ready), (seqs[5], 0), "{name}");

        env.bus.seek(&topic, "g", Start::End).await.unwrap();
        none(&sub).await;
        env.publish_n(&topic, 6, 1).await;
        assert_eq!(take(&sub, 1).await, fresh(&topic, 6..7), "{name}");

        // The other group saw none of it.
        let first = recv(&other).await;
        assert_eq!((text(&first), first.attempt()), (format!("{topic}-0"), 1));
    }
}

/// I14: after a seek hands a message out again as new (attempt 1), a
/// delivery of it from before the seek — the same seq and attempt — is not
/// current: neither one still out (its ack, nack and extend are
/// `LeaseLost`) nor one already acked (acked again, it is `LeaseLost`), and
/// neither settles the new delivery, which stays current. In every mode.
pub async fn a_delivery_from_before_a_seek_never_settles_the_new_one<F: Factory>(f: &F) {
    let env = Env::new(f, "seek_identity").await;
    for (name, options) in modes() {
        let topic = format!("s.{name}");
        for i in 0..2 {
            let m = msg(&topic, i).with_key(format!("k{i}"));
            env.bus.publish(&topic, m).await.unwrap();
        }
        let before = env.sub(&topic, "g", options.clone()).await;
        let acked = recv(&before).await;
        acked.ack().await.unwrap();
        let out = recv(&before).await;
        assert_eq!(
            [(text(&acked), acked.attempt()), (text(&out), out.attempt())],
            [(format!("{topic}-0"), 1), (format!("{topic}-1"), 1)]
        );

        env.bus.seek(&topic, "g", Start::Beginning).await.unwrap();
        let after = env.sub(&topic, "g", options.clone()).await;
        let again = recv(&after).await;
        assert_eq!((text(&again), again.attempt()), (text(&acked), 1), "{name}");
        assert!(
            acked.ack().await.unwrap_err().is_lease_lost(),
            "{name}: a second ack from before the seek"
        );
        again.ack().await.unwrap();
        let again = recv(&after).await;
        assert_eq!((text(&again), again.attempt()), (text(&out), 1), "{name}");
        assert!(
            out.extend(LEASE).await.unwrap_err().is_lease_lost(),
            "{name}"
        );
        let nack = out.nack(NackOptions::new()).await;
        assert!(nack.unwrap_err().is_lease_lost(), "{name}");
        assert!(out.ack().await.unwrap_err().is_lease_lost(), "{name}");
        let stats = group_stats(&env.bus, &topic, "g").await;
        assert_eq!(
            (stats.in_flight, stats.acked_floor),
            (1, acked.seq()),
            "{name}"
        );
        again.ack().await.unwrap();
        drop((before, after));
        let stats = group_stats(&env.bus, &topic, "g").await;
        assert_eq!((stats.in_flight, stats.ready), (0, 0), "{name}");
    }
}

/// A seek keeps the group's settings and its count of dead letters; a
/// message it dead-lettered comes again as new.
pub async fn seek_keeps_settings_and_dead_letters<F: Factory>(f: &F) {
    let env = Env::new(f, "seek_dead").await;
    env.publish_n("t", 0, 2).await;
    let options = GroupOptions::new().max_attempts(1).prefetch(1);
    let sub = env.sub("t", "g", options.clone()).await;
    recv(&sub).await.nack(NackOptions::new()).await.unwrap();
    assert_eq!(take(&sub, 1).await, fresh("t", 1..2));
    env.bus.seek("t", "g", Start::Beginning).await.unwrap();
    assert_eq!(group_stats(&env.bus, "t", "g").await.dead_lettered, 1);
    assert_eq!(take(&sub, 2).await, fresh("t", 0..2));
    // The settings stay: others are still refused.
    let other = env.bus.subscribe("t", "g", GroupOptions::new()).await;
    assert!(matches!(other, Err(Error::InvalidOptions(_))));
}

/// A consumer waiting caught up on one bus gets the group's messages
/// again as soon as another bus seeks the group back.
pub async fn a_seek_wakes_waiting_consumers<F: Factory>(f: &F) {
    let env = Env::new(f, "seek_wake").await;
    let other = env.another_bus().await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    recv(&sub).await.ack().await.unwrap();
    let (got, sought) = within(future::zip(sub.recv(), async {
        future::yield_now().await;
        other.seek("t", "g", Start::Beginning).await
    }))
    .await;
    sought.unwrap();
    let again = got.unwrap();
    assert_eq!((text(&again), again.attempt()), ("t-0".to_owned(), 1));
    other.close().await.unwrap();
}

/// Deleting a group forgets its position, leases and attempts: its
/// consumers (waiting or not) get `Error::UnknownGroup`, close cleanly, and
/// a new subscription creates the group anew with its own settings. The
/// messages and other groups stay.
pub async fn delete_group_forgets_it<F: Factory>(f: &F) {
    let env = Env::new(f, "delete_group").await;
    for (name, options) in modes() {
        let topic = format!("d.{name}");
        six(&env, &topic).await;
        let sub = env.sub(&topic, "g", options.clone()).await;
        let waiting = env.sub(&topic, "g", options.clone()).await;
        let kept = env.sub(&topic, "kept", GroupOptions::new()).await;
        take(&sub, 2).await;
        let out = recv(&sub).await;
        // Another consumer takes what is left, then waits.
        let delete = env.bus.delete_group(&topic, "g");
        deleted_under_consumers(&sub, &waiting, out, delete, name).await;
        let groups = env.bus.stats(&topic).await.unwrap().groups;
        let names: Vec<&str> = groups.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(names, ["kept"], "{name}");
        assert!(!env.bus.delete_group(&topic, "g").await.unwrap(), "{name}");
        sub.close().await.unwrap();
        waiting.close().await.unwrap();

        // Anew, with other settings, from the beginning: each message once.
        let again = env.sub(&topic, "g", shared(8).prefetch(8)).await;
        assert_eq!(take(&again, 6).await, fresh(&topic, 0..6), "{name}");
        none(&again).await;
        assert_eq!(recv(&kept).await.attempt(), 1);
    }
}

/// A delivery of a deleted group is not current, even once the group is
/// created again (same name, same settings) and hands the same message out
/// again as (seq, attempt 1): it neither settles nor extends the new
/// delivery, which stays current. In every mode.
pub async fn a_delivery_of_a_deleted_group_is_never_current_again<F: Factory>(f: &F) {
    let env = Env::new(f, "delete_identity").await;
    for (name, options) in modes() {
        let topic = format!("d.{name}");
        env.publish_n(&topic, 0, 1).await;
        let before = env.sub(&topic, "g", options.clone()).await;
        let old = recv(&before).await;
        assert!(env.bus.delete_group(&topic, "g").await.unwrap(), "{name}");
        let after = env.sub(&topic, "g", options.clone()).await;
        let new = recv(&after).await;
        assert_eq!((new.seq(), new.attempt()), (old.seq(), 1), "{name}");
        assert!(
            old.extend(LEASE).await.unwrap_err().is_lease_lost(),
            "{name}"
        );
        assert!(old.ack().await.unwrap_err().is_lease_lost(), "{name}");
        let stats = group_stats(&env.bus, &topic, "g").await;
        assert_eq!((stats.in_flight, stats.ready), (1, 0), "{name}");
        new.ack().await.unwrap();
        let stats = group_stats(&env.bus, &topic, "g").await;
        assert_eq!(
            (stats.in_flight, stats.acked_floor),
            (0, new.seq()),
            "{name}"
        );
        drop((before, after));
    }
}

/// Seeks and deletes refuse bad input, and a seek of a group that does
/// not exist is `Error::UnknownGroup`.
pub async fn seek_and_delete_refuse_bad_input<F: Factory>(f: &F) {
    let env = Env::new(f, "seek_input").await;
    env.publish_n("t", 0, 1).await;
    let _sub = env.sub("t", "g", GroupOptions::new()).await;
    assert!(matches!(
        env.bus.seek("t", "nobody", Start::Beginning).await,
        Err(Error::UnknownGroup { .. })
    ));
    assert!(matches!(
        env.bus.seek("bad topic", "g", Start::End).await,
        Err(Error::InvalidName {
            kind: NameKind::Topic,
            ..
        })
    ));
    assert!(matches!(
        env.bus.seek("t", "bad group", Start::End).await,
        Err(Error::InvalidName {
            kind: NameKind::Group,
            ..
        })
    ));
    assert!(matches!(
        env.bus.seek("t", "g", Start::AfterSeq(u64::MAX)).await,
        Err(Error::InvalidOptions(_))
    ));
    assert!(matches!(
        env.bus.delete_group("t", "").await,
        Err(Error::InvalidName {
            kind: NameKind::Group,
            ..
        })
    ));
    assert!(!env.bus.delete_group("t", "nobody").await.unwrap());
    // Nothing moved.
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.ready, stats.acked_floor), (1, 0));
}

/// `bus.topics()` lists the topics that hold a message or a group, in
/// order (dead-letter topics once they hold a dead letter); a topic whose
/// only group was deleted and that holds no message is gone.
pub async fn topics_lists_every_topic_with_messages_or_groups<F: Factory>(f: &F) {
    let env = Env::new(f, "topics").await;
    assert!(env.bus.topics().await.unwrap().is_empty());
    env.publish_n("b", 0, 2).await;
    env.publish_n("a", 0, 1).await;
    let waiting = env.sub("c", "g", GroupOptions::new()).await;
    let once = env.sub("a", "g", GroupOptions::new().max_attempts(1)).await;
    assert_eq!(env.bus.topics().await.unwrap(), ["a", "b", "c"]);
    recv(&once).await.nack(NackOptions::new()).await.unwrap();
    assert_eq!(env.bus.topics().await.unwrap(), ["a", "a.dlq", "b", "c"]);
    waiting.close().await.unwrap();
    assert!(env.bus.delete_group("c", "g").await.unwrap());
    assert_eq!(env.bus.topics().await.unwrap(), ["a", "a.dlq", "b"]);
    env.bus.close().await.unwrap();
    assert!(matches!(env.bus.topics().await, Err(Error::Closed)));
}

/// `bus.stats` gives each group's stored settings: its order,
/// `max_attempts` and dead-letter topic.
pub async fn stats_give_each_groups_settings<F: Factory>(f: &F) {
    let env = Env::new(f, "settings").await;
    let groups = [
        ("a", GroupOptions::new(), Order::Ordered, 5, "t.dlq"),
        (
            "b",
            GroupOptions::new().order(Order::PerKey).max_attempts(2),
            Order::PerKey,
            2,
            "t.dlq",
        ),
        (
            "c",
            shared(7).max_attempts(9).dead_letter("elsewhere"),
            Order::Shared { max_in_flight: 7 },
            9,
            "elsewhere",
        ),
    ];
    let mut subs = Vec::new();
    for (name, options, ..) in &groups {
        subs.push(env.sub("t", name, options.clone()).await);
    }
    let stats = env.bus.stats("t").await.unwrap();
    for ((name, _, order, max_attempts, dead_letter), got) in groups.iter().zip(&stats.groups) {
        assert_eq!(got.group, *name);
        let settings = &got.settings;
        assert_eq!(
            (
                settings.order,
                settings.max_attempts,
                settings.dead_letter.as_str()
            ),
            (*order, *max_attempts, *dead_letter),
            "{name}"
        );
    }
}

/// A group's lag: how many messages it is behind (`ready + in_flight`)
/// and how long its oldest unsettled message has waited since its publish;
/// none once it is caught up.
pub async fn stats_give_each_groups_lag<F: Factory>(f: &F) {
    let env = Env::new(f, "lag").await;
    let sub = env.sub("t", "g", GroupOptions::new().prefetch(1)).await;
    let idle = group_stats(&env.bus, "t", "g").await;
    assert_eq!((idle.ready, idle.lag), (0, None));
    env.publish_n("t", 0, 1).await;
    env.advance(Duration::from_secs(3));
    env.publish_n("t", 1, 2).await;
    env.advance(Duration::from_secs(2));
    let g = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (g.ready + g.in_flight, g.lag),
        (3, Some(Duration::from_secs(5)))
    );
    let d = recv(&sub).await;
    let g = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (g.ready, g.in_flight, g.lag),
        (2, 1, Some(Duration::from_secs(5)))
    );
    d.ack().await.unwrap();
    let g = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (g.ready + g.in_flight, g.lag),
        (2, Some(Duration::from_secs(2)))
    );
    receive_all(&sub, 2).await;
    assert_eq!(group_stats(&env.bus, "t", "g").await.lag, None);
}
