//! Arbitrary operation sequences on a `SqlxDriver` `:memory:` bus, compared
//! with the reference model after every step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litebus_proptests::check_against_model;
use litebus_proptests::ops::Op;
use litebus_sqlx::conformance::Memory;

fuzz_target!(|ops: Vec<Op>| {
    let ops = &ops[..ops.len().min(100)];
    let factory = Memory::default();
    if let Err(diff) = futures_lite::future::block_on(check_against_model(&factory, ops)) {
        panic!("bus and model differ: {diff}");
    }
});
