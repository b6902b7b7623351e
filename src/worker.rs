//! A worker: runs a handler on each delivery of one subscription, several
//! at once, acking what succeeds and nacking what fails, until a shutdown
//! signal — without spawning, so it runs under any executor and in a
//! browser.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::FutureExt as _;

use crate::driver::{BoxFuture, MaybeSend};
use crate::error::{Error, Result};
use crate::options::NackOptions;
use crate::stream::{next_backoff, wait_out};
use crate::subscription::{Delivery, Subscription};

/// Runs a handler on each delivery of a [`Subscription`]: made by
/// [`Subscription::worker`], started by [`run`](Worker::run).
///
/// The handler is an async function of the delivery returning a `Result`:
/// `Ok` acks it, `Err(e)` nacks it with `e` as its reason (its last error,
/// which its dead letter keeps, I8), and a handler that panics has its
/// delivery nacked with the panic's message while the worker goes on (where
/// panics unwind: on wasm32 a panic aborts). The worker settles each
/// delivery itself; a handler should not.
///
/// Up to [`concurrency`](Worker::concurrency) handlers run at once, polled
/// together by the future [`run`](Worker::run) returns (the core spawns
/// nothing): they run in parallel only as far as they wait, and a handler
/// that computes for long holds up the others — give such work to a thread
/// pool of your runtime. The subscription's prefetch decides how many
/// deliveries it claims at a time.
///
/// While a handler runs, its delivery's lease is kept by a
/// [`Delivery::heartbeat`], so a handler may outlast the lease;
/// [`heartbeat(false)`](Worker::heartbeat) makes the lease its time limit.
///
/// [`shutdown`](Worker::shutdown) gives it a signal (a future): once the
/// signal completes, the worker takes no new delivery, waits for the running
/// handlers up to a grace period on the bus clock, then drops those still
/// running and closes the subscription, which releases their deliveries and
/// whatever it had prefetched (they go to the group again, I6).
#[must_use = "a worker does nothing until `run` is awaited"]
pub struct Worker<H> {
    subscription: Subscription,
    handler: H,
    concurrency: usize,
    heartbeat: bool,
    shutdown: Option<(BoxFuture<'static, ()>, Duration)>,
}

/// What a [`Worker`] did, returned by [`Worker::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Deliveries whose handler returned `Ok`, acked.
    pub acked: u64,
    /// Deliveries whose handler returned `Err`, nacked.
    pub nacked: u64,
    /// Deliveries whose handler panicked, nacked with the panic's message.
    pub panicked: u64,
    /// Deliveries whose ack or nack found the lease gone
    /// ([`Error::LeaseLost`]): another consumer has the message now.
    pub lease_lost: u64,
    /// Handlers still running when the grace period ended: dropped, their
    /// deliveries released.
    pub cut: u64,
    /// Retryable errors of the store met while receiving; the worker waits
    /// a growing pause and goes on.
    pub retried: u64,
    /// Acks and nacks that failed otherwise (the bus closed, or the store
    /// failed): the lease runs out and the message goes to the group again.
    pub unsettled: u64,
}

/// How one delivery ended.
#[derive(Clone, Copy)]
enum Ended {
    Acked,
    Nacked,
    Panicked,
    LeaseLost,
    Unsettled,
}

impl Subscription {
    /// A [`Worker`] that runs `handler` on each delivery of this
    /// subscription: one at a time unless [`Worker::concurrency`] says
    /// more, until [`Worker::shutdown`]'s signal (or for as long as the bus
    /// is open).
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, GroupOptions, MemoryDriver, Message};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// let sub = bus.subscribe("emails", "senders", GroupOptions::new()).await?;
    /// bus.publish("emails", Message::new("hello")).await?;
    /// // Any future is a shutdown signal: here, the first email sent.
    /// let sent = Arc::new(event_listener::Event::new());
    /// let shutdown = sent.listen();
    /// let report = sub
    ///     .worker(|delivery| {
    ///         let sent = sent.clone();
    ///         async move {
    ///             // Send it; an `Err` would nack it with its message.
    ///             assert_eq!(delivery.message().payload(), b"hello");
    ///             sent.notify(1);
    ///             Ok::<(), std::io::Error>(())
    ///         }
    ///     })
    ///     .concurrency(16)
    ///     .shutdown(shutdown, Duration::from_secs(30))
    ///     .run()
    ///     .await?;
    /// assert_eq!(report.acked, 1);
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn worker<H, F, E>(self, handler: H) -> Worker<H>
    where
        H: Fn(Arc<Delivery>) -> F,
        F: Future<Output = std::result::Result<(), E>>,
        E: fmt::Display,
    {
        Worker {
            subscription: self,
            handler,
            concurrency: 1,
            heartbeat: true,
            shutdown: None,
        }
    }
}

impl<H, F, E> Worker<H>
where
    H: Fn(Arc<Delivery>) -> F,
    F: Future<Output = std::result::Result<(), E>>,
    E: fmt::Display,
{
    /// Runs up to `n` handlers at once (at least 1; default 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Whether the lease of each delivery is kept while its handler runs
    /// (default yes): a [`Delivery::heartbeat`] runs beside each handler,
    /// so a handler may take longer than the lease and the message stays
    /// its own. Turned off, a handler that outlasts its lease loses the
    /// message to the group (its ack then counts in
    /// [`WorkerReport::lease_lost`]): the lease is then a time limit.
    pub fn heartbeat(mut self, on: bool) -> Self {
        self.heartbeat = on;
        self
    }

    /// Stops the worker once `signal` completes: it takes no new delivery,
    /// waits up to `grace` (on the bus clock) for the running handlers, then
    /// drops those still running and closes the subscription, releasing
    /// their deliveries.
    pub fn shutdown(
        mut self,
        signal: impl Future<Output = ()> + MaybeSend + 'static,
        grace: Duration,
    ) -> Self {
        self.shutdown = Some((Box::pin(signal), grace));
        self
    }

    /// Runs the worker until its shutdown signal (then the grace period) or
    /// until the bus closes, and closes the subscription. A fatal error of
    /// the store while receiving ends it with that error (the running
    /// handlers are dropped and the subscription closed first); retryable
    /// ones are counted in [`WorkerReport::retried`] and waited out.
    pub async fn run(self) -> Result<WorkerReport> {
        let Worker {
            subscription,
            handler,
            concurrency,
            heartbeat,
            shutdown,
        } = self;
        let (mut signal, grace) = match shutdown {
            Some((signal, grace)) => (Some(signal), grace),
            None => (None, Duration::ZERO),
        };
        let bus = subscription.bus().clone();
        let mut report = WorkerReport::default();
        // The handlers running, each settling its delivery when done: polled
        // together here because the core spawns nothing (it has no runtime).
        let mut running = Vec::new();
        // The receive in progress (cancel safe: dropped at the shutdown
        // signal, it leaves nothing leased that `close` does not release).
        let mut receive: Option<BoxFuture<'_, Result<Delivery>>> = None;
        // The pause before the next receive, after a retryable error.
        let mut pause: Option<Duration> = None;
        let mut grace_ends: Option<BoxFuture<'static, ()>> = None;
        let ended = std::future::poll_fn(|cx: &mut Context<'_>| {
            // Every running handler is polled at each wake of the worker:
            // cheap for the tens of handlers a worker runs (per-handler
            // wakers would need an executor's task set); a new handler is
            // polled once when it starts.
            poll_running(&mut running, cx, &mut report);
            loop {
                if grace_ends.is_none()
                    && let Some(stop) = signal.as_mut()
                    && stop.as_mut().poll(cx).is_ready()
                {
                    signal = None;
                    receive = None;
                    grace_ends = Some(bus.clock.sleep(grace));
                }
                if let Some(grace) = grace_ends.as_mut() {
                    if running.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    if grace.as_mut().poll(cx).is_ready() {
                        report.cut += running.len() as u64;
                        running.clear();
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Pending;
                }
                if running.len() >= concurrency {
                    return Poll::Pending;
                }
                let next = receive.get_or_insert_with(|| {
                    let (bus, subscription, pause) = (&bus, &subscription, pause);
                    Box::pin(async move {
                        wait_out(bus, pause).await;
                        subscription.recv().await
                    })
                });
                let Poll::Ready(received) = next.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                receive = None;
                match received {
                    Ok(delivery) => {
                        pause = None;
                        let delivery = Arc::new(delivery);
                        let work = handler(delivery.clone());
                        let mut task = Box::pin(handle(delivery, work, heartbeat));
                        match task.as_mut().poll(cx) {
                            Poll::Ready(ended) => report.count(ended),
                            Poll::Pending => running.push(task),
                        }
                    }
                    Err(e) if e.is_retryable() => {
                        report.retried += 1;
                        pause = Some(next_backoff(pause, "worker", &e));
                    }
                    // The bus closed.
                    Err(Error::Closed) => return Poll::Ready(Ok(())),
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        })
        .await;
        drop(receive);
        drop(running);
        let closed = subscription.close().await;
        ended?;
        match closed {
            Ok(()) | Err(Error::Closed) => Ok(report),
            Err(e) => Err(e),
        }
    }
}

/// Polls every running handler, dropping those that ended and counting how.
fn poll_running<T: Future<Output = Ended>>(
    running: &mut Vec<Pin<Box<T>>>,
    cx: &mut Context<'_>,
    report: &mut WorkerReport,
) {
    running.retain_mut(|task| match task.as_mut().poll(cx) {
        Poll::Ready(ended) => {
            report.count(ended);
            false
        }
        Poll::Pending => true,
    });
}

impl WorkerReport {
    fn count(&mut self, ended: Ended) {
        match ended {
            Ended::Acked => self.acked += 1,
            Ended::Nacked => self.nacked += 1,
            Ended::Panicked => self.panicked += 1,
            Ended::LeaseLost => self.lease_lost += 1,
            Ended::Unsettled => self.unsettled += 1,
        }
    }
}

/// Runs one handler's future (beside its delivery's heartbeat, if on) and
/// settles its delivery by what it gave.
async fn handle<F, E>(delivery: Arc<Delivery>, work: F, heartbeat: bool) -> Ended
where
    F: Future<Output = std::result::Result<(), E>>,
    E: fmt::Display,
{
    let work = AssertUnwindSafe(work).catch_unwind();
    let outcome = if heartbeat {
        // A failed heartbeat (the lease lost, the bus closed) stops keeping
        // the lease and leaves the handler to finish: its settle says how
        // it ended.
        let beat = async {
            let _ = delivery.heartbeat().await;
            std::future::pending().await
        };
        futures_lite::future::or(work, beat).await
    } else {
        work.await
    };
    let (settled, ended) = match outcome {
        Ok(Ok(())) => (delivery.ack().await, Ended::Acked),
        Ok(Err(e)) => {
            let reason = NackOptions::new().with_reason(e.to_string());
            (delivery.nack(reason).await, Ended::Nacked)
        }
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            let reason = NackOptions::new().with_reason(format!("handler panicked: {why}"));
            (delivery.nack(reason).await, Ended::Panicked)
        }
    };
    match settled {
        Ok(()) => ended,
        Err(Error::LeaseLost) => Ended::LeaseLost,
        Err(_) => Ended::Unsettled,
    }
}

impl<H> fmt::Debug for Worker<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("subscription", &self.subscription)
            .field("concurrency", &self.concurrency)
            .field("heartbeat", &self.heartbeat)
            .field("shutdown", &self.shutdown.as_ref().map(|(_, grace)| grace))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bus, BusOptions, GroupOptions, MemoryDriver, Message, Order};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn is_send<T: Send>(value: T) -> T {
        value
    }

    /// A worker whose handler's futures are `Send` is itself `Send`, so it
    /// can be spawned on a multi-threaded runtime.
    #[test]
    fn a_worker_of_send_handlers_is_send() {
        futures_lite::future::block_on(async {
            let bus = Bus::open(MemoryDriver::new(), BusOptions::new()).unwrap();
            let sub = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
            let run = sub
                .worker(|_delivery| async { Ok::<(), String>(()) })
                .shutdown(async {}, Duration::ZERO)
                .run();
            let report = is_send(run).await.unwrap();
            assert_eq!(report, WorkerReport::default());
        });
    }

    /// A handler that panics has its delivery nacked with the panic's
    /// message (here its last attempt, so the dead letter says it), and the
    /// worker goes on with the other deliveries. (Panics unwind natively
    /// only; on wasm32 they abort, so this is not a conformance case.)
    #[test]
    fn a_panicking_handler_is_nacked_with_its_message_and_the_worker_goes_on() {
        futures_lite::future::block_on(async {
            let bus = Bus::open(MemoryDriver::new(), BusOptions::new()).unwrap();
            let shared = Order::Shared { max_in_flight: 10 };
            let options = GroupOptions::new().order(shared).max_attempts(1);
            let sub = bus.subscribe("t", "g", options).await.unwrap();
            let jobs = ["fine", "broken", "fine too"].map(Message::new);
            bus.publish_batch("t", jobs).await.unwrap();
            let handled = Arc::new(AtomicU64::new(0));
            let event = Arc::new(event_listener::Event::new());
            let stop = {
                let (handled, event) = (handled.clone(), event.clone());
                async move {
                    loop {
                        let listener = event.listen();
                        if handled.load(Ordering::Acquire) == 3 {
                            return;
                        }
                        listener.await;
                    }
                }
            };
            let report = sub
                .worker(|d| {
                    let (handled, event) = (handled.clone(), event.clone());
                    async move {
                        handled.fetch_add(1, Ordering::AcqRel);
                        event.notify(usize::MAX);
                        assert_ne!(d.message().payload(), b"broken", "the handler broke");
                        Ok::<(), String>(())
                    }
                })
                .concurrency(3)
                .shutdown(stop, Duration::from_secs(60))
                .run()
                .await
                .unwrap();
            assert_eq!((report.acked, report.panicked, report.nacked), (2, 1, 0));
            let dead = bus.dead_letters("t", "g", 1, 10).await.unwrap();
            assert_eq!(dead.len(), 1);
            assert_eq!(dead[0].record().message().payload(), b"broken");
            assert!(
                dead[0].error().starts_with("handler panicked: ")
                    && dead[0].error().contains("the handler broke"),
                "{}",
                dead[0].error()
            );
        });
    }
}
