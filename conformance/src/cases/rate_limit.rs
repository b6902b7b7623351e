//! A group's rate limit: at most `max` deliveries per window, across all
//! its consumers and buses, first attempts and redeliveries alike.

use crate::prelude::*;

const PERIOD: Duration = Duration::from_secs(5);

/// Takes and acks what `subs` get now, turn by turn, until none gets more;
/// the seqs, in the order taken.
async fn drain(subs: &[&Subscription]) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        let mut any = false;
        for sub in subs {
            if let Some(d) = sub.try_recv().await.expect("try_recv") {
                got.push(d.seq());
                d.ack().await.unwrap();
                any = true;
            }
        }
        if !any {
            return got;
        }
    }
}

/// Three deliveries per 5 s window, across two consumers on two buses
/// sharing the group (each with prefetch 8), in every ordering mode: each
/// window hands out 3 of the 8 messages and nothing more, acks or not,
/// until it closes; a redelivery takes a place in its window like a first
/// attempt.
pub async fn a_rate_limit_caps_a_groups_deliveries<F: Factory>(f: &F) {
    let env = Env::new(f, "rate_limit").await;
    let seqs = env.publish_n("t", 0, 8).await;
    let other = env.another_bus().await;
    for (group, order) in ORDERS {
        let options = GroupOptions::new()
            .order(order)
            .prefetch(8)
            .rate_limit(3, PERIOD);
        let a = env.sub("t", group, options.clone()).await;
        let b = other
            .subscribe("t", group, options.lease(LEASE))
            .await
            .unwrap();
        let first = drain(&[&a, &b]).await;
        assert_eq!(first, seqs[..3], "{group}: first window");
        env.advance(PERIOD.saturating_sub(Duration::from_millis(1)));
        assert_eq!(drain(&[&b, &a]).await, [], "{group}: window still open");
        env.advance(Duration::from_millis(1));
        // The second window: a nack's redelivery counts in it.
        let d = some(&b).await;
        assert_eq!((d.seq(), d.attempt()), (seqs[3], 1));
        d.nack(NackOptions::new()).await.unwrap();
        let second = drain(&[&a, &b]).await;
        assert_eq!(second.len(), 2, "{group}: second window {second:?}");
        let mut acked: BTreeSet<u64> = first.into_iter().chain(second).collect();
        while acked.len() < seqs.len() {
            env.advance(PERIOD);
            let window = drain(&[&a, &b]).await;
            assert_eq!(
                window.len(),
                3.min(seqs.len() - acked.len()),
                "{group}: {window:?}"
            );
            acked.extend(window);
        }
        assert_eq!(acked, seqs.iter().copied().collect());
        env.advance(PERIOD);
        assert_eq!(drain(&[&a, &b]).await, [], "{group}: all acked");
    }
    other.close().await.unwrap();
}

/// A consumer waiting on a full window gets its message when the window
/// closes, on the bus clock (its claim said when), and not before.
pub async fn a_full_window_wakes_its_waiter_when_it_closes<F: Factory>(f: &F) {
    let env = Env::new(f, "rate_wake").await;
    let seqs = env.publish_n("t", 0, 2).await;
    let options = shared(4).rate_limit(1, PERIOD);
    let sub = env.sub("t", "g", options).await;
    recv(&sub).await.ack().await.unwrap();
    let mut waiting = Box::pin(sub.recv());
    for _ in 0..3 {
        assert!(future::poll_once(&mut waiting).await.is_none());
        env.bus.stats("t").await.unwrap();
    }
    env.advance(PERIOD.saturating_sub(Duration::from_millis(1)));
    assert!(future::poll_once(&mut waiting).await.is_none());
    env.advance(Duration::from_millis(1));
    let d = within(waiting).await.unwrap();
    assert_eq!((d.seq(), d.attempt()), (seqs[1], 1));
}

/// A group's rate limit is stored with it: a subscription asking for
/// another (or none) is refused, stats show it, and a limit of 0 or a
/// period under 1 ms is refused before anything is stored.
pub async fn a_groups_rate_limit_is_stored_with_it<F: Factory>(f: &F) {
    let env = Env::new(f, "stored_rate").await;
    let options = || GroupOptions::new().lease(LEASE);
    let _sub = env.sub("t", "g", options().rate_limit(10, PERIOD)).await;
    for other in [
        options(),
        options().rate_limit(11, PERIOD),
        options().rate_limit(10, PERIOD * 2),
    ] {
        let refused = env.bus.subscribe("t", "g", other).await.unwrap_err();
        assert!(matches!(refused, Error::InvalidOptions(_)), "{refused:?}");
    }
    let _again = env.sub("t", "g", options().rate_limit(10, PERIOD)).await;
    let settings = group_stats(&env.bus, "t", "g").await.settings;
    assert_eq!(settings.rate_limit, Some(RateLimit::new(10, PERIOD)));
    for bad in [
        options().rate_limit(0, PERIOD),
        options().rate_limit(1, Duration::ZERO),
    ] {
        let refused = env.bus.subscribe("t", "h", bad).await.unwrap_err();
        assert!(matches!(refused, Error::InvalidOptions(_)), "{refused:?}");
    }
    assert_eq!(env.bus.stats("t").await.unwrap().groups.len(), 1);
}
