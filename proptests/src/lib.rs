//! The reference model of litebus and the machinery that holds every driver
//! to it: operations ([`ops`]), the model ([`model`]), a harness that applies
//! the same operations to a real bus ([`harness`]), and a fault-injecting
//! driver wrapper ([`faults`]).
//!
//! The property tests in `tests/` and the fuzz targets in `fuzz/` both use
//! [`check_against_model`].

pub mod faults;
pub mod harness;
pub mod model;
pub mod ops;

use std::sync::atomic::{AtomicU64, Ordering};

use litebus_conformance::Factory;

/// The proptest settings of the SQL drivers' model tests: a quarter of
/// `PROPTEST_CASES` (each case runs real SQL), failures kept beside the
/// test as `*.regressions`.
pub fn sql_config() -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, FileFailurePersistence};
    let cases = Config::default().cases;
    Config {
        cases: (cases / 4).max(1),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}

/// Property tests holding SQL drivers to the model: each
/// `name: factory, executor;` line is a test running random operation
/// sequences on a bus over `factory` under `executor` (a function running
/// a future), every observation compared with the model
/// ([`check_against_model`]), with [`sql_config`].
#[macro_export]
macro_rules! sql_model_tests {
    ($($name:ident: $factory:expr, $run:path;)*) => {
        proptest::proptest! {
            #![proptest_config($crate::sql_config())]
            $(
                #[test]
                fn $name(ops in proptest::collection::vec($crate::ops::op(), 1..60)) {
                    let factory = $factory;
                    let result = $run($crate::check_against_model(&factory, &ops));
                    proptest::prop_assert!(result.is_ok(), "{}", result.unwrap_err());
                }
            )*
        }
    };
}

/// A unique store name for one run.
pub fn fresh_store(prefix: &str) -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", RUNS.fetch_add(1, Ordering::Relaxed))
}

/// Applies `ops` to the model and to a bus on a fresh store of `factory`,
/// comparing every observation. Returns the first difference.
pub async fn check_against_model<F: Factory>(factory: &F, ops: &[ops::Op]) -> Result<(), String> {
    let mut model = model::Model::new();
    let mut sut = harness::Harness::new(factory, fresh_store("check")).await;
    for (step, op) in ops.iter().enumerate() {
        model.apply(op);
        let got = sut.apply(op).await;
        if Some(&got) != model.last.as_ref() {
            return Err(format!(
                "step {step}: {op:?}\n  bus:   {got:?}\n  model: {:?}",
                model.last
            ));
        }
    }
    sut.close().await;
    Ok(())
}
