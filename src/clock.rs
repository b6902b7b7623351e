//! Time: the [`Timestamp`] type, the [`Clock`] trait and its implementations.
//!
//! Every lease end, nack delay and `deliver_at` is measured on the bus's
//! clock, never on a storage engine's (invariant I10), so tests drive time
//! with a [`ManualClock`] and every driver agrees on what "now" is.
//! The core depends on no runtime: [`StdClock`] (the native default) keeps
//! its sleepers on one small timer thread and works under any executor;
//! `TokioClock`, `AsyncIoClock` and `WasmClock` use their runtime's timers
//! and sit behind the features `tokio`, `async-io` and `wasm`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Add;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::driver::{BoxFuture, MaybeSendSync};

/// A point in time: milliseconds since the Unix epoch, as the bus's clock
/// reads it.
///
/// Timestamps stop at [`Timestamp::MAX`] (2^63 − 1 ms, some 292 million
/// years), the largest every store can hold: later times are held there,
/// so every driver reads back what it was given.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const ZERO: Timestamp = Timestamp(0);

    /// The latest timestamp: 2^63 − 1 ms after the Unix epoch.
    pub const MAX: Timestamp = Timestamp(i64::MAX as u64);

    /// A timestamp `millis` milliseconds after the Unix epoch, at most
    /// [`Timestamp::MAX`].
    pub const fn from_millis(millis: u64) -> Self {
        if millis > Timestamp::MAX.0 {
            Timestamp::MAX
        } else {
            Timestamp(millis)
        }
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    /// Adds whole milliseconds, rounding a partial millisecond up so that a
    /// delay is never shortened; saturates at [`Timestamp::MAX`].
    fn add(self, rhs: Duration) -> Timestamp {
        let millis = rhs.as_nanos().div_ceil(1_000_000);
        Timestamp::from_millis(
            self.0
                .saturating_add(u64::try_from(millis).unwrap_or(u64::MAX)),
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A source of the current time and of timers.
///
/// Implement it to run litebus on a runtime it does not know; the sleep
/// future must wake its task when the time has come.
pub trait Clock: MaybeSendSync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// A future that completes once `duration` has passed.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;

    /// A future that completes once the clock reads `deadline` or later.
    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        self.sleep(deadline.saturating_duration_since(self.now()))
    }
}

/// Wakers ordered by deadline; the shared core of [`ManualClock`] and
/// [`StdClock`].
#[derive(Debug)]
struct Sleepers<T> {
    wakers: BTreeMap<(T, u64), Waker>,
    next_id: u64,
}

impl<T: Ord + Copy> Sleepers<T> {
    const fn new() -> Self {
        Sleepers {
            wakers: BTreeMap::new(),
            next_id: 0,
        }
    }

    fn register(&mut self, deadline: T, id: &mut Option<u64>, waker: &Waker) {
        let key = *id.get_or_insert_with(|| {
            self.next_id += 1;
            self.next_id
        });
        self.wakers.insert((deadline, key), waker.clone());
    }

    fn remove(&mut self, deadline: T, id: Option<u64>) {
        if let Some(id) = id {
            self.wakers.remove(&(deadline, id));
        }
    }

    /// Removes and returns the wakers whose deadline is at or before `now`.
    fn due(&mut self, now: T) -> Vec<Waker> {
        let mut due = Vec::new();
        while let Some(entry) = self.wakers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    fn earliest(&self) -> Option<T> {
        self.wakers.keys().next().map(|(t, _)| *t)
    }
}

#[derive(Debug)]
struct ManualState {
    now: Timestamp,
    sleepers: Sleepers<Timestamp>,
}

/// A clock that moves only when told to: the clock of tests.
///
/// Advancing it wakes every sleeper whose deadline has come.
///
/// ```
/// use litebus::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_millis(1_000));
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now(), Timestamp::from_millis(3_000));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    state: Arc<Mutex<ManualState>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            state: Arc::new(Mutex::new(ManualState {
                now: start,
                sleepers: Sleepers::new(),
            })),
        }
    }

    /// The time the clock shows.
    pub fn now(&self) -> Timestamp {
        lock(&self.state).now
    }

    /// Moves the clock forward by `by` and wakes the sleepers now due.
    pub fn advance(&self, by: Duration) {
        let now = self.now() + by;
        self.set(now);
    }

    /// Sets the clock to `to` (never backwards) and wakes the sleepers now due.
    pub fn set(&self, to: Timestamp) {
        let due = {
            let mut state = lock(&self.state);
            state.now = state.now.max(to);
            let now = state.now;
            state.sleepers.due(now)
        };
        due.into_iter().for_each(Waker::wake);
    }

    /// How many sleepers are waiting for a later time.
    pub fn sleepers(&self) -> usize {
        lock(&self.state).sleepers.wakers.len()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new(Timestamp::from_millis(1_000_000))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        ManualClock::now(self)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        Box::pin(ManualSleep {
            state: self.state.clone(),
            deadline,
            id: None,
        })
    }
}

struct ManualSleep {
    state: Arc<Mutex<ManualState>>,
    deadline: Timestamp,
    id: Option<u64>,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = lock(&this.state);
        if state.now >= this.deadline {
            state.sleepers.remove(this.deadline, this.id.take());
            return Poll::Ready(());
        }
        state
            .sleepers
            .register(this.deadline, &mut this.id, cx.waker());
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        lock(&self.state).sleepers.remove(self.deadline, self.id);
    }
}

/// Locks a mutex, recovering the data if another thread panicked while
/// holding it: every critical section in litebus leaves its state consistent
/// before it can panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(not(target_arch = "wasm32"))]
pub use std_clock::StdClock;

// Why a timer thread of its own rather than async-io's `Timer` (which
// `AsyncIoClock` uses behind its feature): async-io brings a reactor (its
// polling thread, epoll or kqueue) into every build of the core, which
// stays free of async runtimes, and it does not build for wasm32; the
// default clock needs one thread that sleeps until the earliest deadline,
// which is all this module is.
#[cfg(not(target_arch = "wasm32"))]
mod std_clock {
    use super::{BoxFuture, Clock, Sleepers, Timestamp, lock};
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Condvar, Mutex, OnceLock};
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    /// The system clock, with timers kept by one shared background thread.
    ///
    /// It needs no async runtime, so it works under `block_on`, tokio, smol or
    /// anything else; it is the default clock on native targets.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct StdClock;

    pub(crate) fn system_now() -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    struct TimerThread {
        sleepers: Mutex<Sleepers<Instant>>,
        changed: Condvar,
    }

    fn timer() -> &'static TimerThread {
        static TIMER: OnceLock<&'static TimerThread> = OnceLock::new();
        TIMER.get_or_init(|| {
            let timer: &'static TimerThread = Box::leak(Box::new(TimerThread {
                sleepers: Mutex::new(Sleepers::new()),
                changed: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("litebus-timer".into())
                .spawn(move || timer.run())
                .expect("spawn the litebus timer thread");
            timer
        })
    }

    impl TimerThread {
        fn run(&self) {
            let mut sleepers = lock(&self.sleepers);
            loop {
                let now = Instant::now();
                let due = sleepers.due(now);
                if !due.is_empty() {
                    drop(sleepers);
                    due.into_iter().for_each(std::task::Waker::wake);
                    sleepers = lock(&self.sleepers);
                    continue;
                }
                sleepers = match sleepers.earliest() {
                    Some(at) => {
                        self.changed
                            .wait_timeout(sleepers, at.saturating_duration_since(now))
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .0
                    }
                    None => self
                        .changed
                        .wait(sleepers)
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                };
            }
        }
    }

    struct StdSleep {
        deadline: Instant,
        id: Option<u64>,
    }

    impl Future for StdSleep {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = self.get_mut();
            if Instant::now() >= this.deadline {
                return Poll::Ready(());
            }
            let timer = timer();
            let mut sleepers = lock(&timer.sleepers);
            let was_earliest = sleepers.earliest().is_none_or(|t| this.deadline < t);
            sleepers.register(this.deadline, &mut this.id, cx.waker());
            drop(sleepers);
            if was_earliest {
                timer.changed.notify_one();
            }
            Poll::Pending
        }
    }

    impl Drop for StdSleep {
        fn drop(&mut self) {
            if self.id.is_some() {
                lock(&timer().sleepers).remove(self.deadline, self.id);
            }
        }
    }

    impl Clock for StdClock {
        fn now(&self) -> Timestamp {
            system_now()
        }

        fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
            Box::pin(StdSleep {
                deadline: Instant::now() + duration,
                id: None,
            })
        }
    }
}

/// The system clock with tokio's timers (feature `tokio`). It honours
/// tokio's paused time for `sleep`, but `now` is the wall clock.
#[cfg(all(feature = "tokio", not(target_arch = "wasm32")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

#[cfg(all(feature = "tokio", not(target_arch = "wasm32")))]
impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        std_clock::system_now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// The system clock with async-io's timers (feature `async-io`): the clock
/// for smol and other async-io based executors.
#[cfg(all(feature = "async-io", not(target_arch = "wasm32")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncIoClock;

#[cfg(all(feature = "async-io", not(target_arch = "wasm32")))]
impl Clock for AsyncIoClock {
    fn now(&self) -> Timestamp {
        std_clock::system_now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            async_io::Timer::after(duration).await;
        })
    }
}

#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
pub use wasm_clock::WasmClock;

#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
mod wasm_clock {
    use super::{BoxFuture, Clock, Timestamp};
    use std::time::Duration;
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_name = setTimeout)]
        fn set_timeout(handler: &js_sys::Function, timeout: f64) -> JsValue;
    }

    /// JavaScript's clock (`Date.now()`) and timers (`setTimeout`), for
    /// wasm32 in a browser, a worker or node (feature `wasm`).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct WasmClock;

    impl Clock for WasmClock {
        fn now(&self) -> Timestamp {
            Timestamp::from_millis(js_sys::Date::now() as u64)
        }

        fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
            let millis = duration.as_secs_f64() * 1000.0;
            let promise = js_sys::Promise::new(&mut |resolve, _reject| {
                set_timeout(&resolve, millis.ceil());
            });
            Box::pin(async move {
                let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
            })
        }
    }
}

/// The clock a bus uses when its options name none: [`StdClock`] on native
/// targets, `WasmClock` on wasm32 with the `wasm` feature, and none otherwise.
#[allow(clippy::unnecessary_wraps)] // `None` on wasm32 without the `wasm` feature
pub(crate) fn default_clock() -> Option<Arc<dyn Clock>> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        Some(Arc::new(StdClock))
    }
    #[cfg(all(feature = "wasm", target_arch = "wasm32"))]
    {
        Some(Arc::new(WasmClock))
    }
    #[cfg(all(not(feature = "wasm"), target_arch = "wasm32"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_add_rounds_partial_millis_up() {
        let t = Timestamp::from_millis(10) + Duration::from_micros(1);
        assert_eq!(t, Timestamp::from_millis(11));
        assert_eq!(
            Timestamp::from_millis(u64::MAX - 1) + Duration::from_secs(5),
            Timestamp::from_millis(u64::MAX)
        );
    }

    #[test]
    fn manual_clock_wakes_sleepers_when_due() {
        let clock = ManualClock::new(Timestamp::from_millis(0));
        let mut sleep = clock.sleep(Duration::from_millis(10));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(clock.sleepers(), 1);
        clock.advance(Duration::from_millis(9));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(1));
        assert_eq!(clock.sleepers(), 0);
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn dropped_manual_sleep_unregisters() {
        let clock = ManualClock::new(Timestamp::from_millis(0));
        let mut sleep = clock.sleep(Duration::from_millis(10));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        drop(sleep);
        assert_eq!(clock.sleepers(), 0);
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn std_clock_sleep_completes_under_plain_block_on() {
        let start = std::time::Instant::now();
        futures_lite::future::block_on(StdClock.sleep(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
