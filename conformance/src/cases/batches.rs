//! Large batches and large prefetches: a publish of thousands of messages
//! while consumers wait, and a claim of thousands of messages at once, in
//! the modes that lease many at once, shared and per key (a SQL store
//! splits what it writes so that no statement binds more values than
//! SQLite allows: 32,766). An ordered group leases one at a time.

use crate::prelude::*;

/// More messages than one statement could hand off with six values each
/// (a shared group's handouts; a per-key group's take seven).
const BATCH: usize = 5_500;
/// More messages than one statement could lease with three values each
/// (the attempt's time after a backoff is the third).
const PREFETCH: usize = 11_000;

/// A group of each mode that leases many at once, with room for `many`
/// in flight, prefetching as many, with a backoff.
fn wide(many: usize) -> [(&'static str, GroupOptions); 2] {
    let many = u32::try_from(many).unwrap();
    [
        ("per_key", GroupOptions::new().order(Order::PerKey)),
        ("shared", shared(many)),
    ]
    .map(|(name, options)| {
        let options = options
            .prefetch(many)
            .backoff(Backoff::fixed(Duration::from_secs(1)));
        (name, options)
    })
}

fn batch(many: usize) -> Vec<Message> {
    (0..many).map(|i| msg("wide", i)).collect()
}

/// Receives until nothing is deliverable (the deliveries stay leased: one
/// claim took them all); how many, each once, at attempt 1.
async fn drain(sub: &Subscription) -> usize {
    let mut seqs = BTreeSet::new();
    while let Some(d) = sub.try_recv().await.unwrap() {
        assert_eq!(d.attempt(), 1);
        assert!(seqs.insert(d.seq()), "{} twice", d.seq());
    }
    seqs.len()
}

/// A publish of 5,500 messages while a consumer of each group, with
/// room for them all, waits succeeds, and each consumer gets every one.
pub async fn a_large_batch_reaches_waiting_consumers<F: Factory>(f: &F) {
    let env = Env::new(f, "large_batch").await;
    let mut subs = Vec::new();
    for (name, options) in wide(BATCH) {
        subs.push((name, env.sub("wide", name, options).await));
    }
    let mut waiting: Vec<_> = subs.iter().map(|(_, sub)| Box::pin(sub.recv())).collect();
    // Each claims, finds nothing and waits (a call through the store
    // between polls lets its claim finish).
    for _ in 0..3 {
        for recv in &mut waiting {
            assert!(future::poll_once(recv).await.is_none());
        }
        env.bus.stats("wide").await.unwrap();
    }
    let published = env.bus.publish_batch("wide", batch(BATCH)).await.unwrap();
    assert_eq!(published.len(), BATCH);
    for ((name, sub), recv) in subs.iter().zip(waiting) {
        assert_eq!(within(recv).await.unwrap().attempt(), 1, "{name}");
        assert_eq!(1 + drain(sub).await, BATCH, "{name}");
    }
}

/// A consumer of each group whose prefetch takes 11,000 stored
/// messages in one claim gets every one.
pub async fn a_large_prefetch_takes_a_large_backlog<F: Factory>(f: &F) {
    let env = Env::new(f, "large_prefetch").await;
    env.bus
        .publish_batch("wide", batch(PREFETCH))
        .await
        .unwrap();
    for (name, options) in wide(PREFETCH) {
        let sub = env.sub("wide", name, options).await;
        assert_eq!(drain(&sub).await, PREFETCH, "{name}");
    }
}
