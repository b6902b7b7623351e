//! A bus over a driver that fails calls where the fuzzer says: errors surface,
//! nothing panics, nothing published is lost, nothing acked comes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litebus_proptests::faults::check_faults;
use litebus_proptests::ops::Op;

fuzz_target!(|input: (Vec<u8>, Vec<Op>)| {
    let (schedule, ops) = input;
    let ops = &ops[..ops.len().min(200)];
    if let Err(broken) = futures_lite::future::block_on(check_faults(schedule, ops)) {
        panic!("guarantee broken under faults: {broken}");
    }
});
