//! The conformance suite on `MemoryDriver` in a browser (wasm32, headless
//! Chromium through `wasm-bindgen-test`), with the JavaScript clock.
//! Run by `scripts/test`:
//! `cargo test -p litebus --target wasm32-unknown-unknown --features wasm,conformance --test browser`.

#![cfg(target_arch = "wasm32")]

use litebus::conformance::MemoryFactory;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod memory {
    use super::*;
    litebus::conformance_tests!(factory: MemoryFactory::default(), wasm_bindgen_test);
}
