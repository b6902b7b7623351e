//! Arbitrary operation sequences on a `TursoDriver` `:memory:` bus, each
//! compared with the reference model after every step, cut receives among
//! them. One database serves the whole fuzz process and is emptied before
//! each input (4 times faster than a new one).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use litebus_proptests::fuzz_on_reused_store;
use litebus_proptests::ops::Op;

static STORE: LazyLock<litebus_turso::conformance::Memory> = LazyLock::new(Default::default);

fuzz_target!(|ops: Vec<Op>| fuzz_on_reused_store(&*STORE, &ops));
