//! Noticing commits made elsewhere: `PRAGMA data_version` on one connection
//! of its own, polled only while a subscription waits.
//!
//! `data_version` changes when another connection (another process, or an
//! application's own pool publishing with plain SQL) commits. One task polls
//! it at the configured interval while there are waiters and wakes them all
//! on a change made elsewhere. The driver's own commits change it too (the
//! writer is another connection), and they have woken their waiters already
//! through the store's wake-ups: so on a change the watcher also reads
//! `data_version` on the writer's connection, which changes only for other
//! connections' commits, and wakes nobody if that one stands still. (Without
//! this, fifty waiting consumers would all claim after every publish.) When it starts, it wakes everyone once after reading its
//! first value: a commit that slipped in before that read is then seen by
//! the waiters' next look at the store, so none is missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use event_listener::Event;
use litebus::driver::BoxFuture;
use sqlx::SqlitePool;

use litebus_runtime::Runtime;

/// Polls without a waiter before the polling task ends.
const IDLE_TICKS: u32 = 50;

#[derive(Debug)]
struct Shared {
    changed: Event,
    waiters: AtomicUsize,
    polling: AtomicBool,
}

/// The watcher of one database file.
#[derive(Debug, Clone)]
pub(crate) struct Watcher {
    shared: Arc<Shared>,
    pool: SqlitePool,
    /// The pool of the writer's one connection, when it is the driver's own.
    writer: Option<SqlitePool>,
    interval: Duration,
    runtime: Runtime,
}

/// Counts a waiter for as long as it waits.
struct Waiting(Arc<Shared>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Watcher {
    /// A watcher polling through `pool` (one connection of its own);
    /// `writer`: the pool of the driver's one write connection, if it has
    /// one of its own (not an application's pool).
    pub(crate) fn new(
        pool: SqlitePool,
        writer: Option<SqlitePool>,
        interval: Duration,
        runtime: Runtime,
    ) -> Self {
        Watcher {
            shared: Arc::new(Shared {
                changed: Event::new(),
                waiters: AtomicUsize::new(0),
                polling: AtomicBool::new(false),
            }),
            pool,
            writer,
            interval,
            runtime,
        }
    }

    /// Closes the watcher's connection; waiters wake.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
        self.shared.changed.notify(usize::MAX);
    }

    /// Completes at the next commit made elsewhere (or spuriously).
    pub(crate) fn wait(&self) -> BoxFuture<'static, ()> {
        let listener = self.shared.changed.listen();
        self.shared.waiters.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(self.shared.clone());
        if !self.shared.polling.swap(true, Ordering::AcqRel) {
            // Detached: it ends by itself once nobody waits.
            drop(self.runtime.spawn_untracked(Box::pin(poll(
                self.shared.clone(),
                self.pool.clone(),
                self.writer.clone(),
                self.interval,
                self.runtime.clone(),
            ))));
        }
        Box::pin(async move {
            let _waiting = waiting;
            listener.await;
        })
    }
}

async fn data_version(pool: &SqlitePool) -> Option<i64> {
    sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(pool)
        .await
        .ok()
}

async fn poll(
    shared: Arc<Shared>,
    pool: SqlitePool,
    writer: Option<SqlitePool>,
    interval: Duration,
    runtime: Runtime,
) {
    let mut last = data_version(&pool).await;
    let mut last_writer = match &writer {
        Some(writer) => data_version(writer).await,
        None => None,
    };
    shared.changed.notify(usize::MAX);
    let mut idle = 0;
    loop {
        runtime.sleep(interval).await;
        // A busy consumer waits often and briefly: stay up a little while
        // after the last waiter instead of starting over each time.
        idle = if shared.waiters.load(Ordering::Acquire) == 0 {
            idle + 1
        } else {
            0
        };
        if idle > IDLE_TICKS {
            shared.polling.store(false, Ordering::Release);
            // A waiter that came between the check and the store found
            // `polling` still set and started nothing: keep going for it.
            if shared.waiters.load(Ordering::Acquire) == 0
                || shared.polling.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
        if pool.is_closed() {
            shared.polling.store(false, Ordering::Release);
            shared.changed.notify(usize::MAX);
            return;
        }
        let now = data_version(&pool).await;
        if now != last {
            last = now;
            let elsewhere = match &writer {
                Some(writer) => {
                    let now = data_version(writer).await;
                    // Unreadable: say it changed.
                    let changed = now.is_none() || now != last_writer;
                    last_writer = now;
                    changed
                }
                None => true,
            };
            if elsewhere {
                shared.changed.notify(usize::MAX);
            }
        }
    }
}
