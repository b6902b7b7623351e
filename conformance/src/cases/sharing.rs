//! Several buses on one store (clones of one driver, or several drivers on
//! one file in this process): a commit through one wakes the others at once,
//! and closing one leaves the others working. The clock never moves here,
//! so nothing can arrive through a lease running out.

use crate::prelude::*;

/// One message, held by a subscription on another bus of the store.
struct Elsewhere {
    other: Bus,
    there: Subscription,
    held: Delivery,
    /// A consumer of the same group on the case's bus.
    here: Subscription,
}

async fn held_elsewhere<F: Factory>(env: &Env<'_, F>) -> Elsewhere {
    let other = env.another_bus().await;
    env.publish_n("t", 0, 1).await;
    // Prefetch 1: it reads nothing ahead, so its ack lets the ordered
    // group go rather than take the next message itself.
    let there = other
        .subscribe("t", "g", GroupOptions::new().lease(LEASE).prefetch(1))
        .await
        .unwrap();
    let held = recv(&there).await;
    let here = env.sub("t", "g", GroupOptions::new()).await;
    Elsewhere {
        other,
        there,
        held,
        here,
    }
}

/// A publish through one bus wakes a `recv` waiting on another bus of the
/// store.
pub async fn a_publish_wakes_another_bus_on_the_store<F: Factory>(f: &F) {
    let env = Env::new(f, "share_publish").await;
    let other = env.another_bus().await;
    let sub = other
        .subscribe("t", "g", GroupOptions::new().lease(LEASE))
        .await
        .unwrap();
    let (got, _) = within(future::zip(sub.recv(), async {
        future::yield_now().await;
        env.publish_n("t", 0, 1).await
    }))
    .await;
    assert_eq!(text(&got.unwrap()), "t-0");
    other.close().await.unwrap();
}

/// A nack, an ack of an ordered group's message and a dropped subscription
/// on one bus each wake the consumer of the same group waiting on another.
pub async fn settles_and_drops_wake_another_bus_on_the_store<F: Factory>(f: &F) {
    let env = Env::new(f, "share_settle").await;
    let other = env.another_bus().await;
    env.publish_n("t", 0, 3).await;
    let here = env.sub("t", "g", GroupOptions::new()).await;
    // Prefetch 1: it reads nothing ahead, so its ack lets the ordered
    // group go rather than take the next message itself.
    let there = other
        .subscribe("t", "g", GroupOptions::new().lease(LEASE).prefetch(1))
        .await
        .unwrap();

    // A nack gives the message back to whoever waits.
    let first = recv(&here).await;
    let (got, nacked) = within(future::zip(there.recv(), async {
        future::yield_now().await;
        first.nack(NackOptions::new()).await
    }))
    .await;
    nacked.unwrap();
    let again = got.unwrap();
    assert_eq!((again.seq(), again.attempt()), (first.seq(), 2));

    // Its ack lets the next message of the ordered group go.
    let (got, acked) = within(future::zip(here.recv(), async {
        future::yield_now().await;
        again.ack().await
    }))
    .await;
    acked.unwrap();
    let second = got.unwrap();
    assert_eq!(text(&second), "t-1");

    // Dropping the subscription that holds it frees it at once.
    let (got, ()) = within(future::zip(there.recv(), async {
        future::yield_now().await;
        drop(here);
    }))
    .await;
    let freed = got.unwrap();
    assert_eq!((freed.seq(), freed.attempt()), (second.seq(), 2));
    other.close().await.unwrap();
}

/// Closing a bus releases its leases to the consumers waiting on another
/// bus at once, and leaves that bus working.
pub async fn closing_one_bus_leaves_the_others_working<F: Factory>(f: &F) {
    let env = Env::new(f, "share_close").await;
    let Elsewhere {
        other,
        there,
        held,
        here,
    } = held_elsewhere(&env).await;
    let (got, closed) = within(future::zip(here.recv(), async {
        future::yield_now().await;
        other.close().await
    }))
    .await;
    closed.unwrap();
    let got = got.unwrap();
    assert_eq!((got.seq(), got.attempt()), (held.seq(), 2));
    got.ack().await.unwrap();
    drop(there);

    // The store is still open for the bus that did not close.
    env.publish_n("t", 1, 1).await;
    assert_eq!(text(&recv(&here).await), "t-1");
    let stats = env.bus.stats("t").await.unwrap();
    assert_eq!(stats.messages, 2);
}

/// Two `close`s of one bus at once both return after its leases are
/// released.
pub async fn concurrent_closes_return_after_the_release<F: Factory>(f: &F) {
    let env = Env::new(f, "share_close_twice").await;
    let Elsewhere {
        other,
        // Kept: dropping it would release the lease.
        there: _there,
        here,
        ..
    } = held_elsewhere(&env).await;
    let (first, second) = within(future::zip(other.close(), async {
        let closed = other.close().await;
        // The first close is still under way or done: either way the lease
        // is free once the second returns.
        let got = some(&here).await;
        assert_eq!(
            got.attempt(),
            2,
            "released before the second close returned"
        );
        closed
    }))
    .await;
    first.unwrap();
    second.unwrap();
}

/// I4 and I7 across buses: consumers of one shared group on four buses of
/// the store, claiming at once, together hold no more than the group's
/// `max_in_flight` and never the same message, and between them get every
/// message once.
pub async fn claims_at_once_on_four_buses_keep_the_groups_cap<F: Factory>(f: &F) {
    let env = Env::new(f, "share_cap").await;
    let mut buses = Vec::new();
    for _ in 0..3 {
        buses.push(env.another_bus().await);
    }
    env.publish_n("t", 0, 40).await;
    let options = shared(5).lease(LEASE).prefetch(5);
    let mut subs = vec![env.sub("t", "g", options.clone()).await];
    for bus in &buses {
        subs.push(bus.subscribe("t", "g", options.clone()).await.unwrap());
    }
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        if seen.len() == 40 {
            break;
        }
        let claims: Vec<BoxFuture<'_, Vec<Delivery>>> = subs
            .iter()
            .map(|sub| {
                Box::pin(async move {
                    let mut held = Vec::new();
                    while let Some(d) = sub.try_recv().await.expect("try_recv") {
                        held.push(d);
                    }
                    held
                }) as BoxFuture<'_, _>
            })
            .collect();
        let held: Vec<Delivery> = join_all(claims).await.into_iter().flatten().collect();
        assert!(!held.is_empty(), "nothing deliverable, {} seen", seen.len());
        assert!(held.len() <= 5, "{} held at once, the cap is 5", held.len());
        assert_eq!(
            group_stats(&env.bus, "t", "g").await.in_flight,
            held.len() as u64
        );
        for d in &held {
            assert!(seen.insert(d.seq()), "seq {} delivered twice", d.seq());
        }
        for d in held {
            d.ack().await.unwrap();
        }
    }
    assert_eq!(seen.len(), 40);
    for bus in buses {
        bus.close().await.unwrap();
    }
}
