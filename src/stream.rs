//! How the stream forms ([`Subscription`](crate::Subscription),
//! [`Follow`](crate::Follow)) treat errors: a retryable error is yielded and
//! the next look waits a growing pause; a fatal one is yielded and ends the
//! stream; [`Error::Closed`] ends it quietly.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::bus::BusInner;
use crate::driver::BoxFuture;
use crate::error::{Error, Result};

/// The first pause after a retryable error; it doubles up to
/// [`MAX_BACKOFF`] and starts again after a success.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A stream's state after errors.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    /// The pause before the next look at the store, after a retryable error.
    backoff: Option<Duration>,
    /// A fatal error was yielded: the stream has ended.
    ended: bool,
}

impl StreamState {
    /// A stream's `poll_next`: polls the look in progress in `slot`, or
    /// one `start` makes (given the pause to wait first), and yields what
    /// it gives.
    pub(crate) fn poll_next<T>(
        &mut self,
        slot: &mut Option<BoxFuture<'static, Result<T>>>,
        cx: &mut Context<'_>,
        start: impl FnOnce(Option<Duration>) -> BoxFuture<'static, Result<T>>,
    ) -> Poll<Option<Result<T>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = slot.get_or_insert_with(|| start(self.backoff));
        let Poll::Ready(result) = next.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        *slot = None;
        self.yield_result(result)
    }

    /// What the stream yields for `result`, and how it goes on.
    fn yield_result<T>(&mut self, result: Result<T>) -> Poll<Option<Result<T>>> {
        match result {
            Ok(item) => {
                self.backoff = None;
                Poll::Ready(Some(Ok(item)))
            }
            Err(Error::Closed) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Err(e) if e.is_retryable() => {
                self.backoff = Some(next_backoff(self.backoff, "stream", &e));
                Poll::Ready(Some(Err(e)))
            }
            Err(e) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

/// The pause after one more retryable error in a row (`error`, met by
/// `what`), given the one before.
pub(crate) fn next_backoff(previous: Option<Duration>, what: &str, error: &Error) -> Duration {
    let pause = previous.map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
    crate::telemetry::retrying(what, error, pause);
    pause
}

/// Waits `pause` on the bus clock, or until the bus closes.
pub(crate) async fn wait_out(bus: &Arc<BusInner>, pause: Option<Duration>) {
    if let Some(pause) = pause {
        let until = bus.now() + pause;
        futures_lite::future::or(bus.clock.sleep_until(until), async {
            bus.closing.listen().await;
        })
        .await;
    }
}
