//! The conformance suite every litebus driver runs on itself, and the test
//! kit its own tests share.
//!
//! Each case is a public async function of [`cases`] that panics when the
//! driver breaks the contract of `docs/design.md`; the modules are named
//! after what their cases prove (`leases`, `dead_letter`, `wakeups`, …).
//! Time is a [`ManualClock`], so no case depends on the machine's speed.
//! [`conformance_tests!`] expands every case of every module into a
//! `#[test]` (the list is made from the modules when this crate builds,
//! so there is no list to keep):
//!
//! ```
//! litebus_conformance::conformance_tests!(
//!     factory: litebus_conformance::MemoryFactory::default(),
//!     run: futures_lite::future::block_on,
//! );
//! ```
//!
//! A driver provides a [`Factory`]: it opens a driver on a named store, and
//! opening the same name again must reopen the same store. [`kit`] holds
//! what the drivers' own tests share: temporary directories, the
//! executors, a store map, the self-spawning process harness.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use litebus::driver::{BoxFuture, MaybeSendSync};
use litebus::driver::{Capabilities, Driver};
use litebus::{
    Bus, BusOptions, Delivery, GroupOptions, ManualClock, MemoryDriver, Message, Order, Result,
    Subscription, Timestamp,
};

pub mod cases;
pub mod kit;

/// What every case module uses.
mod prelude {
    pub(crate) use std::collections::BTreeSet;
    pub(crate) use std::sync::Arc;
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
    pub(crate) use std::time::Duration;

    pub(crate) use futures_lite::future;
    pub(crate) use litebus::driver::{BoxFuture, dead_letter_keys};
    pub(crate) use litebus::{
        Backoff, Bus, BusOptions, Delivery, Error, Follow, GroupOptions, Live, Message,
        NackOptions, NameKind, Order, Outcome, PRUNE_BATCH, RateLimit, Record, Result, Retention,
        Start, Subscription, Timestamp,
    };

    pub(crate) use crate::{
        Env, Factory, LEASE, ORDERS, SqlDialect, deleted_under_consumers, group_stats, join_all,
        keep_only_the_last, modes, msg, names, none, receive_all, recv, shared, some, text, within,
    };
}

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

    /// Whose SQL [`run_sql`](Factory::run_sql) speaks beyond what it
    /// translates: a case that writes something each database spells its
    /// own way (a trigger) picks its text by this.
    fn sql_dialect(&self) -> SqlDialect {
        SqlDialect::Sqlite
    }
}

/// The database a [`Factory`]'s plain SQL runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    /// SQLite (sqlx, turso).
    Sqlite,
    /// PostgreSQL: statements in SQLite's words are translated, triggers
    /// are not.
    Postgres,
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
            Ok(kit::lock(&self.stores)
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

    /// Opens another bus on the same store, beside this one: on a clone of
    /// the driver for an in-memory store, on a second driver of the file
    /// for a file.
    pub async fn another_bus(&self) -> Bus {
        open_bus(self.factory, &self.store, &self.clock).await
    }

    /// Opens another bus on the same store with `options` (and the
    /// suite's clock).
    pub async fn bus_with(&self, options: BusOptions) -> Bus {
        let driver = self.factory.open(&self.store).await.expect("open driver");
        Bus::open(driver, options.clock(self.clock.clone())).expect("open bus")
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

    /// Another driver on the store (a clone of the driver for an
    /// in-memory store), to call the driver's steps directly.
    pub async fn driver(&self) -> F::Driver {
        self.factory.open(&self.store).await.expect("open driver")
    }

    /// Advances the clock.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Runs plain SQL on the store ([`Factory::run_sql`]); `None` when the
    /// store has no SQL.
    pub async fn sql(&self, sql: &str) -> Option<()> {
        let run = self.try_sql(sql).await?;
        run.unwrap_or_else(|e| panic!("{sql}: {e}"));
        Some(())
    }

    /// Runs plain SQL on the store and gives its result; `None` when the
    /// store has no SQL.
    pub async fn try_sql(&self, sql: &str) -> Option<Result<()>> {
        Some(self.factory.run_sql(&self.store, sql)?.await)
    }

    /// The dialect of the store's plain SQL.
    pub fn sql_dialect(&self) -> SqlDialect {
        self.factory.sql_dialect()
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
        use litebus::Clock;
        futures_lite::future::or(async { Some(f.await) }, async {
            litebus::StdClock.sleep(Duration::from_secs(5)).await;
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

pub(crate) async fn recv(sub: &Subscription) -> Delivery {
    within(sub.recv()).await.expect("recv")
}

pub(crate) async fn none(sub: &Subscription) {
    let got = sub.try_recv().await.expect("try_recv");
    assert!(got.is_none(), "expected nothing deliverable, got {got:?}");
}

pub(crate) async fn some(sub: &Subscription) -> Delivery {
    sub.try_recv()
        .await
        .expect("try_recv")
        .expect("expected a deliverable message")
}

pub(crate) async fn receive_all(sub: &Subscription, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        let d = recv(sub).await;
        got.push(text(&d));
        d.ack().await.expect("ack");
    }
    got
}

pub(crate) fn names(topic: &str, range: std::ops::Range<usize>) -> Vec<String> {
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

pub(crate) fn shared(max_in_flight: u32) -> GroupOptions {
    GroupOptions::new().order(Order::Shared { max_in_flight })
}

/// Runs `delete` (of the group of `sub` and `waiting`, or of its topic)
/// while `out` (a delivery `sub` holds) is out and `waiting`, having taken
/// what was left, waits in `recv`: the deletion says the group was there,
/// the waiting consumer wakes with `UnknownGroup`, `out` is no longer
/// current, and `sub` gets `UnknownGroup` from then on.
pub(crate) async fn deleted_under_consumers(
    sub: &Subscription,
    waiting: &Subscription,
    out: Delivery,
    delete: impl Future<Output = Result<bool>>,
    name: &str,
) {
    let mut rest = Vec::new();
    while let Some(d) = waiting.try_recv().await.unwrap() {
        rest.push(d);
    }
    let (woken, deleted) = within(futures_lite::future::zip(waiting.recv(), async {
        futures_lite::future::yield_now().await;
        delete.await
    }))
    .await;
    assert!(deleted.unwrap(), "{name}");
    assert!(
        matches!(woken, Err(litebus::Error::UnknownGroup { .. })),
        "{name}: {woken:?}"
    );
    assert!(out.ack().await.unwrap_err().is_lease_lost(), "{name}");
    let after = sub.try_recv().await;
    assert!(
        matches!(after, Err(litebus::Error::UnknownGroup { .. })),
        "{name}: {after:?}"
    );
    drop(rest);
}

/// The three ordering modes by name (a shared group with up to 4 in
/// flight), for the cases that hold in each.
pub(crate) const ORDERS: [(&str, Order); 3] = [
    ("ordered", Order::Ordered),
    ("per_key", Order::PerKey),
    ("shared", Order::Shared { max_in_flight: 4 }),
];

/// [`ORDERS`] with a prefetch of one, so that what a consumer holds is
/// what it received.
pub(crate) fn modes() -> [(&'static str, GroupOptions); 3] {
    ORDERS.map(|(name, order)| (name, GroupOptions::new().order(order).prefetch(1)))
}

/// Topic `topic` keeps its last message from now on, pruned at once; then
/// group `g`'s `(ready, in_flight, pruned)`.
pub(crate) async fn keep_only_the_last(bus: &Bus, topic: &str) -> (u64, u64, u64) {
    bus.set_retention(topic, litebus::Retention::new().max_messages(1))
        .await
        .expect("set_retention");
    bus.prune(topic).await.expect("prune");
    let stats = group_stats(bus, topic, "g").await;
    (stats.ready, stats.in_flight, stats.pruned)
}

pub(crate) async fn group_stats(bus: &Bus, topic: &str, group: &str) -> litebus::GroupStats {
    bus.stats(topic)
        .await
        .expect("stats")
        .groups
        .into_iter()
        .find(|g| g.group == group)
        .expect("group in stats")
}

// The expansion of `conformance_tests!`: the list of cases is written by
// the build script from `src/cases/*.rs` (`__conformance_cases!`).
include!(concat!(env!("OUT_DIR"), "/cases.rs"));

/// Expands every conformance case into a `#[test]` in a module named
/// `conformance`, with a module per theme (`conformance::leases::…`), for
/// one driver factory and one way of running a future.
///
/// ```
/// litebus_conformance::conformance_tests!(
///     factory: litebus_conformance::MemoryFactory::default(),
///     run: futures_lite::future::block_on,
/// );
/// ```
///
/// Without `run:`, the cases run under each of the executors of
/// [`kit::run`] (`block_on`, a multi-threaded tokio runtime, smol), in
/// modules named after them. On wasm32, `conformance_tests!(factory: …,
/// wasm_bindgen_test)` makes each case an async `#[wasm_bindgen_test]`
/// instead (the test crate depends on `wasm-bindgen-test`), to run in a
/// browser or node.
///
/// A factory that needs something outside the test (a database server)
/// comes as `factory_or_skip: <an Option of a factory>`: with `None`, each
/// case returns at once (the factory says why).
#[macro_export]
macro_rules! conformance_tests {
    (factory: $factory:expr $(,)?) => {
        $crate::conformance_tests!(factory_or_skip: Some($factory));
    };
    (factory_or_skip: $factory:expr $(,)?) => {
        mod block_on {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(factory_or_skip: $factory, run: $crate::kit::run::block_on);
        }
        mod tokio {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(factory_or_skip: $factory, run: $crate::kit::run::tokio);
        }
        mod smol {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(factory_or_skip: $factory, run: $crate::kit::run::smol);
        }
    };
    (factory: $factory:expr, run: $run:expr $(,)?) => {
        $crate::conformance_tests!(factory_or_skip: Some($factory), run: $run);
    };
    (factory_or_skip: $factory:expr, run: $run:expr $(,)?) => {
        $crate::__conformance_cases!(native ($factory) ($run));
    };
    (factory: $factory:expr, wasm_bindgen_test $(,)?) => {
        $crate::__conformance_cases!(wasm ($factory) ());
    };
    (@cases native ($factory:expr) ($run:expr) [$($theme:ident: [$($case:ident),* $(,)?]),* $(,)?]) => {
        mod conformance {
            $(
                mod $theme {
                    #[allow(unused_imports)]
                    use super::super::*;
                    $(
                        #[test]
                        fn $case() {
                            let Some(factory) = $factory else { return };
                            let run = $run;
                            run($crate::cases::$theme::$case(&factory));
                        }
                    )*
                }
            )*
        }
    };
    (@cases wasm ($factory:expr) () [$($theme:ident: [$($case:ident),* $(,)?]),* $(,)?]) => {
        mod conformance {
            $(
                mod $theme {
                    #[allow(unused_imports)]
                    use super::super::*;
                    $(
                        #[::wasm_bindgen_test::wasm_bindgen_test]
                        async fn $case() {
                            let factory = $factory;
                            $crate::kit::browser::in_page($crate::cases::$theme::$case(&factory)).await;
                        }
                    )*
                }
            )*
        }
    };
}
