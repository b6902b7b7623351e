//! Running a case in a browser page. `wasm-bindgen-futures` wakes tasks in
//! microtasks, and a case on in-memory storage with a manual clock never
//! waits for a real timer: left alone, case after case would run without
//! the page's event loop taking a turn, and the test runner's calls through
//! `chromedriver` (which the page answers between tasks) would time out
//! after 30 s. So a case gives the event loop a turn (a `setTimeout` of 0)
//! when it starts and whenever it has run [`TURN`] without one.

use litebus::driver::BoxFuture;
use litebus::{Clock, Timestamp, WasmClock};
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

/// The longest a case runs before the page's event loop takes a turn.
pub const TURN: Duration = Duration::from_millis(100);

/// Runs `case`, letting the page's event loop take a turn at the start and
/// after every [`TURN`] of running.
pub async fn in_page<F: Future>(case: F) -> F::Output {
    let clock = WasmClock;
    let mut case = std::pin::pin!(case);
    let mut since = Timestamp::ZERO;
    let mut turn: Option<BoxFuture<'static, ()>> = None;
    std::future::poll_fn(move |cx| {
        loop {
            if let Some(pause) = turn.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                turn = None;
                since = clock.now();
            }
            if clock.now().saturating_duration_since(since) >= TURN {
                turn = Some(clock.sleep(Duration::ZERO));
                continue;
            }
            return case.as_mut().poll(cx);
        }
    })
    .await
}
