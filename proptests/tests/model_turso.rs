//! `TursoDriver` (`:memory:` and file databases) against the reference
//! model: random operation sequences, every observation compared;
//! `:memory:` under a plain `block_on`, files under tokio.
//!
//! Case count: `PROPTEST_CASES` (default 256, divided by 4 here: each case
//! runs real SQL). Long run:
//! `PROPTEST_CASES=40000 cargo test --release -p litebus-proptests --test model_turso`.

use litebus_proptests::check_against_model;
use litebus_proptests::ops::op;
use litebus_turso::conformance::{Files, Memory};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config() -> Config {
    let cases = Config::default().cases;
    Config {
        cases: (cases / 4).max(1),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..Config::default()
    }
}

fn tokio_run<F: std::future::Future>(case: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(case)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn turso_memory_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let factory = Memory::default();
        let result = futures_lite::future::block_on(check_against_model(&factory, &ops));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn turso_file_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let factory = Files::default();
        let result = tokio_run(check_against_model(&factory, &ops));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
