//! Where the work of litebus's sqlx drivers runs. With the `tokio` feature a driver opened inside a
//! tokio runtime keeps that runtime and enters it on each poll, so any
//! executor can drive it; with the `smol` feature a driver opened outside any
//! tokio runtime runs its background tasks on smol's global executor (sqlx
//! then uses async-io for its timers).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use litebus::Result;
use litebus::driver::BoxFuture;

#[cfg(not(any(feature = "tokio", feature = "smol")))]
compile_error!("litebus-runtime needs a runtime feature: `tokio` or `smol`");

/// The runtime the driver was opened in, and the background tasks it runs
/// there (so that closing can wait for them).
#[derive(Debug, Clone)]
pub struct Runtime {
    kind: Kind,
    tasks: Arc<Mutex<Vec<Task>>>,
}

#[derive(Debug, Clone)]
enum Kind {
    #[cfg(feature = "tokio")]
    Tokio(tokio::runtime::Handle),
    #[cfg(feature = "smol")]
    Smol,
}

/// A background task started by [`Runtime::spawn_untracked`]. Dropping it
/// lets the task run on (as tokio does), so work a caller stopped waiting for
/// still finishes.
#[derive(Debug)]
pub enum Task {
    /// A task of a tokio runtime.
    #[cfg(feature = "tokio")]
    Tokio(tokio::task::JoinHandle<()>),
    /// A task of smol's global executor.
    #[cfg(feature = "smol")]
    Smol(Option<smol::Task<()>>),
}

/// A driver's long-running task (its engine's pump), shared by the
/// driver's clones and joined once, by whichever clone shuts the driver
/// down first.
#[derive(Debug, Clone)]
pub struct Pump(Arc<Mutex<Option<Task>>>);

impl Pump {
    /// Runs `task` on `runtime`.
    pub fn spawn(runtime: &Runtime, task: BoxFuture<'static, ()>) -> Self {
        Pump(Arc::new(Mutex::new(Some(runtime.spawn_untracked(task)))))
    }

    /// Waits for the task to end (it was told to, e.g. its engine closed);
    /// at once if another clone already waited.
    pub async fn join(&self) {
        let task = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.join().await;
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        #[cfg(feature = "smol")]
        if let Task::Smol(task) = self
            && let Some(task) = task.take()
        {
            task.detach();
        }
    }
}

impl Task {
    fn is_finished(&self) -> bool {
        match self {
            #[cfg(feature = "tokio")]
            Task::Tokio(task) => task.is_finished(),
            #[cfg(feature = "smol")]
            Task::Smol(task) => task.as_ref().is_none_or(smol::Task::is_finished),
        }
    }

    /// Waits for the task to end (a task that panicked has ended too).
    pub async fn join(mut self) {
        match &mut self {
            #[cfg(feature = "tokio")]
            Task::Tokio(task) => {
                let _ = task.await;
            }
            #[cfg(feature = "smol")]
            Task::Smol(task) => {
                if let Some(task) = task.take() {
                    let _ = task.fallible().await;
                }
            }
        }
    }
}

impl Runtime {
    /// The runtime of the calling task: its tokio runtime if there is one,
    /// else smol's global executor when the `smol` feature is on; an error
    /// otherwise.
    #[cfg_attr(
        feature = "smol",
        allow(clippy::unnecessary_wraps, reason = "fails only without smol")
    )]
    pub fn current() -> Result<Self> {
        #[cfg(feature = "tokio")]
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            return Ok(Runtime::new(Kind::Tokio(handle)));
        }
        #[cfg(feature = "smol")]
        return Ok(Runtime::new(Kind::Smol));
        #[cfg(not(feature = "smol"))]
        Err(litebus::DriverError::fatal(
            "litebus's sqlx drivers run sqlx on tokio: open the driver inside a tokio runtime \
             (or enable the `smol` feature)",
        )
        .into())
    }

    fn new(kind: Kind) -> Self {
        Runtime {
            kind,
            tasks: Arc::default(),
        }
    }

    /// `future`, inside the runtime each time it is polled.
    pub fn run<'a, T: 'a>(&self, future: impl Future<Output = T> + Send + 'a) -> BoxFuture<'a, T> {
        match &self.kind {
            #[cfg(feature = "tokio")]
            Kind::Tokio(handle) => Box::pin(InTokio {
                handle: handle.clone(),
                future: Box::pin(future),
            }),
            #[cfg(feature = "smol")]
            Kind::Smol => Box::pin(future),
        }
    }

    /// Runs `task` on the runtime without waiting for it on close.
    pub fn spawn_untracked(&self, task: BoxFuture<'static, ()>) -> Task {
        match &self.kind {
            #[cfg(feature = "tokio")]
            Kind::Tokio(handle) => Task::Tokio(handle.spawn(task)),
            #[cfg(feature = "smol")]
            Kind::Smol => Task::Smol(Some(smol::spawn(task))),
        }
    }

    /// Runs `task` on the runtime; [`Runtime::join_background`] waits for it.
    pub fn spawn(&self, task: BoxFuture<'static, ()>) {
        let task = self.spawn_untracked(task);
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Waits for every background task started so far.
    pub async fn join_background(&self) {
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            task.join().await;
        }
    }

    /// A timer of this runtime.
    pub fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        match &self.kind {
            #[cfg(feature = "tokio")]
            Kind::Tokio(handle) => {
                let _entered = handle.enter();
                Box::pin(tokio::time::sleep(duration))
            }
            #[cfg(feature = "smol")]
            Kind::Smol => Box::pin(async move {
                smol::Timer::after(duration).await;
            }),
        }
    }
}

#[cfg(feature = "tokio")]
struct InTokio<'a, T> {
    handle: tokio::runtime::Handle,
    future: BoxFuture<'a, T>,
}

#[cfg(feature = "tokio")]
impl<T> Future for InTokio<'_, T> {
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        let this = self.get_mut();
        let _entered = this.handle.enter();
        this.future.as_mut().poll(cx)
    }
}
