//! The conformance suite on `TursoDriver::memory()` in a browser (wasm32,
//! headless Chromium through `wasm-bindgen-test`): turso's in-memory I/O with
//! the JavaScript clock. Run by `scripts/test`:
//! `cargo test -p litebus-turso --target wasm32-unknown-unknown --features conformance --test browser`.

#![cfg(target_arch = "wasm32")]

use litebus_turso::conformance::Memory;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod turso_memory {
    use super::*;
    litebus_conformance::conformance_tests!(factory: Memory::default(), wasm_bindgen_test);
}
