//! I4 and I5: one unexpired lease per message and group; an ack is final,
//! and a lost lease settles nothing.

use crate::prelude::*;

/// I4: competing consumers never hold the same message at once.
pub async fn i4_exclusive_lease<F: Factory>(f: &F) {
    let env = Env::new(f, "i4_exclusive").await;
    env.publish_n("t", 0, 3).await;
    let a = env.sub("t", "g", shared(10).prefetch(1)).await;
    let b = env.sub("t", "g", shared(10).prefetch(1)).await;
    let c = env.sub("t", "g", shared(10).prefetch(1)).await;
    let seqs: BTreeSet<u64> = [some(&a).await, some(&b).await, some(&c).await]
        .iter()
        .map(Delivery::seq)
        .collect();
    assert_eq!(seqs.len(), 3);
    none(&a).await;
    none(&b).await;
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.in_flight, stats.ready), (3, 0));
}

/// I4: an expired lease can be taken by another consumer; the old holder's
/// settle is then `LeaseLost` and changes nothing (I5).
pub async fn i4_expired_lease_is_taken_over<F: Factory>(f: &F) {
    let env = Env::new(f, "i4_takeover").await;
    env.publish_n("t", 0, 1).await;
    let a = env.sub("t", "g", GroupOptions::new()).await;
    let b = env.sub("t", "g", GroupOptions::new()).await;
    let old = recv(&a).await;
    env.advance(LEASE);
    let new = some(&b).await;
    assert_eq!((new.seq(), new.attempt()), (1, 2));
    assert!(old.ack().await.unwrap_err().is_lease_lost());
    assert!(
        old.nack(NackOptions::new())
            .await
            .unwrap_err()
            .is_lease_lost()
    );
    assert!(old.extend(LEASE).await.unwrap_err().is_lease_lost());
    none(&a).await;
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.in_flight, stats.acked_floor), (1, 0));
    new.ack().await.unwrap();
}

/// I4/I5: an expired lease nobody took over can still be settled.
pub async fn i4_expired_lease_not_taken_can_settle<F: Factory>(f: &F) {
    let env = Env::new(f, "i4_expired_settle").await;
    env.publish_n("t", 0, 1).await;
    let a = env.sub("t", "g", GroupOptions::new()).await;
    let d = recv(&a).await;
    env.advance(LEASE * 2);
    d.ack().await.unwrap();
    none(&a).await;
    assert_eq!(group_stats(&env.bus, "t", "g").await.acked_floor, 1);
}

/// I5: an acked message never comes back, whatever time does.
pub async fn i5_acked_is_final<F: Factory>(f: &F) {
    let env = Env::new(f, "i5_final").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", shared(5)).await;
    receive_all(&sub, 1).await;
    env.advance(LEASE * 10);
    none(&sub).await;
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.ready, stats.in_flight, stats.acked_floor), (0, 0, 1));
}

/// I5: ack after ack is `LeaseLost`.
pub async fn i5_ack_after_ack_is_lease_lost<F: Factory>(f: &F) {
    let env = Env::new(f, "i5_double_ack").await;
    env.publish_n("t", 0, 2).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let d = recv(&sub).await;
    d.ack().await.unwrap();
    assert!(d.ack().await.unwrap_err().is_lease_lost());
    assert!(
        d.nack(NackOptions::new())
            .await
            .unwrap_err()
            .is_lease_lost()
    );
    let next = recv(&sub).await;
    assert_eq!((next.seq(), next.attempt()), (2, 1));
}

/// I5: two acks of one delivery at the same moment: exactly one succeeds;
/// acks of other deliveries sent alongside are unaffected.
pub async fn i5_concurrent_acks_of_one_delivery<F: Factory>(f: &F) {
    let env = Env::new(f, "i5_concurrent_acks").await;
    env.publish_n("t", 0, 3).await;
    let sub = env.sub("t", "g", shared(10).prefetch(3)).await;
    let (a, b, c) = (recv(&sub).await, recv(&sub).await, recv(&sub).await);
    let results = join_all(vec![
        Box::pin(a.ack()) as BoxFuture<'_, Result<()>>,
        Box::pin(b.ack()),
        Box::pin(a.ack()),
        Box::pin(c.nack(NackOptions::new())),
    ])
    .await;
    let a_results = [results[0].is_ok(), results[2].is_ok()];
    assert_eq!(a_results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| r.as_ref().unwrap_err().is_lease_lost())
    );
    assert!(results[1].is_ok() && results[3].is_ok(), "{results:?}");
    let again = recv(&sub).await;
    assert_eq!((again.seq(), again.attempt()), (c.seq(), 2));
    none(&sub).await;
}

/// I5: extending a lease keeps the message from others past the old end.
pub async fn i5_extend_keeps_the_lease<F: Factory>(f: &F) {
    let env = Env::new(f, "i5_extend").await;
    env.publish_n("t", 0, 1).await;
    let a = env.sub("t", "g", GroupOptions::new()).await;
    let b = env.sub("t", "g", GroupOptions::new()).await;
    let d = recv(&a).await;
    let until = d.extend(LEASE * 3).await.unwrap();
    assert_eq!(until, env.clock.now() + LEASE * 3);
    assert_eq!(d.lease_until(), until);
    env.advance(LEASE * 2);
    none(&b).await;
    d.ack().await.unwrap();
    env.advance(LEASE * 2);
    none(&b).await;
}

/// I5: nack after a lost lease changes nothing: the new holder keeps it.
pub async fn i5_settle_after_loss_changes_nothing<F: Factory>(f: &F) {
    let env = Env::new(f, "i5_after_loss").await;
    env.publish_n("t", 0, 1).await;
    let a = env.sub("t", "g", GroupOptions::new()).await;
    let b = env.sub("t", "g", GroupOptions::new()).await;
    let c = env.sub("t", "g", GroupOptions::new()).await;
    let old = recv(&a).await;
    env.advance(LEASE);
    let new = some(&b).await;
    assert!(
        old.nack(NackOptions::new())
            .await
            .unwrap_err()
            .is_lease_lost()
    );
    none(&c).await;
    assert_eq!(new.attempt(), 2);
    new.ack().await.unwrap();
}

/// Consumers on several threads, each with its own executor, share one group
/// and every message is handed out once.
#[cfg(not(target_arch = "wasm32"))]
pub async fn threads_compete<F: Factory>(f: &F) {
    let env = Env::new(f, "threads_compete").await;
    env.publish_n("t", 0, 200).await;
    let mut subs = Vec::new();
    for _ in 0..4 {
        subs.push(env.sub("t", "g", shared(64).prefetch(8)).await);
    }
    let done = AtomicU64::new(0);
    let seen: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = subs
            .iter()
            .map(|sub| {
                let done = &done;
                scope.spawn(move || {
                    futures_lite::future::block_on(async {
                        let mut seen = Vec::new();
                        while done.load(Ordering::SeqCst) < 200 {
                            match sub.try_recv().await.expect("try_recv") {
                                Some(d) => {
                                    d.ack().await.expect("ack");
                                    seen.push(d.seq());
                                    done.fetch_add(1, Ordering::SeqCst);
                                }
                                None => std::thread::yield_now(),
                            }
                        }
                        seen
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut all = seen.concat();
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
}

/// wasm32 has no threads: the same competition runs on one thread.
#[cfg(target_arch = "wasm32")]
pub async fn threads_compete<F: Factory>(f: &F) {
    crate::cases::watermill::concurrent_subscribe(f).await;
}

/// A heartbeat keeps a delivery's lease while it is worked on: each time a
/// third of the lease is left it extends the lease by the whole lease, so
/// the message stays with its holder long past its first lease; once the
/// delivery is settled the heartbeat ends with `LeaseLost`.
pub async fn a_heartbeat_keeps_a_delivery_leased_until_it_is_settled<F: Factory>(f: &F) {
    let env = Env::new(f, "heartbeat").await;
    env.publish_n("t", 0, 1).await;
    let holder = env.sub("t", "g", shared(10)).await;
    let other = env.sub("t", "g", shared(10)).await;
    let d = recv(&holder).await;
    let mut beat = Box::pin(d.heartbeat());
    // Beats at 8 s into each 10 s lease: three leases' time in all.
    for _ in 0..4 {
        let before = d.lease_until();
        env.advance(Duration::from_secs(8));
        let now = env.clock.now();
        while d.lease_until() == before {
            assert!(future::poll_once(beat.as_mut()).await.is_none());
            future::yield_now().await;
        }
        assert_eq!(d.lease_until(), now + LEASE, "extended by a lease from now");
        none(&other).await;
    }
    d.ack().await.unwrap();
    env.advance(LEASE);
    assert!(within(beat).await.is_lease_lost());
    none(&other).await;
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.in_flight, stats.ready, stats.acked_floor), (0, 0, 1));
}

/// A heartbeat waiting for its next extension ends with `Error::Closed`
/// when the bus closes (on a clock that does not move: it never hangs).
pub async fn a_heartbeat_ends_when_the_bus_closes<F: Factory>(f: &F) {
    let env = Env::new(f, "heartbeat_close").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let d = recv(&sub).await;
    let mut beat = Box::pin(d.heartbeat());
    assert!(future::poll_once(beat.as_mut()).await.is_none());
    env.bus.close().await.unwrap();
    assert!(matches!(within(beat).await, Error::Closed));
}
