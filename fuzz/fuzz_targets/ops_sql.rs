//! Arbitrary operation sequences on a `TursoDriver` `:memory:` bus and on a
//! `SqlxDriver` `:memory:` bus, each compared with the reference model after
//! every step. turso's database serves the whole fuzz process and is emptied
//! before each input (4 times faster than a new one); sqlx gets a new one
//! per input, which measured faster than emptying its one (sqlx's cost is
//! its statements, not the database).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use litebus_proptests::ops::Op;
use litebus_proptests::{check_against_model, check_on_reused_store};

static TURSO: LazyLock<litebus_turso::conformance::Memory> = LazyLock::new(Default::default);

fuzz_target!(|ops: Vec<Op>| {
    let ops = &ops[..ops.len().min(100)];
    futures_lite::future::block_on(async {
        if let Err(diff) = check_on_reused_store(&*TURSO, "fuzz", ops).await {
            panic!("turso bus and model differ: {diff}");
        }
        let sqlx = litebus_sqlx::conformance::Memory::default();
        if let Err(diff) = check_against_model(&sqlx, ops).await {
            panic!("sqlx bus and model differ: {diff}");
        }
    });
});
