//! Watermill's acceptance list (`pubsub/tests`), case by case: what a
//! publisher and its subscribers expect of any backend.

use crate::prelude::*;

/// Watermill `TestPublishSubscribe`: what is published is received, in order, once.
pub async fn publish_subscribe<F: Factory>(f: &F) {
    let env = Env::new(f, "publish_subscribe").await;
    env.publish_n("t", 0, 10).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    assert_eq!(receive_all(&sub, 10).await, names("t", 0..10));
    none(&sub).await;
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (stats.ready, stats.in_flight, stats.acked_floor),
        (0, 0, 10)
    );
}

/// A subscription is a `Stream` of deliveries that ends when the bus closes.
pub async fn subscription_is_a_stream<F: Factory>(f: &F) {
    use futures_lite::StreamExt;
    let env = Env::new(f, "stream").await;
    env.publish_n("t", 0, 3).await;
    let mut sub = env.sub("t", "g", GroupOptions::new()).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = within(sub.next())
            .await
            .expect("a delivery")
            .expect("no error");
        got.push(text(&d));
        d.ack().await.unwrap();
    }
    assert_eq!(got, names("t", 0..3));
    assert!(format!("{sub:?}").contains("group: \"g\""));
    env.bus.close().await.unwrap();
    assert!(within(sub.next()).await.is_none());
}

/// Watermill `TestConcurrentSubscribe`: competing consumers of one group
/// together receive every message exactly once.
pub async fn concurrent_subscribe<F: Factory>(f: &F) {
    let env = Env::new(f, "concurrent_subscribe").await;
    env.publish_n("t", 0, 100).await;
    let mut subs = Vec::new();
    for _ in 0..5 {
        subs.push(env.sub("t", "g", shared(100).prefetch(7)).await);
    }
    let total = Arc::new(AtomicU64::new(0));
    let workers: Vec<BoxFuture<'_, Vec<u64>>> = subs
        .iter()
        .map(|sub| {
            let total = total.clone();
            Box::pin(async move {
                let mut seen = Vec::new();
                while total.load(Ordering::SeqCst) < 100 {
                    match sub.try_recv().await.expect("try_recv") {
                        Some(d) => {
                            seen.push(d.seq());
                            d.ack().await.expect("ack");
                            total.fetch_add(1, Ordering::SeqCst);
                            future::yield_now().await;
                        }
                        None => future::yield_now().await,
                    }
                }
                seen
            }) as BoxFuture<'_, Vec<u64>>
        })
        .collect();
    let per_worker = within(join_all(workers)).await;
    let mut all: Vec<u64> = per_worker.concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=100).collect::<Vec<_>>(),
        "each message exactly once"
    );
    assert!(
        per_worker.iter().filter(|w| !w.is_empty()).count() > 1,
        "work was shared"
    );
}

/// Watermill `TestConcurrentSubscribeMultipleTopics`: consumers of many topics
/// at once each get exactly their topic's messages, in order.
pub async fn concurrent_subscribe_multiple_topics<F: Factory>(f: &F) {
    let env = Env::new(f, "multiple_topics").await;
    let topics: Vec<String> = (0..5).map(|i| format!("topic-{i}")).collect();
    let mut subs = Vec::new();
    for t in &topics {
        subs.push(env.sub(t, "g", GroupOptions::new()).await);
    }
    let consumers: Vec<BoxFuture<'_, Vec<String>>> = subs
        .iter()
        .map(|s| Box::pin(receive_all(s, 20)) as BoxFuture<'_, _>)
        .collect();
    let publishers: Vec<BoxFuture<'_, Vec<String>>> = topics
        .iter()
        .map(|t| {
            let env = &env;
            Box::pin(async move {
                for i in 0..20 {
                    env.publish_n(t, i, 1).await;
                    future::yield_now().await;
                }
                Vec::new()
            }) as BoxFuture<'_, _>
        })
        .collect();
    let results = within(join_all(consumers.into_iter().chain(publishers).collect())).await;
    for (t, got) in topics.iter().zip(results) {
        assert_eq!(got, names(t, 0..20));
    }
}

/// Watermill `TestResendOnError`: a nacked message comes back, attempt 2.
pub async fn resend_on_nack<F: Factory>(f: &F) {
    let env = Env::new(f, "resend_on_nack").await;
    env.publish_n("t", 0, 2).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let d = recv(&sub).await;
    assert_eq!((d.seq(), d.attempt()), (1, 1));
    d.nack(NackOptions::new()).await.unwrap();
    let again = recv(&sub).await;
    assert_eq!(
        (again.seq(), again.attempt(), text(&again)),
        (1, 2, "t-0".into())
    );
    again.ack().await.unwrap();
    assert_eq!((recv(&sub).await.seq()), 2);
}

/// Watermill `TestNoAck`: in an ordered group, nothing after an unacked
/// message is handed out, to any consumer.
pub async fn no_ack_blocks_next_in_ordered<F: Factory>(f: &F) {
    let env = Env::new(f, "no_ack").await;
    env.publish_n("t", 0, 2).await;
    // Prefetch 1: `a` reads nothing ahead, so its ack lets the group go.
    let a = env.sub("t", "g", GroupOptions::new().prefetch(1)).await;
    let b = env.sub("t", "g", GroupOptions::new()).await;
    let first = recv(&a).await;
    none(&a).await;
    none(&b).await;
    first.ack().await.unwrap();
    assert_eq!(some(&b).await.seq(), 2);
}

/// Watermill `TestContinueAfterSubscribeClose`: another consumer continues
/// where a closed one stopped; its unacked delivery comes back.
pub async fn continue_after_subscription_close<F: Factory>(f: &F) {
    let env = Env::new(f, "continue_after_close").await;
    env.publish_n("t", 0, 10).await;
    let a = env.sub("t", "g", GroupOptions::new()).await;
    assert_eq!(receive_all(&a, 5).await, names("t", 0..5));
    let held = recv(&a).await;
    assert_eq!(held.seq(), 6);
    a.close().await.unwrap();
    assert!(held.ack().await.unwrap_err().is_lease_lost());
    let b = env.sub("t", "g", GroupOptions::new()).await;
    let again = recv(&b).await;
    assert_eq!((again.seq(), again.attempt()), (6, 2));
    again.ack().await.unwrap();
    assert_eq!(receive_all(&b, 4).await, names("t", 6..10));
}

/// Watermill `TestConcurrentClose`: closing many consumers at once loses nothing.
pub async fn concurrent_close<F: Factory>(f: &F) {
    let env = Env::new(f, "concurrent_close").await;
    env.publish_n("t", 0, 30).await;
    let mut subs = Vec::new();
    for _ in 0..10 {
        let s = env.sub("t", "g", shared(100).prefetch(2)).await;
        let d = recv(&s).await;
        assert_eq!(d.attempt(), 1);
        subs.push((s, d));
    }
    let closes: Vec<BoxFuture<'_, Result<()>>> = subs
        .into_iter()
        .map(|(s, _d)| Box::pin(s.close()) as BoxFuture<'_, _>)
        .collect();
    for r in within(join_all(closes)).await {
        r.unwrap();
    }
    let last = env.sub("t", "g", shared(100).prefetch(30)).await;
    let mut seqs = BTreeSet::new();
    for _ in 0..30 {
        let d = recv(&last).await;
        d.ack().await.unwrap();
        assert!(seqs.insert(d.seq()), "seq {} twice", d.seq());
    }
    assert_eq!(seqs.len(), 30);
    none(&last).await;
}

/// Watermill `TestContinueAfterErrors`: repeated failures, then success, then
/// the next message.
pub async fn continue_after_errors<F: Factory>(f: &F) {
    let env = Env::new(f, "continue_after_errors").await;
    env.publish_n("t", 0, 2).await;
    let sub = env.sub("t", "g", GroupOptions::new().max_attempts(5)).await;
    for attempt in 1..=4 {
        let d = recv(&sub).await;
        assert_eq!((d.seq(), d.attempt()), (1, attempt));
        if attempt < 4 {
            d.nack(NackOptions::new().with_reason("boom"))
                .await
                .unwrap();
        } else {
            d.ack().await.unwrap();
        }
    }
    assert_eq!(recv(&sub).await.seq(), 2);
    assert_eq!(group_stats(&env.bus, "t", "g").await.dead_lettered, 0);
}

/// Watermill `TestPublishSubscribeInOrder`: single and batch publishes
/// arrive in publish order.
pub async fn publish_subscribe_in_order<F: Factory>(f: &F) {
    let env = Env::new(f, "in_order").await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    env.publish_n("t", 0, 10).await;
    env.bus
        .publish_batch("t", (10..30).map(|i| msg("t", i)))
        .await
        .unwrap();
    env.publish_n("t", 30, 10).await;
    assert_eq!(receive_all(&sub, 40).await, names("t", 0..40));
}

/// Watermill `TestPublisherClose`: closing the bus ends waiting receives and
/// refuses every later call with `Closed`.
pub async fn bus_close_ends_waits_and_refuses_calls<F: Factory>(f: &F) {
    let env = Env::new(f, "bus_close").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let held = recv(&sub).await;
    let waiting = env
        .sub("t", "other", GroupOptions::new().start(Start::End))
        .await;
    assert!(!env.bus.is_closed());
    let (waited, closed) = within(future::zip(waiting.recv(), async {
        future::yield_now().await;
        env.bus.close().await
    }))
    .await;
    closed.unwrap();
    assert!(waited.unwrap_err().is_closed());
    assert!(env.bus.is_closed());
    assert!(
        env.bus
            .publish("t", Message::new("x"))
            .await
            .unwrap_err()
            .is_closed()
    );
    assert!(
        env.bus
            .subscribe("t", "g", GroupOptions::new())
            .await
            .unwrap_err()
            .is_closed()
    );
    assert!(env.bus.stats("t").await.unwrap_err().is_closed());
    assert!(env.bus.listen("t").unwrap_err().is_closed());
    assert!(held.ack().await.unwrap_err().is_closed());
    assert!(sub.try_recv().await.unwrap_err().is_closed());
    let mut stream = sub;
    assert!(
        within(futures_lite::StreamExt::next(&mut stream))
            .await
            .is_none()
    );
    env.bus.close().await.expect("closing twice is harmless");
}

/// Watermill `TestTopic`: topics are independent (I9).
pub async fn topic_isolation<F: Factory>(f: &F) {
    let env = Env::new(f, "topic_isolation").await;
    env.publish_n("a", 0, 3).await;
    env.publish_n("b", 0, 2).await;
    let sa = env.sub("a", "g", GroupOptions::new()).await;
    let sb = env.sub("b", "g", GroupOptions::new()).await;
    assert_eq!(receive_all(&sa, 3).await, names("a", 0..3));
    assert_eq!(receive_all(&sb, 2).await, names("b", 0..2));
    none(&sa).await;
    none(&sb).await;
    assert_eq!(env.bus.stats("a").await.unwrap().messages, 3);
    assert_eq!(env.bus.stats("b").await.unwrap().messages, 2);
}

/// Watermill `TestSubscribeCtx`: dropping a pending receive loses nothing, and
/// dropping a subscription gives its prefetched deliveries back (I6).
pub async fn cancellation_by_drop<F: Factory>(f: &F) {
    let env = Env::new(f, "cancellation_by_drop").await;
    let sub = env.sub("t", "g", shared(10).prefetch(5)).await;
    {
        let mut pending = Box::pin(sub.recv());
        assert!(
            future::poll_once(&mut pending).await.is_none(),
            "nothing to receive yet"
        );
    }
    env.publish_n("t", 0, 5).await;
    let d = recv(&sub).await;
    assert_eq!((d.seq(), d.attempt()), (1, 1));
    drop(sub);
    let other = env.sub("t", "g", shared(10).prefetch(5)).await;
    let mut seqs = Vec::new();
    for _ in 0..5 {
        let d = recv(&other).await;
        assert_eq!(d.attempt(), if d.seq() == 1 { 2 } else { d.attempt() });
        seqs.push(d.seq());
        d.ack().await.unwrap();
    }
    seqs.sort_unstable();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
}

/// Watermill `TestNewSubscriberReceivesOldMessages`.
pub async fn new_subscriber_receives_old_messages<F: Factory>(f: &F) {
    let env = Env::new(f, "old_messages").await;
    env.publish_n("t", 0, 5).await;
    let sub = env.sub("t", "late", GroupOptions::new()).await;
    assert_eq!(receive_all(&sub, 5).await, names("t", 0..5));
}

/// Watermill `TestConsumerGroups`: every group gets every message, consumers
/// inside a group share them.
pub async fn consumer_groups<F: Factory>(f: &F) {
    let env = Env::new(f, "consumer_groups").await;
    let g1a = env.sub("t", "g1", shared(10).prefetch(1)).await;
    let g1b = env.sub("t", "g1", shared(10).prefetch(1)).await;
    let g2 = env.sub("t", "g2", GroupOptions::new()).await;
    env.publish_n("t", 0, 4).await;
    let x = recv(&g1a).await;
    let y = recv(&g1b).await;
    assert_ne!(x.seq(), y.seq());
    x.ack().await.unwrap();
    y.ack().await.unwrap();
    let mut g1 = vec![x.seq(), y.seq()];
    for sub in [&g1a, &g1b] {
        let d = recv(sub).await;
        g1.push(d.seq());
        d.ack().await.unwrap();
    }
    g1.sort_unstable();
    assert_eq!(g1, vec![1, 2, 3, 4]);
    assert_eq!(receive_all(&g2, 4).await, names("t", 0..4));
}
