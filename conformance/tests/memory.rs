//! The conformance suite on `MemoryDriver`, under `block_on`, a
//! multi-threaded tokio runtime and smol.

litebus_conformance::conformance_tests!(factory: litebus_conformance::MemoryFactory::default());
