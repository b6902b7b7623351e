//! I10 and I11: the clock, publishes, acks and drops wake a waiting
//! receive; a receive cut after any poll leaves nothing leased to nobody.

use crate::prelude::*;

/// I10: a waiting receive wakes when the bus clock passes a lease end, with no
/// publish or call in between.
pub async fn i10_clock_wakes_waiting_receive<F: Factory>(f: &F) {
    let env = Env::new(f, "i10_wake").await;
    env.publish_n("t", 0, 1).await;
    let a = env.sub("t", "g", GroupOptions::new()).await;
    let b = env.sub("t", "g", GroupOptions::new()).await;
    let _held = recv(&a).await;
    let (got, ()) = within(future::zip(b.recv(), async {
        while env.clock.sleepers() == 0 {
            future::yield_now().await;
        }
        env.advance(LEASE);
    }))
    .await;
    assert_eq!(got.unwrap().attempt(), 2);
}

/// I10: `deliver_at` holds a message back until the bus clock reaches it.
pub async fn i10_deliver_at<F: Factory>(f: &F) {
    let env = Env::new(f, "i10_deliver_at").await;
    let at = env.clock.now() + Duration::from_secs(60);
    env.bus
        .publish(
            "t",
            Message::new("later").with_id("later").with_deliver_at(at),
        )
        .await
        .unwrap();
    let sub = env.sub("t", "g", shared(5)).await;
    none(&sub).await;
    env.advance(Duration::from_secs(59));
    none(&sub).await;
    let (got, ()) = within(future::zip(sub.recv(), async {
        while env.clock.sleepers() == 0 {
            future::yield_now().await;
        }
        env.advance(Duration::from_secs(1));
    }))
    .await;
    assert_eq!(text(&got.unwrap()), "later");
}

/// A publish wakes a waiting receive at once: no polling, no clock movement.
pub async fn publish_wakes_waiting_receive<F: Factory>(f: &F) {
    let env = Env::new(f, "wake_on_publish").await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let (got, _) = within(future::zip(sub.recv(), async {
        future::yield_now().await;
        env.publish_n("t", 0, 1).await
    }))
    .await;
    assert_eq!(text(&got.unwrap()), "t-0");
}

/// An ack in an ordered group wakes the consumer waiting for the next message.
pub async fn ack_wakes_ordered_waiter<F: Factory>(f: &F) {
    let env = Env::new(f, "wake_on_ack").await;
    env.publish_n("t", 0, 2).await;
    // Prefetch 1: `a` reads nothing ahead, so its ack lets the group go.
    let a = env.sub("t", "g", GroupOptions::new().prefetch(1)).await;
    let b = env.sub("t", "g", GroupOptions::new()).await;
    let first = recv(&a).await;
    let (got, acked) = within(future::zip(b.recv(), async {
        future::yield_now().await;
        first.ack().await
    }))
    .await;
    acked.unwrap();
    assert_eq!(got.unwrap().seq(), 2);
}

/// Dropping a subscription that holds a message wakes the consumer waiting
/// for it (I6), with no clock movement.
pub async fn drop_wakes_waiting_receive<F: Factory>(f: &F) {
    let env = Env::new(f, "wake_on_drop").await;
    env.publish_n("t", 0, 1).await;
    let a = env.sub("t", "g", GroupOptions::new()).await;
    let b = env.sub("t", "g", GroupOptions::new()).await;
    let held = recv(&a).await;
    let (got, ()) = within(future::zip(b.recv(), async {
        future::yield_now().await;
        drop(a);
    }))
    .await;
    let got = got.unwrap();
    assert_eq!((got.seq(), got.attempt()), (held.seq(), 2));
}

/// I11: a `recv` dropped after any poll (a deadline, a `select!`) leaves
/// nothing leased that its subscription's next `recv` would not get: no
/// delivery waits for a lease to run out (the clock never moves here).
pub async fn recv_is_cancel_safe<F: Factory>(f: &F) {
    let env = Env::new(f, "recv_cancel").await;
    let count = 24;
    env.publish_n("t", 0, count).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let mut got = Vec::new();
    for i in 0..count {
        // Deadlines of 0 to 5 ms, the first of each six cut after one poll.
        if let Some(d) = cancelled_recv(&sub, (i % 6) as u64).await {
            got.push((d.seq(), d.attempt()));
            d.ack().await.unwrap();
            continue;
        }
        let d = recv(&sub).await;
        got.push((d.seq(), d.attempt()));
        d.ack().await.unwrap();
    }
    let seqs: Vec<u64> = got.iter().map(|&(seq, _)| seq).collect();
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), count, "each message once: {got:?}");
    assert!(got.iter().all(|&(_, attempt)| attempt == 1), "{got:?}");
    none(&sub).await;

    // A subscription dropped after a cut `recv` gives the message to
    // another one at once.
    env.publish_n("t", count, 1).await;
    let first = env.sub("t", "g", GroupOptions::new()).await;
    // On a driver whose claims finish in one poll, the cut `recv` got it.
    drop(cancelled_recv(&first, 0).await);
    drop(first);
    let other = env.sub("t", "g", GroupOptions::new()).await;
    let d = recv(&other).await;
    assert_eq!(text(&d), format!("t-{count}"));
}

/// A `recv` cut after one poll (`ms` = 0) or by a deadline of `ms`
/// milliseconds; the delivery if it came first.
async fn cancelled_recv(sub: &Subscription, ms: u64) -> Option<Delivery> {
    let receive = async { Some(sub.recv().await.expect("recv")) };
    if ms == 0 {
        return future::poll_once(Box::pin(receive)).await.flatten();
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use litebus::Clock;
        future::or(receive, async {
            litebus::StdClock.sleep(Duration::from_millis(ms)).await;
            None
        })
        .await
    }
    #[cfg(target_arch = "wasm32")]
    {
        future::poll_once(Box::pin(receive)).await.flatten()
    }
}

/// I11 under load: four consumers of one group whose `recv`s are cut at
/// random (after one poll, or by deadlines of 1 to 5 ms) while the acks of
/// each one's batch run side by side, over 20,000 messages (`LITEBUS_STRESS`
/// sets another count). Every message is acked exactly once, at its first
/// attempt (the clock never moves, so nothing comes back by a lease running
/// out), and the run fails if no ack lands for 10 s: a stall, not slowness.
/// The topic is under `Retention::until_consumed`, so the acks' prune steps
/// run among the receives (I15): none takes a message before it is acked,
/// and at the end none is left.
pub async fn competing_cut_receives_lose_nothing<F: Factory>(f: &F) {
    let env = Env::new(f, "cut_competing").await;
    let count = stress_count();
    for start in (0..count).step_by(500) {
        let batch = (start..count.min(start + 500)).map(|i| msg("t", i));
        env.bus.publish_batch("t", batch).await.unwrap();
    }
    let mut consumers = Vec::new();
    for _ in 0..4 {
        consumers.push(env.sub("t", "g", shared(1000).prefetch(8)).await);
    }
    let consumed = litebus::Retention::new().until_consumed();
    env.bus.set_retention("t", consumed).await.unwrap();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(u64, u32)>::new()));
    let progress = Arc::new(AtomicU64::new(0));
    let work: Vec<BoxFuture<'_, ()>> = consumers
        .iter()
        .enumerate()
        .map(|(n, sub)| {
            let (acked, progress) = (acked.clone(), progress.clone());
            let future: BoxFuture<'_, ()> = Box::pin(async move {
                let mut random = 0x9e37_79b9_7f4a_7c15_u64 ^ (n as u64 + 1);
                let mut batch = Vec::new();
                while (progress.load(Ordering::Acquire) as usize) < count {
                    random ^= random << 13;
                    random ^= random >> 7;
                    random ^= random << 17;
                    let cut = match cancelled_recv(sub, random % 6).await {
                        Some(d) => Some(d),
                        // After a cut, this consumer's next look gets what
                        // the cut one leased; one without a deadline waits.
                        None => sub.try_recv().await.expect("try_recv"),
                    };
                    if let Some(d) = cut {
                        batch.push(d);
                    }
                    if batch.len() > (random as usize >> 8) % 8
                        || cut_is_idle(&batch, &progress, count)
                    {
                        let settled: Vec<BoxFuture<'_, (u64, u32)>> = batch
                            .iter()
                            .map(|d| {
                                let f: BoxFuture<'_, (u64, u32)> = Box::pin(async move {
                                    d.ack().await.expect("ack");
                                    (d.seq(), d.attempt())
                                });
                                f
                            })
                            .collect();
                        let done = join_all(settled).await;
                        progress.fetch_add(done.len() as u64, Ordering::AcqRel);
                        acked.lock().unwrap().extend(done);
                        batch.clear();
                    }
                    // Lets the other consumers in: on storage that never
                    // waits, a loop that is always ready would otherwise run
                    // to the end in one poll, alone.
                    future::yield_now().await;
                }
            });
            future
        })
        .collect();
    future::or(
        async {
            join_all(work).await;
        },
        stall_watch(&progress, count),
    )
    .await;
    let acked = acked.lock().unwrap().clone();
    let seqs: BTreeSet<u64> = acked.iter().map(|&(seq, _)| seq).collect();
    assert_eq!(acked.len(), count, "each message acked once");
    assert_eq!(seqs.len(), count, "no message acked twice");
    assert!(acked.iter().all(|&(_, attempt)| attempt == 1));
    for sub in &consumers {
        none(sub).await;
    }
    env.bus.prune("t").await.unwrap();
    let stats = env.bus.stats("t").await.unwrap();
    assert_eq!(stats.messages, 0, "every message went once acked");
    assert_eq!(stats.groups[0].pruned, 0, "none went before its ack");
}

/// Whether a consumer holding `batch` should ack it now: the messages left
/// may all be in batches like it.
fn cut_is_idle(batch: &[Delivery], progress: &AtomicU64, count: usize) -> bool {
    !batch.is_empty() && progress.load(Ordering::Acquire) as usize + 64 >= count
}

fn stress_count() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(count) = std::env::var("LITEBUS_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return count;
    }
    20_000
}

/// Completes never; panics when `progress` stands still for 10 s of real
/// time before reaching `count`.
async fn stall_watch(progress: &AtomicU64, count: usize) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use litebus::Clock;
        let mut last = (progress.load(Ordering::Acquire), std::time::Instant::now());
        loop {
            litebus::StdClock.sleep(Duration::from_millis(100)).await;
            let now = progress.load(Ordering::Acquire);
            if now != last.0 {
                last = (now, std::time::Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(10) {
                panic!("stalled: {now} of {count} acked, nothing for 10 s");
            }
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (progress, count);
        future::pending::<()>().await;
    }
}

/// Wake-ups are counted, not lost: with three consumers of one group
/// waiting (prefetch 1), a batch of three wakes all three, and so do three
/// single publishes made while they wait.
pub async fn each_new_message_wakes_a_waiting_consumer<F: Factory>(f: &F) {
    let env = Env::new(f, "wake_counted").await;
    let subs = [
        env.sub("t", "g", shared(10).prefetch(1)).await,
        env.sub("t", "g", shared(10).prefetch(1)).await,
        env.sub("t", "g", shared(10).prefetch(1)).await,
    ];
    for round in 0..2 {
        let receives: Vec<BoxFuture<'_, Delivery>> = subs
            .iter()
            .map(|sub| {
                let f: BoxFuture<'_, Delivery> = Box::pin(async move { sub.recv().await.unwrap() });
                f
            })
            .collect();
        let (got, ()) = within(future::zip(join_all(receives), async {
            future::yield_now().await;
            if round == 0 {
                env.bus
                    .publish_batch("t", (0..3).map(|i| msg("t", i)))
                    .await
                    .unwrap();
            } else {
                env.publish_n("t", 3, 3).await;
            }
        }))
        .await;
        let mut seqs: Vec<u64> = got.iter().map(Delivery::seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 3, "one message each, round {round}");
        for d in got {
            d.ack().await.unwrap();
        }
    }
}

/// I11: a publish dropped after the store ran it (its caller stopped
/// waiting for the answer) still wakes the consumers waiting for it: the
/// store wakes them when it commits, not the caller.
pub async fn a_publish_cut_after_it_ran_still_wakes_waiters<F: Factory>(f: &F) {
    let env = Env::new(f, "wake_cut_publish").await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    none(&sub).await;
    let (got, ()) = within(future::zip(sub.recv(), async {
        future::yield_now().await;
        let mut publish = Box::pin(env.bus.publish("t", msg("t", 0)));
        if future::poll_once(&mut publish).await.is_none() {
            // Until the store holds it (a call queued after it runs after
            // it), then the caller leaves without its answer.
            while env.bus.stats("t").await.unwrap().messages == 0 {
                future::yield_now().await;
            }
        }
        drop(publish);
    }))
    .await;
    assert_eq!(text(&got.unwrap()), "t-0");
}

/// A consumer waiting caught up gets a new message leased in the
/// publish's own step (a hand-off): when the publish returns, the message
/// is in flight already, and the consumer's `recv` returns it without a
/// claim of its own, at attempt 1. An ordered group's consumer gets the
/// next messages of the batch read ahead with it; a per-key group's gets
/// the first of the key, the second waits behind it. (A driver that watches
/// other processes wakes a waiting consumer once when its watch starts, so
/// the consumer may be between two looks when the publish comes: tried a
/// few times, it must happen at least once.)
pub async fn a_waiting_consumer_gets_new_messages_in_the_publish_step<F: Factory>(f: &F) {
    let env = Env::new(f, "handoff").await;
    for (order, options, in_flight) in [
        ("shared", shared(10).prefetch(4), 2),
        ("ordered", GroupOptions::new().prefetch(4), 1),
        // One key: the second waits behind the first.
        (
            "per-key",
            GroupOptions::new().order(Order::PerKey).prefetch(4),
            1,
        ),
    ] {
        let mut handed = 0;
        for attempt in 0..5 {
            let topic = format!("{order}-{attempt}");
            let topic = topic.as_str();
            let sub = env.sub(topic, "g", options.clone()).await;
            none(&sub).await;
            let mut waiting = Box::pin(sub.recv());
            // Polled until it waits: its claim (which may run on a
            // driver's own task: a call queued after it returns after it)
            // found nothing.
            for _ in 0..3 {
                assert!(
                    future::poll_once(&mut waiting).await.is_none(),
                    "{topic}: nothing yet"
                );
                env.bus.stats(topic).await.unwrap();
            }
            let keyed = |i| msg(topic, i).with_key("k");
            env.bus
                .publish_batch(topic, [keyed(0), keyed(1)])
                .await
                .unwrap();
            let stats = group_stats(&env.bus, topic, "g").await;
            if (stats.in_flight, stats.ready) == (in_flight, 2 - in_flight) {
                handed += 1;
            }
            let first = within(waiting).await.unwrap();
            assert_eq!((text(&first), first.attempt()), (format!("{topic}-0"), 1));
            first.ack().await.unwrap();
            let second = some(&sub).await;
            assert_eq!((text(&second), second.attempt()), (format!("{topic}-1"), 1));
            second.ack().await.unwrap();
            none(&sub).await;
            if handed > 0 {
                break;
            }
        }
        assert!(handed > 0, "{order}: never leased by the publish");
    }
}

/// I11: an ack dropped after the store ran it (its caller stopped waiting
/// for the answer) still wakes a consumer waiting for the ordered group it
/// held: the store wakes it when it commits, not the caller.
pub async fn an_ack_cut_after_it_ran_still_wakes_waiters<F: Factory>(f: &F) {
    let env = Env::new(f, "wake_cut_ack").await;
    let seqs = env.publish_n("t", 0, 2).await;
    // Prefetch 1: `a` reads nothing ahead, so its ack lets the group go.
    let a = env.sub("t", "g", GroupOptions::new().prefetch(1)).await;
    let b = env.sub("t", "g", GroupOptions::new()).await;
    let held = recv(&a).await;
    let (got, ()) = within(future::zip(b.recv(), async {
        future::yield_now().await;
        let mut ack = Box::pin(held.ack());
        if future::poll_once(&mut ack).await.is_none() {
            // Until the store has it, then the caller leaves without its
            // answer.
            while group_stats(&env.bus, "t", "g").await.acked_floor < seqs[0] {
                future::yield_now().await;
            }
        }
        drop(ack);
    }))
    .await;
    assert_eq!(text(&got.unwrap()), "t-1");
}
