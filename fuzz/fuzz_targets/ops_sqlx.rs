//! Arbitrary operation sequences on a `SqlxDriver` `:memory:` bus, each
//! compared with the reference model after every step, cut receives among
//! them (sqlx runs its statements on a task of its own, so a cut call may
//! still be running when the next one comes). A target of its own: sqlx
//! pays a thread hop per statement, about 20 times turso's cost per input.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use litebus_proptests::check_on_reused_store;
use litebus_proptests::ops::Op;

static SQLX: LazyLock<litebus_sqlx::conformance::Memory> = LazyLock::new(Default::default);

fuzz_target!(|ops: Vec<Op>| {
    let ops = &ops[..ops.len().min(100)];
    futures_lite::future::block_on(async {
        if let Err(diff) = check_on_reused_store(&*SQLX, "fuzz", ops).await {
            panic!("sqlx bus and model differ: {diff}");
        }
    });
});
