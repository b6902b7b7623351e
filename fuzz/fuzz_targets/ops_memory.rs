//! Arbitrary operation sequences on a `MemoryDriver` bus, compared with the
//! reference model after every step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litebus_conformance::MemoryFactory;
use litebus_proptests::check_against_model;
use litebus_proptests::ops::Op;

fuzz_target!(|ops: Vec<Op>| {
    let ops = &ops[..ops.len().min(200)];
    let factory = MemoryFactory::default();
    if let Err(diff) = futures_lite::future::block_on(check_against_model(&factory, ops)) {
        panic!("bus and model differ: {diff}");
    }
});
