//! Noticing commits made elsewhere (other drivers, other hosts, plain
//! SQL): `LISTEN litebus` on one connection of its own.
//!
//! The schema's triggers send one notification per commit that changed
//! messages, handouts or groups, with the schema and the writer's origin
//! token (see `litebus_sql::schema`). The watcher wakes every waiter on a
//! notification of its schema from another origin: its own commits woke
//! their waiters already through the driver's wake-ups.
//!
//! Nothing is missed: the driver opens only once the watcher listens, and
//! a waiter takes its place in line before it looks at the store. A lost
//! connection may have dropped notifications: the watcher wakes everyone
//! when it notices, listens again, and wakes everyone once more. With
//! `poll` set (or without LISTEN, behind a pooler in transaction mode),
//! everyone is also woken at that interval whatever happens.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use event_listener::Event;
use litebus::driver::BoxFuture;
use litebus_runtime::{Runtime, Task};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

/// The channel of every litebus store on a server.
pub(crate) const CHANNEL: &str = "litebus";

#[derive(Debug)]
struct Shared {
    changed: Event,
    closed: AtomicBool,
}

/// The watcher of one driver.
#[derive(Debug, Clone)]
pub(crate) struct Watcher {
    shared: Arc<Shared>,
    task: Arc<std::sync::Mutex<Option<Task>>>,
}

impl Watcher {
    /// Starts watching; returns once it listens (or, without LISTEN, at
    /// once). `origin`: this driver's token, whose notifications it skips.
    pub(crate) async fn start(
        pool: &PgPool,
        schema: String,
        origin: String,
        listen: bool,
        poll: Option<Duration>,
        runtime: &Runtime,
    ) -> litebus::Result<Self> {
        let shared = Arc::new(Shared {
            changed: Event::new(),
            closed: AtomicBool::new(false),
        });
        let listener = if listen {
            Some(listener(pool).await.map_err(|e| crate::conn::map_err(&e))?)
        } else {
            None
        };
        let task = runtime.spawn_untracked(Box::pin(watch(
            shared.clone(),
            pool.clone(),
            listener,
            format!("{schema} "),
            origin,
            poll,
            runtime.clone(),
        )));
        Ok(Watcher {
            shared,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        })
    }

    /// Tells the watching task to end; waiters wake.
    pub(crate) fn stop(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.changed.notify(usize::MAX);
    }

    /// Stops watching and waits for the task to end; waiters wake.
    pub(crate) async fn close(&self) {
        self.stop();
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.join().await;
        }
    }

    /// Completes at the next commit made elsewhere (or spuriously).
    pub(crate) fn wait(&self) -> BoxFuture<'static, ()> {
        let listener = self.shared.changed.listen();
        let closed = self.shared.closed.load(Ordering::Acquire);
        Box::pin(async move {
            if !closed {
                listener.await;
            }
        })
    }
}

async fn listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // The pool closing ends the watcher through `closed`, not an error.
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// How long the watcher waits before it connects again after a failure.
const RECONNECT: Duration = Duration::from_millis(100);

async fn watch(
    shared: Arc<Shared>,
    pool: PgPool,
    mut listening: Option<PgListener>,
    prefix: String,
    origin: String,
    poll: Option<Duration>,
    runtime: Runtime,
) {
    let wake_all = || {
        shared.changed.notify(usize::MAX);
    };
    let closed = || shared.closed.load(Ordering::Acquire);
    let tick = || -> BoxFuture<'static, ()> {
        match poll {
            Some(every) => runtime.sleep(every),
            None => Box::pin(futures_lite::future::pending()),
        }
    };
    let listen = listening.is_some();
    while !closed() {
        let Some(listener) = listening.as_mut() else {
            // Not listening: poll, and (if LISTEN is wanted) connect again.
            let stop = shared.changed.listen();
            if !closed() {
                let wait = if listen {
                    runtime.sleep(RECONNECT)
                } else {
                    tick()
                };
                futures_lite::future::or(wait, stop).await;
            }
            if closed() {
                return;
            }
            if listen {
                match self::listener(&pool).await {
                    Ok(again) => listening = Some(again),
                    Err(_) => continue,
                }
            }
            // Anything committed while nobody listened is seen by the
            // waiters' next look.
            wake_all();
            continue;
        };
        let stop = shared.changed.listen();
        if closed() {
            return;
        }
        let next = async { Some(listener.try_recv().await) };
        let polled = async {
            tick().await;
            None
        };
        let stopped = async {
            stop.await;
            None
        };
        match futures_lite::future::or(next, futures_lite::future::or(polled, stopped)).await {
            Some(Ok(Some(notification))) => {
                let payload = notification.payload();
                if let Some(from) = payload.strip_prefix(prefix.as_str())
                    && (from.is_empty() || from != origin)
                {
                    wake_all();
                }
            }
            Some(Ok(None) | Err(_)) => {
                // The connection was lost, and with it what was sent
                // meanwhile.
                listening = None;
                wake_all();
            }
            None => wake_all(),
        }
    }
}
