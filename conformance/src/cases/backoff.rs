//! I6: a group's backoff: a failed message (a nack without a delay of its
//! own, a lease that ran out) is deliverable again only after the wait its
//! attempt gets, exactly, on the bus clock.

use crate::prelude::*;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Advances the clock to 1 ms before `wait` is over: nothing; then to its
/// end: the message, at `attempt`.
async fn comes_back_after<F: Factory>(
    env: &Env<'_, F>,
    sub: &Subscription,
    wait: Duration,
    attempt: u32,
) -> Delivery {
    env.advance(wait.saturating_sub(ms(1)));
    none(sub).await;
    env.advance(ms(1));
    let d = some(sub).await;
    assert_eq!(d.attempt(), attempt);
    d
}

/// A nack without a delay waits the group's exponential backoff: 1 s after
/// the first attempt, then 2 s, 4 s, and 4 s (its max) after that, in
/// every ordering mode; a nack's own delay (zero here) wins over it.
pub async fn a_nack_waits_the_groups_backoff<F: Factory>(f: &F) {
    let env = Env::new(f, "nack_backoff").await;
    let seq = env.publish_n("t", 0, 1).await[0];
    let backoff = Backoff::exponential(ms(1_000), ms(4_000));
    for (group, order) in ORDERS {
        let options = GroupOptions::new().order(order).backoff(backoff);
        let sub = env.sub("t", group, options.unlimited_attempts()).await;
        let mut d = recv(&sub).await;
        for (attempt, wait) in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 4_000)] {
            assert_eq!((d.seq(), d.attempt()), (seq, attempt));
            assert_eq!(backoff.delay(seq, attempt), ms(wait));
            d.nack(NackOptions::new().with_reason("flaky"))
                .await
                .unwrap();
            d = comes_back_after(&env, &sub, ms(wait), attempt + 1).await;
        }
        d.nack(NackOptions::new().with_delay(Duration::ZERO))
            .await
            .unwrap();
        let d = some(&sub).await;
        assert_eq!(d.attempt(), 6);
        d.ack().await.unwrap();
    }
}

/// A lease that runs out waits the backoff after its end: the message of
/// attempt 1 comes back 2 s after the lease ended; attempt 2, extended
/// once, 4 s after its extended end, in every ordering mode.
pub async fn an_expired_lease_waits_the_backoff<F: Factory>(f: &F) {
    let env = Env::new(f, "lease_backoff").await;
    let seq = env.publish_n("t", 0, 1).await[0];
    let backoff = Backoff::exponential(ms(2_000), ms(60_000));
    for (group, order) in ORDERS {
        let options = GroupOptions::new().order(order).backoff(backoff);
        let sub = env.sub("t", group, options).await;
        let first = recv(&sub).await;
        assert_eq!((first.seq(), first.attempt()), (seq, 1));
        env.advance(LEASE);
        let second = comes_back_after(&env, &sub, ms(2_000), 2).await;
        env.advance(LEASE / 2);
        second.extend(LEASE).await.unwrap();
        env.advance(LEASE.saturating_sub(ms(1)));
        none(&sub).await;
        env.advance(ms(1));
        let third = comes_back_after(&env, &sub, ms(4_000), 3).await;
        assert!(first.ack().await.unwrap_err().is_lease_lost());
        assert!(second.ack().await.unwrap_err().is_lease_lost());
        third.ack().await.unwrap();
    }
}

/// The leases that other steps write wait the backoff too once they run
/// out: the message an ordered group's ack takes with it, and the
/// messages a publish leases to a consumer waiting for them.
pub async fn leases_taken_in_other_steps_wait_the_backoff<F: Factory>(f: &F) {
    let env = Env::new(f, "step_backoff").await;
    let backoff = Backoff::fixed(ms(3_000));
    // The ack of the first message leases the second, read ahead.
    let seqs = env.publish_n("t", 0, 2).await;
    let sub = env
        .sub("t", "g", GroupOptions::new().prefetch(4).backoff(backoff))
        .await;
    recv(&sub).await.ack().await.unwrap();
    let taken = some(&sub).await;
    assert_eq!((taken.seq(), taken.attempt()), (seqs[1], 1));
    env.advance(LEASE);
    comes_back_after(&env, &sub, ms(3_000), 2)
        .await
        .ack()
        .await
        .unwrap();

    // A publish hands the new messages to a consumer waiting caught up
    // (when it looks in time: a driver may wake a watcher once first).
    for (name, order) in ORDERS {
        let options = GroupOptions::new().order(order).backoff(backoff);
        let sub = env.sub(name, "g", options).await;
        none(&sub).await;
        let mut waiting = Box::pin(sub.recv());
        for _ in 0..3 {
            assert!(future::poll_once(&mut waiting).await.is_none());
            env.bus.stats(name).await.unwrap();
        }
        env.publish_n(name, 0, 1).await;
        let handed = within(waiting).await.unwrap();
        assert_eq!(handed.attempt(), 1);
        env.advance(LEASE);
        let again = comes_back_after(&env, &sub, ms(3_000), 2).await;
        again.ack().await.unwrap();
    }
}

/// Jitter takes a share of each wait off by a hash of seq and attempt: four
/// messages nacked together come back each at its own time, the time
/// [`Backoff::delay`] says, never after the unjittered wait.
pub async fn a_jittered_backoff_comes_back_when_its_delay_says<F: Factory>(f: &F) {
    let env = Env::new(f, "jitter_backoff").await;
    let seqs = env.publish_n("t", 0, 4).await;
    let backoff = Backoff::exponential(ms(8_000), ms(60_000))
        .jitter(0.5)
        .seed(7);
    let sub = env
        .sub("t", "g", shared(8).prefetch(8).backoff(backoff))
        .await;
    for _ in 0..4 {
        let d = recv(&sub).await;
        d.nack(NackOptions::new()).await.unwrap();
    }
    let mut due: Vec<(Duration, u64)> = seqs.iter().map(|&s| (backoff.delay(s, 1), s)).collect();
    due.sort_unstable();
    let distinct: BTreeSet<Duration> = due.iter().map(|(at, _)| *at).collect();
    assert!(distinct.len() > 1, "jitter spread nothing: {due:?}");
    let mut elapsed = Duration::ZERO;
    for (at, seq) in due {
        assert!(at > ms(4_000) && at <= ms(8_000), "{at:?}");
        if at > elapsed {
            env.advance((at.saturating_sub(elapsed)).saturating_sub(ms(1)));
            none(&sub).await;
            env.advance(ms(1));
            elapsed = at;
        }
        let d = some(&sub).await;
        assert_eq!((d.seq(), d.attempt()), (seq, 2));
        d.ack().await.unwrap();
    }
    none(&sub).await;
}

/// A group's backoff is stored with it: a subscription asking for another
/// is refused, stats show it, and a backoff that makes no sense (a base over
/// its max, a jitter over 1) is refused before anything is stored.
pub async fn a_groups_backoff_is_stored_with_it<F: Factory>(f: &F) {
    let env = Env::new(f, "stored_backoff").await;
    let backoff = Backoff::exponential(ms(100), ms(6_400)).jitter(0.25);
    let _sub = env
        .sub("t", "g", GroupOptions::new().backoff(backoff))
        .await;
    for other in [
        Backoff::none(),
        Backoff::exponential(ms(100), ms(6_400)),
        backoff.seed(1),
        Backoff::fixed(ms(100)),
    ] {
        let options = GroupOptions::new().lease(LEASE).backoff(other);
        let refused = env.bus.subscribe("t", "g", options).await.unwrap_err();
        assert!(matches!(refused, Error::InvalidOptions(_)), "{refused:?}");
    }
    let _again = env
        .sub("t", "g", GroupOptions::new().backoff(backoff))
        .await;
    assert_eq!(
        group_stats(&env.bus, "t", "g").await.settings.backoff,
        backoff
    );
    for bad in [
        Backoff::exponential(ms(2), ms(1)),
        Backoff::fixed(ms(1)).jitter(1.5),
        Backoff::fixed(ms(1)).jitter(-0.1),
        Backoff::fixed(ms(1)).jitter(f64::NAN),
    ] {
        let options = GroupOptions::new().lease(LEASE).backoff(bad);
        let refused = env.bus.subscribe("t", "h", options).await.unwrap_err();
        assert!(
            matches!(refused, Error::InvalidOptions(_)),
            "{bad:?}: {refused:?}"
        );
    }
    let stats = env.bus.stats("t").await.unwrap();
    assert_eq!(stats.groups.len(), 1, "a refused group was stored");
}
