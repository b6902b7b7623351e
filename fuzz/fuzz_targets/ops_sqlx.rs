//! Arbitrary operation sequences on a `SqlxDriver` `:memory:` bus, each
//! compared with the reference model after every step, cut receives among
//! them (sqlx runs its statements on a task of its own, so a cut call may
//! still be running when the next one comes). One database serves the
//! whole fuzz process and is emptied before each input.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use litebus_proptests::fuzz_on_reused_store;
use litebus_proptests::ops::Op;

static STORE: LazyLock<litebus_sqlx::conformance::Memory> = LazyLock::new(Default::default);

fuzz_target!(|ops: Vec<Op>| fuzz_on_reused_store(&*STORE, &ops));
