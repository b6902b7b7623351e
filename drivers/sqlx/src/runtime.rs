//! sqlx needs a tokio context for every call; the driver carries the runtime
//! it was opened in and enters it on each poll, so any executor can drive it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use litebus::driver::BoxFuture;
use litebus::{DriverError, Result};
use tokio::runtime::Handle;

/// The tokio runtime the driver was opened in, and the background tasks it
/// runs there (so that closing can wait for them).
#[derive(Debug, Clone)]
pub(crate) struct Runtime {
    handle: Handle,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Runtime {
    /// The runtime of the calling task; an error outside any.
    pub(crate) fn current() -> Result<Self> {
        Handle::try_current()
            .map(|handle| Runtime {
                handle,
                tasks: Arc::default(),
            })
            .map_err(|_| {
                DriverError::fatal(
                    "litebus-sqlx runs sqlx on tokio: open the driver inside a tokio runtime",
                )
                .into()
            })
    }

    /// `future`, entering the runtime each time it is polled.
    pub(crate) fn run<'a, T: 'a>(
        &self,
        future: impl Future<Output = T> + Send + 'a,
    ) -> BoxFuture<'a, T> {
        Box::pin(InRuntime {
            handle: self.handle.clone(),
            future: Box::pin(future),
        })
    }

    /// Runs `task` on the runtime without waiting for it on close.
    pub(crate) fn spawn_untracked(
        &self,
        task: BoxFuture<'static, ()>,
    ) -> tokio::task::JoinHandle<()> {
        self.handle.spawn(task)
    }

    /// Runs `task` on the runtime.
    pub(crate) fn spawn(&self, task: BoxFuture<'static, ()>) {
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(self.handle.spawn(task));
    }

    /// Waits for every background task started so far.
    pub(crate) async fn join_background(&self) {
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            // A task that panicked has nothing left to wait for.
            let _ = task.await;
        }
    }
}

struct InRuntime<'a, T> {
    handle: Handle,
    future: BoxFuture<'a, T>,
}

impl<T> Future for InRuntime<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let _entered = this.handle.enter();
        this.future.as_mut().poll(cx)
    }
}
