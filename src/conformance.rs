//! The conformance suite every driver runs on itself (feature `conformance`).
//!
//! Each case is a public async function that panics when the driver breaks
//! the contract of `docs/design.md`; it names the invariant it checks. Time
//! is a [`ManualClock`], so no case depends on the machine's speed.
//! [`conformance_tests!`](crate::conformance_tests) expands every case into a
//! `#[test]` inside a module named `conformance`:
//!
//! ```
//! litebus::conformance_tests!(
//!     factory: litebus::conformance::MemoryFactory::default(),
//!     run: |case| futures_lite::future::block_on(case),
//! );
//! ```
//!
//! A driver provides a [`Factory`]: it opens a driver on a named store, and
//! opening the same name again must reopen the same store.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_lite::future;

use crate::clock::lock;
use crate::driver::{BoxFuture, MaybeSendSync, dead_letter_keys};
use crate::{
    Bus, BusOptions, Capabilities, Delivery, Driver, Error, GroupOptions, Live, ManualClock,
    MemoryDriver, Message, NackOptions, NameKind, Order, Outcome, Result, Start, Subscription,
    Timestamp,
};

/// Opens drivers for the suite.
pub trait Factory: MaybeSendSync {
    /// The driver under test.
    type Driver: Driver;

    /// What the driver can do.
    fn capabilities(&self) -> Capabilities;

    /// Opens a driver on the store called `store`: a new, empty store the
    /// first time, the same store (as the last driver left it) after.
    fn open<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<Self::Driver>>;

    /// Runs plain SQL on the store `store` (opened before), as an
    /// application would beside the bus: on a connection of its own, or on
    /// the driver's where the store has only one. `None` (the default) for
    /// stores that have no SQL; the cases about rows written by plain SQL
    /// (I12) then do not apply.
    fn run_sql<'a>(&'a self, store: &'a str, sql: &'a str) -> Option<BoxFuture<'a, Result<()>>> {
        let _ = (store, sql);
        None
    }
}

/// The [`Factory`] of [`MemoryDriver`]: a store name maps to one shared
/// in-memory store.
#[derive(Debug, Default)]
pub struct MemoryFactory {
    stores: Mutex<HashMap<String, MemoryDriver>>,
}

impl Factory for MemoryFactory {
    type Driver = MemoryDriver;

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    fn open<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<MemoryDriver>> {
        Box::pin(async move {
            Ok(lock(&self.stores)
                .entry(store.to_owned())
                .or_default()
                .clone())
        })
    }
}

/// A bus on a fresh store with a manual clock: the setting of every case.
pub struct Env<'f, F: Factory> {
    factory: &'f F,
    store: String,
    /// The clock of the bus.
    pub clock: ManualClock,
    /// The bus under test.
    pub bus: Bus,
}

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
/// The lease the cases use unless they say otherwise.
pub const LEASE: Duration = Duration::from_secs(10);

impl<'f, F: Factory> Env<'f, F> {
    /// Opens a bus on a new store named after `case`.
    pub async fn new(factory: &'f F, case: &str) -> Self {
        static STORES: AtomicU64 = AtomicU64::new(0);
        let store = format!("{case}-{}", STORES.fetch_add(1, Ordering::Relaxed));
        let clock = ManualClock::new(T0);
        let bus = open_bus(factory, &store, &clock).await;
        Env {
            factory,
            store,
            clock,
            bus,
        }
    }

    /// Closes the bus and opens a new one on the same store.
    pub async fn reopen(&mut self) {
        self.bus.close().await.expect("close");
        self.bus = open_bus(self.factory, &self.store, &self.clock).await;
    }

    /// Subscribes with the suite's lease.
    pub async fn sub(&self, topic: &str, group: &str, options: GroupOptions) -> Subscription {
        self.bus
            .subscribe(topic, group, options.lease(LEASE))
            .await
            .expect("subscribe")
    }

    /// Publishes `count` messages `<topic>-<i>` (ids the same) one by one.
    pub async fn publish_n(&self, topic: &str, from: usize, count: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        for i in from..from + count {
            let outcome = self
                .bus
                .publish(topic, msg(topic, i))
                .await
                .expect("publish");
            assert!(!outcome.is_duplicate(), "fresh id reported as duplicate");
            seqs.push(outcome.seq());
        }
        seqs
    }

    /// Advances the clock.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Runs plain SQL on the store ([`Factory::run_sql`]); `None` when the
    /// store has no SQL.
    pub async fn sql(&self, sql: &str) -> Option<()> {
        let run = self.factory.run_sql(&self.store, sql)?;
        run.await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        Some(())
    }
}

async fn open_bus<F: Factory>(factory: &F, store: &str, clock: &ManualClock) -> Bus {
    let driver = factory.open(store).await.expect("open driver");
    Bus::open(driver, BusOptions::new().clock(clock.clone())).expect("open bus")
}

/// The message number `i` of `topic`: payload and id `<topic>-<i>`.
pub fn msg(topic: &str, i: usize) -> Message {
    Message::new(format!("{topic}-{i}")).with_id(format!("{topic}-{i}"))
}

/// The payload of a delivery as text.
pub fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(d.message().payload()).into_owned()
}

/// Runs `f`, failing if it takes more than 5 s of real time: a wait that
/// never ends means a lost wake-up.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use crate::Clock;
        future::or(async { Some(f.await) }, async {
            crate::StdClock.sleep(Duration::from_secs(5)).await;
            None
        })
        .await
        .expect("timed out: a wake-up was lost")
    }
    #[cfg(target_arch = "wasm32")]
    {
        f.await
    }
}

async fn recv(sub: &Subscription) -> Delivery {
    within(sub.recv()).await.expect("recv")
}

async fn none(sub: &Subscription) {
    let got = sub.try_recv().await.expect("try_recv");
    assert!(got.is_none(), "expected nothing deliverable, got {got:?}");
}

async fn some(sub: &Subscription) -> Delivery {
    sub.try_recv()
        .await
        .expect("try_recv")
        .expect("expected a deliverable message")
}

async fn receive_all(sub: &Subscription, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        let d = recv(sub).await;
        got.push(text(&d));
        d.ack().await.expect("ack");
    }
    got
}

fn names(topic: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{topic}-{i}")).collect()
}

/// Polls every future to completion on the current task (no spawning).
pub async fn join_all<T>(futures: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    let mut slots: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut futures: Vec<Option<BoxFuture<'_, T>>> = futures.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, fut) in slots.iter_mut().zip(futures.iter_mut()) {
            if let Some(f) = fut {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *slot = Some(v);
                        *fut = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().map(|s| s.expect("completed")).collect()
}

fn shared(max_in_flight: u32) -> GroupOptions {
    GroupOptions::new().order(Order::Shared { max_in_flight })
}

async fn group_stats(bus: &Bus, topic: &str, group: &str) -> crate::GroupStats {
    bus.stats(topic)
        .await
        .expect("stats")
        .groups
        .into_iter()
        .find(|g| g.group == group)
        .expect("group in stats")
}

// ---------------------------------------------------------------- Watermill

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
    let a = env.sub("t", "g", GroupOptions::new()).await;
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

// ---------------------------------------------------------------- I1

/// I1: seqs strictly increase across single and batch publishes.
pub async fn i1_seq_strictly_increases<F: Factory>(f: &F) {
    let env = Env::new(f, "i1_seq").await;
    let mut seqs = env.publish_n("t", 0, 20).await;
    for outcome in env
        .bus
        .publish_batch("t", (20..40).map(|i| msg("t", i)))
        .await
        .unwrap()
    {
        seqs.push(outcome.seq());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(
        env.bus.stats("t").await.unwrap().last_seq,
        *seqs.last().unwrap()
    );
}

/// I1: a batch with one bad message stores nothing.
pub async fn i1_batch_is_all_or_nothing<F: Factory>(f: &F) {
    let env = Env::new(f, "i1_atomic").await;
    env.publish_n("t", 0, 1).await;
    let big = Message::new(vec![0u8; 1024 * 1024 + 1]).with_id("big");
    let batch = vec![msg("t", 1), msg("t", 2), big, msg("t", 3)];
    let err = env.bus.publish_batch("t", batch).await.unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
    assert_eq!(env.bus.stats("t").await.unwrap().last_seq, 1);
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    assert_eq!(receive_all(&sub, 1).await, names("t", 0..1));
    none(&sub).await;
    // The same ids are still free.
    assert!(
        !env.bus
            .publish("t", msg("t", 1))
            .await
            .unwrap()
            .is_duplicate()
    );
}

/// I1: a batch's messages get increasing seqs in batch order.
pub async fn i1_batch_seqs_follow_batch_order<F: Factory>(f: &F) {
    let env = Env::new(f, "i1_batch_order").await;
    let outcomes = env
        .bus
        .publish_batch("t", (0..50).map(|i| msg("t", i)))
        .await
        .unwrap();
    let seqs: Vec<u64> = outcomes.iter().map(|o| o.seq()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    for (i, seq) in seqs.iter().enumerate() {
        let d = recv(&sub).await;
        assert_eq!((d.seq(), text(&d)), (*seq, format!("t-{i}")));
        d.ack().await.unwrap();
    }
}

/// I1 (event-store append): an expected last seq that does not match is a
/// `Conflict` and stores nothing.
pub async fn i1_expected_last_seq<F: Factory>(f: &F) {
    let env = Env::new(f, "i1_expected").await;
    let first = env
        .bus
        .publish_batch_expecting("t", 0, [msg("t", 0)])
        .await
        .unwrap();
    assert_eq!(first[0].seq(), 1);
    let err = env
        .bus
        .publish_batch_expecting("t", 0, [msg("t", 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 0,
                actual: 1
            }
        ),
        "{err}"
    );
    assert_eq!(env.bus.stats("t").await.unwrap().last_seq, 1);
    let ok = env
        .bus
        .publish_batch_expecting("t", 1, [msg("t", 1)])
        .await
        .unwrap();
    assert!(ok[0].seq() > 1);
}

// ---------------------------------------------------------------- I2

/// I2: a repeated id is `Duplicate` naming the original seq, not an error.
pub async fn i2_duplicate_names_original<F: Factory>(f: &F) {
    let env = Env::new(f, "i2_duplicate").await;
    let first = env.bus.publish("t", msg("t", 0)).await.unwrap();
    env.publish_n("t", 1, 3).await;
    let again = env
        .bus
        .publish("t", Message::new("other payload").with_id("t-0"))
        .await
        .unwrap();
    assert_eq!(again, Outcome::Duplicate { seq: first.seq() });
    assert_eq!(env.bus.stats("t").await.unwrap().messages, 4);
}

/// I2: inside one batch, the second of two equal ids is a duplicate of the first.
pub async fn i2_duplicate_inside_batch<F: Factory>(f: &F) {
    let env = Env::new(f, "i2_batch").await;
    let outcomes = env
        .bus
        .publish_batch("t", [msg("t", 0), msg("t", 1), msg("t", 0)])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Published { .. }));
    assert!(matches!(outcomes[1], Outcome::Published { .. }));
    assert_eq!(
        outcomes[2],
        Outcome::Duplicate {
            seq: outcomes[0].seq()
        }
    );
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    assert_eq!(receive_all(&sub, 2).await, names("t", 0..2));
    none(&sub).await;
}

/// I2: a duplicate of an acked message is never delivered again.
pub async fn i2_duplicate_never_delivered_again<F: Factory>(f: &F) {
    let env = Env::new(f, "i2_never_again").await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    env.publish_n("t", 0, 1).await;
    receive_all(&sub, 1).await;
    assert!(
        env.bus
            .publish("t", msg("t", 0))
            .await
            .unwrap()
            .is_duplicate()
    );
    none(&sub).await;
    let late = env.sub("t", "late", GroupOptions::new()).await;
    assert_eq!(receive_all(&late, 1).await, names("t", 0..1));
    none(&late).await;
}

/// I2: messages without an id get unique generated ids.
pub async fn i2_generated_ids_are_unique<F: Factory>(f: &F) {
    let env = Env::new(f, "i2_generated").await;
    let outcomes = env
        .bus
        .publish_batch("t", (0..50).map(|i| Message::new(format!("{i}"))))
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| !o.is_duplicate()));
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let mut ids = BTreeSet::new();
    for _ in 0..50 {
        let d = recv(&sub).await;
        assert!(!d.message().id().is_empty());
        ids.insert(d.message().id().to_owned());
        d.ack().await.unwrap();
    }
    assert_eq!(ids.len(), 50);
}

// ---------------------------------------------------------------- I3

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

// ---------------------------------------------------------------- I4

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

// ---------------------------------------------------------------- I5

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

// ---------------------------------------------------------------- I6

/// I6: a nack makes the message deliverable at once with attempt + 1.
pub async fn i6_nack_redelivers<F: Factory>(f: &F) {
    let env = Env::new(f, "i6_nack").await;
    env.publish_n("t", 0, 1).await;
    let a = env.sub("t", "g", shared(5)).await;
    let b = env.sub("t", "g", shared(5)).await;
    let d = recv(&a).await;
    d.nack(NackOptions::new()).await.unwrap();
    let again = some(&b).await;
    assert_eq!((again.seq(), again.attempt()), (1, 2));
}

/// I6: a nack delay holds the message back until the clock reaches it.
pub async fn i6_nack_delay_is_respected<F: Factory>(f: &F) {
    let env = Env::new(f, "i6_delay").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let d = recv(&sub).await;
    d.nack(NackOptions::new().with_delay(Duration::from_secs(5)))
        .await
        .unwrap();
    none(&sub).await;
    env.advance(Duration::from_millis(4_999));
    none(&sub).await;
    env.advance(Duration::from_millis(1));
    assert_eq!(some(&sub).await.attempt(), 2);
}

/// I6: an expired lease makes the message deliverable again.
pub async fn i6_lease_expiry_redelivers<F: Factory>(f: &F) {
    let env = Env::new(f, "i6_expiry").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let d = recv(&sub).await;
    env.advance(Duration::from_millis(9_999));
    none(&sub).await;
    env.advance(Duration::from_millis(1));
    let again = some(&sub).await;
    assert_eq!((again.seq(), again.attempt()), (d.seq(), 2));
}

/// I6: dropping a subscription hands its deliveries back at once.
pub async fn i6_dropped_subscription_releases<F: Factory>(f: &F) {
    let env = Env::new(f, "i6_drop").await;
    env.publish_n("t", 0, 3).await;
    let a = env.sub("t", "g", shared(10).prefetch(3)).await;
    let d = recv(&a).await;
    assert_eq!(d.attempt(), 1);
    drop(a);
    assert!(d.ack().await.unwrap_err().is_lease_lost());
    let b = env.sub("t", "g", shared(10).prefetch(3)).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = recv(&b).await;
        got.push((d.seq(), d.attempt()));
        d.ack().await.unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, vec![(1, 2), (2, 2), (3, 2)]);
}

// ---------------------------------------------------------------- I7

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
    drop(first);
    again.ack().await.unwrap();
    assert_eq!(receive_all(&a, 2).await, names("t", 1..3));
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
    let mut held = vec![some(&a).await, some(&a).await, some(&b).await];
    none(&b).await;
    none(&a).await;
    assert_eq!(group_stats(&env.bus, "t", "g").await.in_flight, 3);
    held.remove(0).ack().await.unwrap();
    held.push(some(&b).await);
    none(&b).await;
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

// ---------------------------------------------------------------- I8

/// I8: after `max_attempts` nacks the message moves to `<topic>.dlq` with its
/// last error and attempt count, and the ordered group moves on.
pub async fn i8_dead_letter_after_nacks<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_nacks").await;
    env.publish_n("t", 0, 2).await;
    let sub = env.sub("t", "g", GroupOptions::new().max_attempts(2)).await;
    let dlq = env.sub("t.dlq", "ops", GroupOptions::new()).await;
    for _ in 0..2 {
        recv(&sub)
            .await
            .nack(NackOptions::new().with_reason("bad input"))
            .await
            .unwrap();
    }
    let next = recv(&sub).await;
    assert_eq!((next.seq(), next.attempt()), (2, 1));
    let dead = recv(&dlq).await;
    let meta = dead.message().metadata();
    assert_eq!(text(&dead), "t-0");
    assert_eq!(meta[dead_letter_keys::ERROR], "bad input");
    assert_eq!(meta[dead_letter_keys::ATTEMPTS], "2");
    assert_eq!(meta[dead_letter_keys::TOPIC], "t");
    assert_eq!(meta[dead_letter_keys::GROUP], "g");
    assert_eq!(meta[dead_letter_keys::SEQ], "1");
    assert_eq!(meta[dead_letter_keys::ID], "t-0");
    assert_eq!(group_stats(&env.bus, "t", "g").await.dead_lettered, 1);
}

/// I8: a final attempt whose lease expires is dead-lettered at the next claim.
pub async fn i8_dead_letter_after_lease_expiry<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_expiry").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new().max_attempts(2)).await;
    let _first = recv(&sub).await;
    env.advance(LEASE);
    assert_eq!(some(&sub).await.attempt(), 2);
    env.advance(LEASE);
    none(&sub).await;
    let dead = env.bus.stats("t.dlq").await.unwrap();
    assert_eq!(dead.messages, 1);
    let dlq = env.sub("t.dlq", "ops", GroupOptions::new()).await;
    let d = recv(&dlq).await;
    assert_eq!(
        d.message().metadata()[dead_letter_keys::ERROR],
        crate::driver::LEASE_EXPIRED
    );
}

/// I8: a dead letter is in exactly one place: gone from its group, present once
/// in the chosen dead-letter topic, heard by its listeners.
pub async fn i8_dead_letter_is_in_one_place<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_one_place").await;
    env.publish_n("t", 0, 3).await;
    let mut hear = env.bus.listen("graveyard").unwrap();
    let sub = env
        .sub(
            "t",
            "g",
            shared(5)
                .prefetch(1)
                .max_attempts(1)
                .dead_letter("graveyard"),
        )
        .await;
    let d = recv(&sub).await;
    d.nack(NackOptions::new()).await.unwrap();
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead_lettered),
        (2, 0, 1)
    );
    assert_eq!(env.bus.stats("graveyard").await.unwrap().messages, 1);
    assert_eq!(env.bus.stats("t.dlq").await.unwrap().messages, 0);
    let Some(Ok(Live::Message { message, .. })) = hear.try_recv() else {
        panic!("the dead letter was not heard");
    };
    assert_eq!(message.payload(), d.message().payload());
    let mut rest = BTreeSet::new();
    for _ in 0..2 {
        let d = recv(&sub).await;
        rest.insert(d.seq());
        d.ack().await.unwrap();
    }
    assert!(!rest.contains(&d.seq()));
    none(&sub).await;
    assert_eq!(group_stats(&env.bus, "t", "g").await.acked_floor, 3);
}

/// I8/I9: the dead letters of two groups of one topic do not collide.
pub async fn i8_dead_letters_of_two_groups<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_two_groups").await;
    env.publish_n("t", 0, 1).await;
    for group in ["g1", "g2"] {
        let sub = env
            .sub("t", group, GroupOptions::new().max_attempts(1))
            .await;
        recv(&sub).await.nack(NackOptions::new()).await.unwrap();
    }
    assert_eq!(env.bus.stats("t.dlq").await.unwrap().messages, 2);
}

/// I8: a consumer that goes away holding a final attempt dead-letters it.
pub async fn i8_release_of_final_attempt<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_release").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new().max_attempts(1)).await;
    let _held = recv(&sub).await;
    sub.close().await.unwrap();
    assert_eq!(env.bus.stats("t.dlq").await.unwrap().messages, 1);
    assert_eq!(group_stats(&env.bus, "t", "g").await.dead_lettered, 1);
}

/// I8, I12: a dead letter always lands, even when its dead-letter topic
/// already holds a message with the id it would take (anyone may publish
/// any id there): by nack, by an expired final lease and by release.
pub async fn i8_dead_letter_lands_whatever_ids_its_topic_holds<F: Factory>(f: &F) {
    let env = Env::new(f, "i8_taken_id").await;
    let seqs = env.publish_n("t", 0, 3).await;
    for seq in &seqs {
        let forged = Message::new("forged").with_id(format!("t/g/{seq}"));
        assert!(
            !env.bus
                .publish("t.dlq", forged)
                .await
                .unwrap()
                .is_duplicate()
        );
    }
    let sub = env
        .sub("t", "g", shared(3).prefetch(1).max_attempts(1))
        .await;
    recv(&sub)
        .await
        .nack(NackOptions::new().with_reason("nacked"))
        .await
        .unwrap();
    let _expires = recv(&sub).await;
    env.advance(LEASE);
    let _released = some(&sub).await;
    sub.close().await.unwrap();
    assert_eq!(group_stats(&env.bus, "t", "g").await.dead_lettered, 3);
    assert_eq!(env.bus.stats("t.dlq").await.unwrap().messages, 6);
    let dlq = env.sub("t.dlq", "ops", GroupOptions::new()).await;
    let got = receive_all(&dlq, 6).await;
    assert_eq!(&got[..3], ["forged"; 3]);
    let mut letters = got[3..].to_vec();
    letters.sort();
    assert_eq!(letters, names("t", 0..3));
    none(&dlq).await;
}

/// Names at their longest work from the first call to the last: a 255-byte
/// topic and group subscribe with the default dead-letter topic, their dead
/// letters get ids that are valid ids (and publish again as they are), and
/// the dead-letter topic can itself be subscribed with default options.
pub async fn longest_names_work_end_to_end<F: Factory>(f: &F) {
    let env = Env::new(f, "longest_names").await;
    let topic = "t".repeat(crate::MAX_NAME_LEN);
    let group = "g".repeat(crate::MAX_NAME_LEN);
    env.bus
        .publish(&topic, Message::new("long").with_id("m"))
        .await
        .unwrap();
    let sub = env
        .sub(&topic, &group, GroupOptions::new().max_attempts(1))
        .await;
    recv(&sub).await.nack(NackOptions::new()).await.unwrap();
    let dead_letters = crate::driver::default_dead_letter_topic(&topic);
    assert!(dead_letters.len() <= crate::MAX_NAME_LEN);
    let dlq = env
        .sub(&dead_letters, &group, GroupOptions::new().max_attempts(1))
        .await;
    let letter = recv(&dlq).await;
    assert_eq!(letter.message().metadata()[dead_letter_keys::ID], "m");
    let id = letter.message().id().to_owned();
    assert!(id.len() <= crate::MAX_NAME_LEN, "{} bytes", id.len());
    let again = Message::new(letter.message().payload().to_vec()).with_id(id.clone());
    let outcome = env.bus.publish(&topic, again).await.unwrap();
    assert!(!outcome.is_duplicate());
    // The dead letter's own dead letter fits as well.
    letter.nack(NackOptions::new()).await.unwrap();
    let deeper = crate::driver::default_dead_letter_topic(&dead_letters);
    assert_eq!(env.bus.stats(&deeper).await.unwrap().messages, 1);
}

// ---------------------------------------------------------------- I9

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
    assert_eq!((sb.acked_floor, sb.dead_lettered, sb.ready), (1, 0, 2));
}

// ---------------------------------------------------------------- I10 and wake-ups

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
    let a = env.sub("t", "g", GroupOptions::new()).await;
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
        use crate::Clock;
        future::or(receive, async {
            crate::StdClock.sleep(Duration::from_millis(ms)).await;
            None
        })
        .await
    }
    #[cfg(target_arch = "wasm32")]
    {
        future::poll_once(Box::pin(receive)).await.flatten()
    }
}

/// I12, I11: rows that plain SQL wrote with wrong types, text that is not
/// UTF-8 or metadata that is not a JSON object of strings are
/// dead-lettered with the reason as they are met, in every ordering mode,
/// and the group goes on at once to the good rows after them.
pub async fn i12_rows_written_by_sql_never_stop_a_group<F: Factory>(f: &F) {
    let env = Env::new(f, "i12_foreign_rows").await;
    // (columns, values) after `topic, id`. (Text that is not UTF-8 is
    // SQLite's; turso's `CAST(x'ff' AS TEXT)` is U+FFFD, which is text.)
    let bad_rows = [
        ("payload", "42"),
        ("payload", "1.5"),
        ("payload, deliver_at", "x'00', -1"),
        ("payload, deliver_at", "x'00', 'soon'"),
        ("payload, deliver_at", "x'00', 2.5"),
        ("payload, msg_key", "x'00', x'6b'"),
        ("payload, metadata", "x'00', CAST(x'ff' AS TEXT)"),
        ("payload, metadata", "x'00', '{not json'"),
        ("payload, metadata", "x'00', '{\"n\":1}'"),
        ("payload, metadata", "x'00', 7"),
    ];
    let modes = [
        ("ordered", GroupOptions::new()),
        ("per_key", GroupOptions::new().order(Order::PerKey)),
        ("shared", shared(4).prefetch(4)),
    ];
    for (name, options) in modes {
        let topic = format!("r.{name}");
        env.bus
            .publish(&topic, Message::new("before").with_id("before"))
            .await
            .unwrap();
        for (i, (columns, values)) in bad_rows.iter().enumerate() {
            let sql = format!(
                "INSERT INTO litebus_messages (topic, id, {columns}) \
                 VALUES ('{topic}', 'bad-{i}', {values})"
            );
            if env.sql(&sql).await.is_none() {
                return;
            }
        }
        env.sql(&format!(
            "INSERT INTO litebus_messages (topic, id, payload) VALUES ('{topic}', x'ff', x'00')"
        ))
        .await;
        env.bus
            .publish(&topic, Message::new("after").with_id("after"))
            .await
            .unwrap();
        let sub = env.sub(&topic, "g", options).await;
        assert_eq!(receive_all(&sub, 2).await, ["before", "after"], "{name}");
        none(&sub).await;
        let stats = group_stats(&env.bus, &topic, "g").await;
        assert_eq!(
            (stats.ready, stats.in_flight, stats.dead_lettered),
            (0, 0, bad_rows.len() as u64 + 1),
            "{name}"
        );
        let dlq = env
            .sub(&format!("{topic}.dlq"), "ops", shared(16).prefetch(16))
            .await;
        for _ in 0..=bad_rows.len() {
            let letter = recv(&dlq).await;
            let error = &letter.message().metadata()[dead_letter_keys::ERROR];
            assert!(
                error.starts_with("undecodable message: "),
                "{name}: {error}"
            );
            letter.ack().await.unwrap();
        }
        none(&dlq).await;
    }
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
    concurrent_subscribe(f).await;
}

// ---------------------------------------------------------------- listeners and stats

/// A listener hears messages published after it was created, in order.
pub async fn listener_hears_new_messages<F: Factory>(f: &F) {
    let env = Env::new(f, "listener_new").await;
    env.publish_n("t", 0, 2).await;
    let mut live = env.bus.listen("t").unwrap();
    env.publish_n("t", 2, 3).await;
    env.bus.publish("t", msg("t", 2)).await.unwrap();
    for i in 2..5 {
        match within(live.recv()).await.unwrap() {
            Live::Message { seq, message } => {
                assert_eq!(seq, i as u64 + 1);
                assert_eq!(message.id(), format!("t-{i}"));
            }
            Live::Lagged(n) => panic!("lagged {n}"),
        }
    }
    assert!(live.try_recv().is_none(), "a duplicate is not heard");
}

/// A slow listener loses the oldest messages and is told how many.
pub async fn listener_reports_lag<F: Factory>(f: &F) {
    let env = Env::new(f, "listener_lag").await;
    let driver = f.open(&format!("{}-small", env.store)).await.expect("open");
    let bus = Bus::open(
        driver,
        BusOptions::new()
            .clock(env.clock.clone())
            .listener_capacity(4),
    )
    .expect("bus");
    let mut live = bus.listen("t").unwrap();
    bus.publish_batch("t", (0..10).map(|i| msg("t", i)))
        .await
        .unwrap();
    assert_eq!(live.try_recv().unwrap().unwrap(), Live::Lagged(6));
    let mut seqs = Vec::new();
    while let Some(Ok(Live::Message { seq, .. })) = live.try_recv() {
        seqs.push(seq);
    }
    assert_eq!(seqs, vec![7, 8, 9, 10]);
    bus.close().await.unwrap();
    assert!(within(live.recv()).await.unwrap_err().is_closed());
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

// ---------------------------------------------------------------- bad input

/// Bad topic names are `InvalidName` and create nothing.
pub async fn bad_topic_names<F: Factory>(f: &F) {
    let env = Env::new(f, "bad_topic").await;
    let long = "x".repeat(256);
    for bad in ["", "has space", "semi;colon", "é", long.as_str(), "nul\0"] {
        let err = env.bus.publish(bad, Message::new("x")).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidName {
                    kind: NameKind::Topic,
                    ..
                }
            ),
            "{bad:?}: {err}"
        );
        let err = env
            .bus
            .subscribe(bad, "g", GroupOptions::new())
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidName {
                kind: NameKind::Topic,
                ..
            }
        ));
        assert!(env.bus.listen(bad).is_err());
        assert!(env.bus.stats(bad).await.is_err());
    }
    let longest = "x".repeat(255);
    env.bus.publish(&longest, Message::new("x")).await.unwrap();
    assert_eq!(env.bus.stats(&longest).await.unwrap().messages, 1);
}

/// Bad group names and options are refused and create no group.
pub async fn bad_group_names_and_options<F: Factory>(f: &F) {
    let env = Env::new(f, "bad_group").await;
    let err = env
        .bus
        .subscribe("t", "bad group", GroupOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidName {
                kind: NameKind::Group,
                ..
            }
        ),
        "{err}"
    );
    for options in [
        GroupOptions::new().max_attempts(0),
        GroupOptions::new().prefetch(0),
        GroupOptions::new().lease(Duration::ZERO),
        shared(0),
        GroupOptions::new().dead_letter("t"),
        GroupOptions::new().dead_letter("bad topic"),
    ] {
        assert!(
            env.bus.subscribe("t", "g", options.clone()).await.is_err(),
            "{options:?}"
        );
    }
    assert!(env.bus.stats("t").await.unwrap().groups.is_empty());
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

/// The limit bounds the whole message (payload, id, key, metadata):
/// `MessageTooLarge` over it, stored and delivered at it.
pub async fn message_too_large<F: Factory>(f: &F) {
    let env = Env::new(f, "message_limit").await;
    let max = crate::DEFAULT_MAX_MESSAGE_SIZE;
    let over = [
        Message::new(vec![1u8; max + 1]).with_id("p"),
        Message::new("x")
            .with_id("m")
            .with_metadata("big", "v".repeat(max)),
        Message::new(vec![1u8; max - 2]).with_id("k").with_key("kk"),
    ];
    for message in over {
        let size = message.size();
        let err = env.bus.publish("t", message).await.unwrap_err();
        assert!(
            matches!(err, Error::MessageTooLarge { size: s, max: m } if s == size && m == max),
            "{err}"
        );
    }
    // A generated id counts too.
    let err = env
        .bus
        .publish("t", Message::new(vec![1u8; max]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
    assert_eq!(env.bus.stats("t").await.unwrap().messages, 0);
    let at_limit = Message::new(vec![1u8; max - 10])
        .with_id("max")
        .with_key("k")
        .with_metadata("ab", "cdef");
    assert_eq!(at_limit.size(), max);
    env.bus.publish("t", at_limit.clone()).await.unwrap();
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    assert_eq!(recv(&sub).await.message(), &at_limit);
}

/// Positions and times are the same on every driver: a start after a seq
/// no store can give is refused, and a far `deliver_at` reads back as
/// [`Timestamp::MAX`].
pub async fn positions_and_times_have_one_range<F: Factory>(f: &F) {
    let env = Env::new(f, "one_range").await;
    let err = env
        .bus
        .subscribe(
            "t",
            "g",
            GroupOptions::new().start(Start::AfterSeq(u64::MAX)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions(_)), "{err}");
    let last = i64::MAX as u64;
    let late = env
        .sub(
            "t",
            "late",
            GroupOptions::new().start(Start::AfterSeq(last)),
        )
        .await;
    env.publish_n("t", 0, 1).await;
    none(&late).await;
    assert_eq!(group_stats(&env.bus, "t", "late").await.acked_floor, last);
    let far = Message::new("far")
        .with_id("far")
        .with_deliver_at(Timestamp::from_millis(u64::MAX));
    assert_eq!(far.deliver_at(), Some(Timestamp::MAX));
    env.bus.publish("u", far).await.unwrap();
    let sub = env.sub("u", "g", GroupOptions::new()).await;
    none(&sub).await;
    env.clock.set(Timestamp::MAX);
    let d = recv(&sub).await;
    assert_eq!(d.message().deliver_at(), Some(Timestamp::MAX));
    assert_eq!(d.lease_until(), Timestamp::MAX);
}

/// Bad ids, keys and metadata keys are `InvalidName` and store nothing.
pub async fn bad_ids_and_keys<F: Factory>(f: &F) {
    let env = Env::new(f, "bad_ids").await;
    let cases = [
        (
            Message::new("x").with_id("x".repeat(256)),
            NameKind::MessageId,
        ),
        (
            Message::new("x").with_id("line\nbreak"),
            NameKind::MessageId,
        ),
        (Message::new("x").with_key(""), NameKind::MessageKey),
        (
            Message::new("x").with_metadata("", "v"),
            NameKind::MetadataKey,
        ),
    ];
    for (message, kind) in cases {
        let err = env.bus.publish("t", message).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidName { kind: k, .. } if k == kind),
            "{err}"
        );
    }
    assert_eq!(env.bus.stats("t").await.unwrap().messages, 0);
    let ok = Message::new("x")
        .with_id("ünïcode id")
        .with_key("k")
        .with_metadata("a", "\n");
    env.bus.publish("t", ok.clone()).await.unwrap();
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    assert_eq!(recv(&sub).await.message(), &ok);
}

/// An empty batch stores nothing and is not an error.
pub async fn empty_batch_is_a_no_op<F: Factory>(f: &F) {
    let env = Env::new(f, "empty_batch").await;
    assert!(
        env.bus
            .publish_batch("t", Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(env.bus.stats("t").await.unwrap().last_seq, 0);
}

/// Expands every conformance case into a `#[test]` in a module named
/// `conformance`, for one driver factory and one way of running a future.
///
/// ```
/// litebus::conformance_tests!(
///     factory: litebus::conformance::MemoryFactory::default(),
///     run: |case| futures_lite::future::block_on(case),
/// );
/// ```
///
/// On wasm32, `conformance_tests!(factory: …, wasm_bindgen_test)` makes each
/// case an async `#[wasm_bindgen_test]` instead (the test crate depends on
/// `wasm-bindgen-test`), to run in a browser or node.
#[macro_export]
macro_rules! conformance_tests {
    (factory: $factory:expr, run: $run:expr $(,)?) => {
        $crate::conformance_tests!(@list native ($factory) ($run));
    };
    (factory: $factory:expr, wasm_bindgen_test $(,)?) => {
        $crate::conformance_tests!(@list wasm ($factory) ());
    };
    (@list $kind:ident ($factory:expr) ($($run:expr)?)) => {
        $crate::conformance_tests!(@cases $kind ($factory) ($($run)?) [
            publish_subscribe,
            subscription_is_a_stream,
            concurrent_subscribe,
            concurrent_subscribe_multiple_topics,
            resend_on_nack,
            no_ack_blocks_next_in_ordered,
            continue_after_subscription_close,
            concurrent_close,
            continue_after_errors,
            publish_subscribe_in_order,
            bus_close_ends_waits_and_refuses_calls,
            topic_isolation,
            cancellation_by_drop,
            new_subscriber_receives_old_messages,
            consumer_groups,
            i1_seq_strictly_increases,
            i1_batch_is_all_or_nothing,
            i1_batch_seqs_follow_batch_order,
            i1_expected_last_seq,
            i2_duplicate_names_original,
            i2_duplicate_inside_batch,
            i2_duplicate_never_delivered_again,
            i2_generated_ids_are_unique,
            i3_every_group_gets_every_message,
            i3_start_positions,
            i3_state_survives_reopen,
            i4_exclusive_lease,
            i4_expired_lease_is_taken_over,
            i4_expired_lease_not_taken_can_settle,
            i5_acked_is_final,
            i5_ack_after_ack_is_lease_lost,
            i5_concurrent_acks_of_one_delivery,
            i5_extend_keeps_the_lease,
            i5_settle_after_loss_changes_nothing,
            i6_nack_redelivers,
            i6_nack_delay_is_respected,
            i6_lease_expiry_redelivers,
            i6_dropped_subscription_releases,
            i7_ordered_one_at_a_time,
            i7_per_key_fifo,
            i7_per_key_unkeyed_are_independent,
            i7_shared_max_in_flight,
            i7_prefetch_claims_a_batch,
            i8_dead_letter_after_nacks,
            i8_dead_letter_after_lease_expiry,
            i8_dead_letter_is_in_one_place,
            i8_dead_letters_of_two_groups,
            i8_release_of_final_attempt,
            i8_dead_letter_lands_whatever_ids_its_topic_holds,
            longest_names_work_end_to_end,
            i9_groups_are_independent,
            i10_clock_wakes_waiting_receive,
            i10_deliver_at,
            publish_wakes_waiting_receive,
            ack_wakes_ordered_waiter,
            drop_wakes_waiting_receive,
            recv_is_cancel_safe,
            i12_rows_written_by_sql_never_stop_a_group,
            threads_compete,
            listener_hears_new_messages,
            listener_reports_lag,
            stats_per_group,
            bad_topic_names,
            bad_group_names_and_options,
            group_settings_are_fixed,
            message_too_large,
            positions_and_times_have_one_range,
            bad_ids_and_keys,
            empty_batch_is_a_no_op,
        ]);
    };
    (@cases native ($factory:expr) ($run:expr) [$($case:ident),* $(,)?]) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $case() {
                    let factory = $factory;
                    let run = $run;
                    run($crate::conformance::$case(&factory));
                }
            )*
        }
    };
    (@cases wasm ($factory:expr) () [$($case:ident),* $(,)?]) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::wasm_bindgen_test::wasm_bindgen_test]
                async fn $case() {
                    let factory = $factory;
                    $crate::conformance::$case(&factory).await;
                }
            )*
        }
    };
}
