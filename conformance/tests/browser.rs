//! The conformance suite on `MemoryDriver` in a browser (wasm32, headless
//! Chromium through `wasm-bindgen-test`). Run by `scripts/test`:
//! `cargo test -p litebus-conformance --target wasm32-unknown-unknown --test browser`.

#![cfg(target_arch = "wasm32")]

use litebus_conformance::MemoryFactory;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod memory {
    use super::*;
    litebus_conformance::conformance_tests!(factory: MemoryFactory::default(), wasm_bindgen_test);
}
