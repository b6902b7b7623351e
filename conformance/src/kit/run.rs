//! The executors every suite runs on: a plain `block_on`, a multi-threaded
//! tokio runtime and smol. Each takes a future (a case) and runs it to the
//! end on a fresh executor.

use std::future::Future;

/// `futures_lite::future::block_on`: no runtime at all.
pub fn block_on<F: Future>(case: F) -> F::Output {
    futures_lite::future::block_on(case)
}

/// A multi-threaded tokio runtime with two workers.
pub fn tokio<F: Future>(case: F) -> F::Output {
    ::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(case)
}

/// smol's `block_on` (async-io's reactor).
pub fn smol<F: Future>(case: F) -> F::Output {
    ::smol::block_on(case)
}
