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
    none(&a).await;
    assert!(first.ack().await.unwrap_err().is_lease_lost());
    again.ack().await.unwrap();
    // `b` holds the group now: it took the next message with its ack.
    none(&a).await;
    assert_eq!(receive_all(&b, 2).await, names("t", 1..3));
}

/// I7 `Ordered`: the consumer that holds the group reads the next messages
/// ahead and takes each with the ack of the one before it (a new delivery
/// at attempt 1, its lease running from the ack), so the group stays with
/// it while it has them; others get nothing meanwhile. A consumer that
/// read nothing more ahead lets the group go with its ack.
pub async fn i7_ordered_ack_takes_the_next_read_ahead<F: Factory>(f: &F) {
    let env = Env::new(f, "i7_ordered_ahead").await;
    env.publish_n("t", 0, 4).await;
    let a = env.sub("t", "g", GroupOptions::new().prefetch(3)).await;
    let b = env.sub("t", "g", GroupOptions::new().prefetch(1)).await;
    let first = recv(&a).await;
    assert_eq!((text(&first), first.attempt()), ("t-0".to_owned(), 1));
    env.advance(Duration::from_secs(1));
    first.ack().await.unwrap();
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.acked_floor, stats.in_flight, stats.ready), (1, 1, 2));
    none(&b).await;
    let second = some(&a).await;
    assert_eq!((text(&second), second.attempt()), ("t-1".to_owned(), 1));
    assert_eq!(second.lease_until(), env.bus.clock().now() + LEASE);
    second.ack().await.unwrap();
    let third = some(&a).await;
    assert_eq!(text(&third), "t-2");
    // `a` read nothing past t-2: its ack lets the group go to `b`.
    third.ack().await.unwrap();
    assert_eq!(group_stats(&env.bus, "t", "g").await.in_flight, 0);
    assert_eq!(receive_all(&b, 1).await, names("t", 3..4));
}

/// I7 `Ordered`: a nack lets the group go and drops what was read ahead:
/// the nacked message comes first again, to any consumer, then the rest.
pub async fn i7_ordered_nack_lets_the_group_go<F: Factory>(f: &F) {
    let env = Env::new(f, "i7_ordered_nack").await;
    env.publish_n("t", 0, 3).await;
    let a = env.sub("t", "g", GroupOptions::new()).await;
    let b = env.sub("t", "g", GroupOptions::new()).await;
    recv(&a).await.nack(NackOptions::new()).await.unwrap();
    let again = some(&b).await;
    assert_eq!((text(&again), again.attempt()), ("t-0".to_owned(), 2));
    none(&a).await;
    again.ack().await.unwrap();
    assert_eq!(receive_all(&b, 2).await, names("t", 1..3));
}

/// I7 `Ordered`: a message read ahead that is not due yet (`deliver_at`) is
/// not taken with the ack; it comes when due, and a delivery dropped
/// unsettled holds the group until its lease ends, then comes again.
pub async fn i7_ordered_next_waits_for_its_time<F: Factory>(f: &F) {
    let env = Env::new(f, "i7_ordered_due").await;
    let later = env.bus.clock().now() + Duration::from_secs(10);
    env.bus.publish("t", msg("t", 0)).await.unwrap();
    env.bus
        .publish("t", msg("t", 1).with_deliver_at(later))
        .await
        .unwrap();
    let a = env.sub("t", "g", GroupOptions::new()).await;
    recv(&a).await.ack().await.unwrap();
    assert_eq!(group_stats(&env.bus, "t", "g").await.in_flight, 0);
    none(&a).await;
    env.advance(Duration::from_secs(10));
    let due = some(&a).await;
    assert_eq!((text(&due), due.attempt()), ("t-1".to_owned(), 1));
    drop(due);
    none(&a).await;
    env.advance(LEASE);
    let again = some(&a).await;
    assert_eq!((text(&again), again.attempt()), ("t-1".to_owned(), 2));
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
    capped_at_three(&env.bus, &a, &b).await;
}

/// Consumers `a` and `b` (prefetch 2) of group `g` of `t`, capped at 3 out
/// at once with more than that deliverable: `a` gets 2, `b` 1, then neither
/// more; an ack lets `b` have one more, and no other. What they hold.
async fn capped_at_three(bus: &Bus, a: &Subscription, b: &Subscription) -> Vec<Delivery> {
    let mut held = vec![some(a).await, some(a).await, some(b).await];
    none(b).await;
    none(a).await;
    assert_eq!(group_stats(bus, "t", "g").await.in_flight, 3);
    held.remove(0).ack().await.unwrap();
    held.push(some(b).await);
    none(b).await;
    held
}

/// I7 `PerKey` with `max_in_flight`: never more than that many deliveries
/// out at once across every consumer and bus of the group (one per key
/// still); a publish hands nothing to a consumer waiting at the cap, which
/// gets the message once an ack makes room. A cap of 0, a cap on another
/// order and another cap for an existing group are refused.
pub async fn i7_per_key_max_in_flight<F: Factory>(f: &F) {
    let env = Env::new(f, "i7_per_key_cap").await;
    let keyed = |i: usize| msg("t", i).with_key(format!("k{i}"));
    env.bus.publish_batch("t", (0..7).map(keyed)).await.unwrap();
    let capped = || {
        GroupOptions::new()
            .order(Order::PerKey)
            .max_in_flight(3)
            .prefetch(2)
    };
    let a = env.sub("t", "g", capped()).await;
    let other = env.another_bus().await;
    let b = other.subscribe("t", "g", capped()).await.unwrap();
    let mut held = capped_at_three(&env.bus, &a, &b).await;

    // At the cap, a waiting consumer is handed nothing until an ack.
    let rest = held.len();
    for d in held.drain(..) {
        d.ack().await.unwrap();
    }
    assert_eq!(rest, 3);
    let mut out = vec![some(&a).await, some(&a).await, some(&b).await];
    let mut waiting = Box::pin(b.recv());
    for _ in 0..3 {
        assert!(future::poll_once(&mut waiting).await.is_none());
        env.bus.stats("t").await.unwrap();
    }
    env.bus.publish("t", keyed(7)).await.unwrap();
    env.bus.stats("t").await.unwrap();
    assert!(
        future::poll_once(&mut waiting).await.is_none(),
        "at the cap"
    );
    out.remove(0).ack().await.unwrap();
    let last = within(waiting).await.unwrap();
    assert_eq!(text(&last), "t-7");
    assert_eq!(group_stats(&env.bus, "t", "g").await.in_flight, 3);

    for refused in [
        GroupOptions::new().order(Order::PerKey).max_in_flight(0),
        GroupOptions::new().max_in_flight(2),
        shared(4).max_in_flight(2),
        GroupOptions::new().order(Order::PerKey).max_in_flight(4),
    ] {
        let got = env.bus.subscribe("t", "g", refused).await;
        assert!(matches!(got, Err(Error::InvalidOptions(_))), "{got:?}");
    }
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

/// I7, I11: an ordered group's ack cut after any number of polls loses
/// nothing and holds nothing back. With the clock standing still, the
/// consumer's next `recv` gets at once either the acked message again at
/// the same attempt (the ack did not run) or the next one (it ran), and
/// every message comes in order at attempt 1.
pub async fn ordered_acks_cut_after_any_poll_lose_nothing<F: Factory>(f: &F) {
    let env = Env::new(f, "cut_ordered_ack").await;
    let count = 60;
    env.publish_n("t", 0, count).await;
    let sub = env.sub("t", "g", GroupOptions::new().prefetch(4)).await;
    let mut random = 0x9e37_79b9_7f4a_7c15_u64;
    let mut expected = 0;
    // The last ack was cut: it may or may not have run.
    let mut unknown = false;
    while expected < count {
        let d = if unknown && expected + 1 == count {
            // The last ack was cut: the message comes again, or it is done.
            match sub.try_recv().await.unwrap() {
                Some(d) => d,
                None => break,
            }
        } else {
            recv(&sub).await
        };
        if unknown && text(&d) == format!("t-{}", expected + 1) {
            expected += 1;
        }
        assert_eq!(text(&d), format!("t-{expected}"), "in order, once");
        assert_eq!(d.attempt(), 1, "no new attempt: {d:?}");
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let mut ack = Box::pin(d.ack());
        unknown = true;
        // A third of the acks run to the end; the others are cut after
        // 1–6 polls, some with a yield between polls (so that a driver's
        // own task may run the ack meanwhile).
        if random.is_multiple_of(3) {
            ack.as_mut().await.unwrap();
            unknown = false;
        }
        for _ in 0..=random % 6 {
            if !unknown {
                break;
            }
            if let Some(acked) = future::poll_once(&mut ack).await {
                acked.unwrap();
                unknown = false;
                break;
            }
            if random & 8 == 0 {
                future::yield_now().await;
            }
        }
        drop(ack);
        if !unknown {
            expected += 1;
        }
    }
    none(&sub).await;
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
}

/// I7: an ordered consumer that waits while it holds its group's delivery
/// (it called `recv` again before settling) is not handed a new message by
/// a publish, nor its own delivery again: it gets the next message once it
/// has acked.
pub async fn an_ordered_consumer_holding_its_delivery_waits_for_its_ack<F: Factory>(f: &F) {
    let env = Env::new(f, "ordered_holding").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let held = recv(&sub).await;
    let mut waiting = Box::pin(sub.recv());
    for _ in 0..3 {
        assert!(future::poll_once(&mut waiting).await.is_none());
        env.bus.stats("t").await.unwrap();
    }
    env.publish_n("t", 1, 1).await;
    env.bus.stats("t").await.unwrap();
    assert!(
        future::poll_once(&mut waiting).await.is_none(),
        "nothing while it holds t-0"
    );
    held.ack().await.unwrap();
    let next = within(waiting).await.unwrap();
    assert_eq!((text(&next), next.attempt()), ("t-1".to_owned(), 1));
}
