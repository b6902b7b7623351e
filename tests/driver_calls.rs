//! What the bus asks of its driver when subscriptions end: a dropped
//! subscription's leases are released once, a release that does not finish
//! at once is driven by the bus's later calls, and nothing is released twice
//! or after the bus closed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use litebus::driver::{
    Append, BoxFuture, Capabilities, Claim, ClaimOutcome, DeadLettered, Driver, EnsureGroup, Read,
    Release, Seek, Settle,
};
use std::time::Duration;

use futures_lite::StreamExt;
use futures_lite::future::poll_once;
use litebus::{
    Bus, BusOptions, DriverError, Error, GroupOptions, ManualClock, MemoryDriver, Message, Outcome,
    Record, Result, Timestamp, TopicStats,
};

/// A `MemoryDriver` that counts releases and, when asked, makes each release
/// wait for one extra poll (as a driver on a slow store would) without any
/// runtime to finish it in the background.
#[derive(Clone, Default)]
struct Recording {
    inner: MemoryDriver,
    releases: Arc<AtomicUsize>,
    released: Arc<Mutex<Vec<String>>>,
    slow_release: Arc<AtomicBool>,
    claims: Arc<AtomicUsize>,
    /// What the next claims fail with, in order.
    claim_errors: Arc<Mutex<Vec<Error>>>,
    reads: Arc<AtomicUsize>,
    /// What the next reads fail with, in order.
    read_errors: Arc<Mutex<Vec<Error>>>,
}

impl Recording {
    fn releases(&self) -> usize {
        self.releases.load(Ordering::SeqCst)
    }

    fn claims(&self) -> usize {
        self.claims.load(Ordering::SeqCst)
    }
}

impl Driver for Recording {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn append<'a>(&'a self, append: Append<'a>) -> BoxFuture<'a, Result<Vec<Outcome>>> {
        self.inner.append(append)
    }

    fn ensure_group<'a>(&'a self, group: EnsureGroup<'a>) -> BoxFuture<'a, Result<()>> {
        self.inner.ensure_group(group)
    }

    fn claim<'a>(&'a self, claim: Claim<'a>) -> BoxFuture<'a, Result<ClaimOutcome>> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.claim_errors.lock().unwrap();
        if !errors.is_empty() {
            let e = errors.remove(0);
            return Box::pin(async move { Err(e) });
        }
        self.inner.claim(claim)
    }

    fn settle<'a>(&'a self, settle: Settle<'a>) -> BoxFuture<'a, Result<Option<DeadLettered>>> {
        self.inner.settle(settle)
    }

    fn release<'a>(&'a self, release: Release<'a>) -> BoxFuture<'a, Result<Vec<DeadLettered>>> {
        let slow = self.slow_release.load(Ordering::SeqCst);
        Box::pin(async move {
            if slow {
                let mut yielded = false;
                std::future::poll_fn(|cx| {
                    if yielded {
                        Poll::Ready(())
                    } else {
                        yielded = true;
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                })
                .await;
            }
            self.releases.fetch_add(1, Ordering::SeqCst);
            self.released
                .lock()
                .unwrap()
                .push(release.consumer.to_owned());
            self.inner.release(release).await
        })
    }

    fn stats<'a>(&'a self, topic: &'a str, now: Timestamp) -> BoxFuture<'a, Result<TopicStats>> {
        self.inner.stats(topic, now)
    }

    fn seek<'a>(&'a self, seek: Seek<'a>) -> BoxFuture<'a, Result<()>> {
        self.inner.seek(seek)
    }

    fn delete_group<'a>(&'a self, topic: &'a str, group: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.inner.delete_group(topic, group)
    }

    fn redrive<'a>(
        &'a self,
        redrive: litebus::driver::Redrive<'a>,
    ) -> BoxFuture<'a, Result<Vec<u64>>> {
        self.inner.redrive(redrive)
    }

    fn topics(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        self.inner.topics()
    }

    fn delete_topic<'a>(
        &'a self,
        step: litebus::driver::DeleteTopic<'a>,
    ) -> BoxFuture<'a, Result<litebus::driver::TopicDeletion>> {
        self.inner.delete_topic(step)
    }

    fn set_retention<'a>(
        &'a self,
        topic: &'a str,
        retention: litebus::Retention,
    ) -> BoxFuture<'a, Result<()>> {
        self.inner.set_retention(topic, retention)
    }

    fn prune<'a>(&'a self, prune: litebus::driver::Prune<'a>) -> BoxFuture<'a, Result<u64>> {
        self.inner.prune(prune)
    }

    fn read<'a>(&'a self, read: Read<'a>) -> BoxFuture<'a, Result<Vec<Record>>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.read_errors.lock().unwrap();
        if !errors.is_empty() {
            let e = errors.remove(0);
            return Box::pin(async move { Err(e) });
        }
        self.inner.read(read)
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        self.inner.close()
    }
}

fn bus(driver: &Recording) -> Bus {
    bus_on(driver, &ManualClock::new(Timestamp::from_millis(1_000)))
}

fn bus_on(driver: &Recording, clock: &ManualClock) -> Bus {
    Bus::open(driver.clone(), BusOptions::new().clock(clock.clone())).unwrap()
}

#[test]
fn the_stream_pauses_after_retryable_errors_and_ends_after_a_fatal_one() {
    run(async {
        let driver = Recording::default();
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let bus = bus_on(&driver, &clock);
        bus.publish("t", Message::new("m")).await.unwrap();
        let mut sub = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
        *driver.claim_errors.lock().unwrap() = vec![
            DriverError::retryable("busy").into(),
            DriverError::retryable("busy").into(),
        ];
        let first = sub.next().await.unwrap().unwrap_err();
        assert!(first.is_retryable(), "{first}");
        assert_eq!(driver.claims(), 1);
        // 10 ms before the next look, then 20 ms: no claim in between.
        for pause in [10, 20] {
            for _ in 0..3 {
                assert!(poll_once(sub.next()).await.is_none(), "pausing");
            }
            assert_eq!(driver.claims(), if pause == 10 { 1 } else { 2 });
            clock.advance(Duration::from_millis(pause - 1));
            assert!(poll_once(sub.next()).await.is_none(), "still pausing");
            clock.advance(Duration::from_millis(1));
            let next = sub.next().await.unwrap();
            if pause == 10 {
                assert!(next.unwrap_err().is_retryable());
            } else {
                next.unwrap().ack().await.unwrap();
            }
        }
        assert_eq!(driver.claims(), 3);

        // After a delivery the pause starts again from nothing; a fatal
        // error ends the stream.
        bus.publish("t", Message::new("n")).await.unwrap();
        *driver.claim_errors.lock().unwrap() = vec![DriverError::fatal("gone").into()];
        let fatal = sub.next().await.unwrap().unwrap_err();
        assert!(!fatal.is_retryable(), "{fatal}");
        assert!(sub.next().await.is_none(), "the stream ended");
        assert_eq!(driver.claims(), 4);
    });
}

#[test]
fn a_follow_pauses_after_retryable_errors_and_ends_after_a_fatal_one() {
    run(async {
        let driver = Recording::default();
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let bus = bus_on(&driver, &clock);
        bus.publish("t", Message::new("m")).await.unwrap();
        let mut follow = bus.follow("t", 1).unwrap();
        let reads = || driver.reads.load(Ordering::SeqCst);
        *driver.read_errors.lock().unwrap() = vec![DriverError::retryable("busy").into()];
        assert!(follow.next().await.unwrap().unwrap_err().is_retryable());
        assert_eq!(reads(), 1);
        for _ in 0..3 {
            assert!(poll_once(follow.next()).await.is_none(), "pausing");
        }
        assert_eq!(reads(), 1, "no read during the pause");
        clock.advance(Duration::from_millis(10));
        let record = follow.next().await.unwrap().unwrap();
        assert_eq!(record.message().payload(), b"m");
        assert_eq!(follow.position(), record.seq());

        bus.publish("t", Message::new("n")).await.unwrap();
        *driver.read_errors.lock().unwrap() = vec![DriverError::fatal("gone").into()];
        assert!(!follow.next().await.unwrap().unwrap_err().is_retryable());
        assert!(follow.next().await.is_none(), "the stream ended");
    });
}

fn run<F: Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

#[test]
fn a_closed_subscription_is_not_released_again_when_the_bus_closes() {
    run(async {
        let driver = Recording::default();
        let bus = bus(&driver);
        let sub = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
        sub.close().await.unwrap();
        assert_eq!(driver.releases(), 1, "close releases once");
        bus.close().await.unwrap();
        assert_eq!(driver.releases(), 1, "the bus does not release it again");
    });
}

#[test]
fn a_dropped_subscription_is_released_once() {
    run(async {
        let driver = Recording::default();
        let bus = bus(&driver);
        let kept = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
        let dropped = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
        let dropped_id = dropped.consumer_id().to_owned();
        drop(dropped);
        assert_eq!(driver.releases(), 1, "the drop releases");
        bus.close().await.unwrap();
        let released = driver.released.lock().unwrap().clone();
        assert_eq!(
            released,
            vec![dropped_id, kept.consumer_id().to_owned()],
            "closing releases only the live subscription"
        );
    });
}

#[test]
fn dropping_a_subscription_after_the_bus_closed_releases_nothing_more() {
    run(async {
        let driver = Recording::default();
        let bus = bus(&driver);
        let sub = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
        bus.close().await.unwrap();
        assert_eq!(driver.releases(), 1, "closing releases the subscription");
        drop(sub);
        assert_eq!(driver.releases(), 1, "its drop adds nothing");
    });
}

#[test]
fn a_release_that_did_not_finish_is_driven_by_the_next_call() {
    run(async {
        let driver = Recording::default();
        let bus = bus(&driver);
        bus.publish("t", Message::new("x")).await.unwrap();
        let holder = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
        let held = holder.recv().await.unwrap();
        driver.slow_release.store(true, Ordering::SeqCst);
        drop(held);
        drop(holder);
        assert_eq!(driver.releases(), 0, "the release is still pending");

        // Any later call on the bus gives it another poll: the message is
        // free again without waiting for its lease to end.
        let other = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
        assert_eq!(driver.releases(), 1, "subscribing drove the release");
        let again = other.try_recv().await.unwrap().expect("released message");
        assert_eq!(again.attempt(), 2);
        again.ack().await.unwrap();
        bus.close().await.unwrap();
    });
}

#[test]
fn closing_the_bus_finishes_a_pending_release() {
    run(async {
        let driver = Recording::default();
        let bus = bus(&driver);
        let sub = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
        driver.slow_release.store(true, Ordering::SeqCst);
        drop(sub);
        assert_eq!(driver.releases(), 0, "the release is still pending");
        bus.close().await.unwrap();
        assert_eq!(driver.releases(), 1, "close waited for it");
    });
}
