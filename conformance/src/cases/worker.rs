//! The worker (`Subscription::worker`): a handler's `Ok` acks and its `Err`
//! nacks with the error as the reason; up to `concurrency` handlers run at
//! once; at the shutdown signal it takes nothing new, waits for running
//! handlers up to the grace period, then releases the rest.

use event_listener::Event;
use litebus::WorkerReport;

use crate::prelude::*;

/// Waits until `done()` holds, looking again at each notification of
/// `event`.
async fn until(event: &Event, done: impl Fn() -> bool) {
    loop {
        let listener = event.listen();
        if done() {
            return;
        }
        listener.await;
    }
}

/// The number at the end of a conformance message's payload (`t-<n>`).
fn number(d: &Delivery) -> usize {
    let payload = text(d);
    payload[payload.rfind('-').expect("t-<n>") + 1..]
        .parse()
        .expect("a number")
}

/// A handler's `Ok` acks its delivery; its `Err` nacks it with the error's
/// text as the reason, which the dead letter keeps; the report counts both.
pub async fn a_worker_acks_successes_and_nacks_failures_with_their_reason<F: Factory>(f: &F) {
    let env = Env::new(f, "worker_settles").await;
    env.publish_n("t", 0, 6).await;
    let sub = env.sub("t", "g", shared(10).max_attempts(1)).await;
    let handled = Arc::new(AtomicU64::new(0));
    let event = Arc::new(Event::new());
    let stop = {
        let (handled, event) = (handled.clone(), event.clone());
        async move { until(&event, || handled.load(Ordering::Acquire) == 6).await }
    };
    let worker = sub.worker(|d| {
        let (handled, event) = (handled.clone(), event.clone());
        async move {
            let n = number(&d);
            handled.fetch_add(1, Ordering::AcqRel);
            event.notify(usize::MAX);
            if n.is_multiple_of(2) {
                Ok(())
            } else {
                Err(format!("cannot take {}", text(&d)))
            }
        }
    });
    let report = within(
        worker
            .concurrency(2)
            .shutdown(stop, Duration::from_secs(60))
            .run(),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.acked, report.nacked, report.panicked, report.cut),
        (3, 3, 0, 0)
    );
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead_lettered),
        (0, 0, 3)
    );
    let dead = env.bus.dead_letters("t", "g", 1, 10).await.unwrap();
    let mut errors: Vec<&str> = dead.iter().map(litebus::DeadLetter::error).collect();
    errors.sort_unstable();
    assert_eq!(
        errors,
        ["cannot take t-1", "cannot take t-3", "cannot take t-5"]
    );
}

/// With `concurrency(3)`, three handlers run at once (the first three wait
/// for each other: run one at a time, they would wait for ever) and never
/// more than three.
pub async fn a_worker_runs_up_to_its_concurrency_at_once<F: Factory>(f: &F) {
    let env = Env::new(f, "worker_concurrency").await;
    env.publish_n("t", 0, 7).await;
    let sub = env.sub("t", "g", shared(10)).await;
    let (started, running, peak, done) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let event = Arc::new(Event::new());
    let stop = {
        let (done, event) = (done.clone(), event.clone());
        async move { until(&event, || done.load(Ordering::Acquire) == 7).await }
    };
    let worker = sub.worker(|_d| {
        let (started, running, peak, done, event) = (
            started.clone(),
            running.clone(),
            peak.clone(),
            done.clone(),
            event.clone(),
        );
        async move {
            started.fetch_add(1, Ordering::AcqRel);
            let now = running.fetch_add(1, Ordering::AcqRel) + 1;
            peak.fetch_max(now, Ordering::AcqRel);
            event.notify(usize::MAX);
            until(&event, || started.load(Ordering::Acquire) >= 3).await;
            running.fetch_sub(1, Ordering::AcqRel);
            done.fetch_add(1, Ordering::AcqRel);
            event.notify(usize::MAX);
            Ok::<(), String>(())
        }
    });
    let report = within(
        worker
            .concurrency(3)
            .shutdown(stop, Duration::from_secs(60))
            .run(),
    )
    .await
    .unwrap();
    assert_eq!(report.acked, 7);
    assert_eq!(peak.load(Ordering::Acquire), 3, "three at once, never more");
    assert_eq!(group_stats(&env.bus, "t", "g").await.ready, 0);
}

/// At the shutdown signal the worker takes no new delivery (a message
/// published after it stays for the group at attempt 1), lets a running
/// handler finish and acks it, and when the grace period ends on the bus
/// clock drops the handler still running and releases its delivery, which
/// the group hands out again at attempt 2.
pub async fn a_worker_at_shutdown_waits_for_running_handlers_then_releases_the_rest<F: Factory>(
    f: &F,
) {
    let env = Env::new(f, "worker_shutdown").await;
    env.publish_n("t", 0, 3).await;
    let sub = env.sub("t", "g", shared(10)).await;
    let started = Arc::new(AtomicU64::new(0));
    let finish = Arc::new(AtomicU64::new(0));
    let (stopped, event, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(Event::new()),
        Event::new(),
    );
    let signal = {
        let (listener, stopped, event) = (stop.listen(), stopped.clone(), event.clone());
        async move {
            listener.await;
            stopped.store(1, Ordering::Release);
            event.notify(usize::MAX);
        }
    };
    let worker = sub.worker(|d| {
        let (started, finish, event) = (started.clone(), finish.clone(), event.clone());
        async move {
            started.fetch_add(1, Ordering::AcqRel);
            event.notify(usize::MAX);
            match number(&d) {
                0 => {}
                1 => until(&event, || finish.load(Ordering::Acquire) == 1).await,
                _ => future::pending::<()>().await,
            }
            Ok::<(), String>(())
        }
    });
    let run = worker
        .concurrency(3)
        .shutdown(signal, Duration::from_secs(60))
        .run();
    let drive = async {
        until(&event, || started.load(Ordering::Acquire) == 3).await;
        stop.notify(usize::MAX);
        until(&event, || stopped.load(Ordering::Acquire) == 1).await;
        env.publish_n("t", 3, 1).await;
        finish.store(1, Ordering::Release);
        event.notify(usize::MAX);
        // t-0 and t-1 acked; t-2 still leased to the handler that runs on.
        loop {
            let stats = group_stats(&env.bus, "t", "g").await;
            if (stats.ready, stats.in_flight) == (1, 1) {
                break;
            }
            future::yield_now().await;
        }
        env.advance(Duration::from_secs(60));
    };
    let (report, ()) = within(future::zip(run, drive)).await;
    let report = report.unwrap();
    assert_eq!((report.acked, report.nacked, report.cut), (2, 0, 1));
    let again = env.sub("t", "g", shared(10)).await;
    let got: Vec<(String, u32)> = [recv(&again).await, recv(&again).await]
        .iter()
        .map(|d| (text(d), d.attempt()))
        .collect();
    assert_eq!(got, [("t-2".to_owned(), 2), ("t-3".to_owned(), 1)]);
}

/// A worker's `run` dropped after any number of polls (under a deadline,
/// in a `select!`) loses nothing: what its handlers did not get to, and
/// what they handled but did not ack, goes to the group again, and each
/// message is handled by someone. (Each worker's claim may run before its
/// drop, whether or not a handler got its messages: a release counts as
/// an attempt, so the group allows more attempts than there are workers,
/// else the first messages could be dead-lettered after five such
/// releases: a fresh-clone CI run met it once on PostgreSQL, and a pause
/// before each drop, so that every claim runs, shows it on every driver.)
pub async fn a_worker_dropped_after_any_poll_loses_nothing<F: Factory>(f: &F) {
    let env = Env::new(f, "worker_dropped").await;
    let total = 12;
    env.publish_n("t", 0, total).await;
    let handled = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let options = shared(10).max_attempts(10);
    for polls in 0..6 {
        let sub = env.sub("t", "g", options.clone().prefetch(2)).await;
        let handled = handled.clone();
        let run = sub
            .worker(move |d| {
                let handled = handled.clone();
                async move {
                    handled.lock().unwrap().insert(text(&d));
                    future::yield_now().await;
                    Ok::<(), String>(())
                }
            })
            .concurrency(3)
            .run();
        let mut run = Box::pin(run);
        for _ in 0..polls {
            let ended = future::poll_once(run.as_mut()).await;
            assert!(ended.is_none(), "a worker without a signal runs on");
        }
        drop(run);
    }
    env.advance(LEASE);
    let rest = env.sub("t", "g", options).await;
    let mut seen = handled.lock().unwrap().clone();
    while let Some(d) = rest.try_recv().await.unwrap() {
        seen.insert(text(&d));
        d.ack().await.unwrap();
    }
    assert_eq!(seen, names("t", 0..total).into_iter().collect());
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
}

/// Runs a worker on a one-message topic whose handler waits until told to
/// finish, while the clock moves 8 s four times (past three 10 s leases)
/// and a second consumer of the group looks for work after each step.
/// Returns the report and what the second consumer got.
async fn a_long_handler<F: Factory>(env: &Env<'_, F>, heartbeat: bool) -> (WorkerReport, Vec<u32>) {
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", shared(10)).await;
    let other = env.sub("t", "g", shared(10)).await;
    let (started, finish, event) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(Event::new()),
    );
    // The handler's lease end, as the handler sees it each time it wakes.
    let lease = Arc::new(AtomicU64::new(0));
    let stop = Event::new();
    let worker = sub.worker(|d| {
        let (started, finish, event, lease) = (
            started.clone(),
            finish.clone(),
            event.clone(),
            lease.clone(),
        );
        async move {
            started.store(1, Ordering::Release);
            event.notify(usize::MAX);
            until(&event, || {
                lease.store(d.lease_until().as_millis(), Ordering::Release);
                finish.load(Ordering::Acquire) == 1
            })
            .await;
            Ok::<(), String>(())
        }
    });
    let run = worker
        .heartbeat(heartbeat)
        .shutdown(stop.listen(), Duration::from_secs(60))
        .run();
    let drive = async {
        until(&event, || started.load(Ordering::Acquire) == 1).await;
        let lease_until = || {
            event.notify(usize::MAX);
            Timestamp::from_millis(lease.load(Ordering::Acquire))
        };
        let mut taken = Vec::new();
        for _ in 0..4 {
            let before = lease_until();
            env.advance(Duration::from_secs(8));
            let now = env.clock.now();
            if heartbeat {
                // The worker's heartbeat extends the lease by a lease from now.
                while lease_until() == before {
                    future::yield_now().await;
                }
                assert_eq!(lease_until(), now + LEASE);
            }
            if let Some(again) = other.try_recv().await.unwrap() {
                taken.push(again.attempt());
                again.ack().await.unwrap();
            }
        }
        finish.store(1, Ordering::Release);
        event.notify(usize::MAX);
        stop.notify(usize::MAX);
        taken
    };
    let (report, taken) = within(future::zip(run, drive)).await;
    (report.unwrap(), taken)
}

/// A handler may run longer than the lease: the worker's heartbeat keeps
/// extending it, nobody else is handed the message meanwhile, and the
/// handler's `Ok` acks it.
pub async fn a_worker_keeps_a_long_handlers_lease_and_acks_it<F: Factory>(f: &F) {
    let env = Env::new(f, "worker_heartbeat").await;
    let (report, taken) = a_long_handler(&env, true).await;
    assert_eq!(
        taken,
        Vec::<u32>::new(),
        "the message stayed with its handler"
    );
    assert_eq!((report.acked, report.lease_lost), (1, 0));
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.in_flight, stats.ready, stats.acked_floor), (0, 0, 1));
}

/// With the heartbeat off the lease is a time limit: a handler that
/// outlasts it loses the message to another consumer (attempt 2), and its
/// own ack is `LeaseLost`.
pub async fn a_worker_without_heartbeat_loses_a_long_handlers_lease<F: Factory>(f: &F) {
    let env = Env::new(f, "worker_no_heartbeat").await;
    let (report, taken) = a_long_handler(&env, false).await;
    assert_eq!(taken, [2], "taken over once the lease ran out");
    assert_eq!((report.acked, report.lease_lost), (0, 1));
    let stats = group_stats(&env.bus, "t", "g").await;
    assert_eq!((stats.in_flight, stats.ready, stats.acked_floor), (0, 0, 1));
}
