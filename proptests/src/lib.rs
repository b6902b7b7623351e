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
/// ([`check_against_model`]), with [`sql_config`]. A strategy of sequences
/// after the executor (`name: factory, executor, strategy;`) takes the
/// place of [`ops::op`]'s sequences of up to 60.
#[macro_export]
macro_rules! sql_model_tests {
    ($($name:ident: $factory:expr, $run:path $(, $ops:expr)?;)*) => {
        proptest::proptest! {
            #![proptest_config($crate::sql_config())]
            $(
                #[test]
                fn $name(ops in $crate::sequences!($($ops)?)) {
                    let factory = $factory;
                    let result = $run($crate::check_against_model(&factory, &ops));
                    proptest::prop_assert!(result.is_ok(), "{}", result.unwrap_err());
                }
            )*
        }
    };
}

/// The sequences of a model test: [`ops::op`]'s, up to 60, or the
/// strategy given.
#[doc(hidden)]
#[macro_export]
macro_rules! sequences {
    () => {
        proptest::collection::vec($crate::ops::op(), 1..60)
    };
    ($ops:expr) => {
        $ops
    };
}

/// Like [`sql_model_tests!`], on one store per test that every case
/// empties and uses again ([`check_on_reused_store`], as the fuzz targets
/// do): `name: FactoryType, executor;`.
#[macro_export]
macro_rules! sql_reused_store_tests {
    ($($name:ident: $factory:ty, $run:path;)*) => {
        proptest::proptest! {
            #![proptest_config($crate::sql_config())]
            $(
                #[test]
                fn $name(ops in proptest::collection::vec($crate::ops::op(), 1..60)) {
                    static FACTORY: std::sync::LazyLock<$factory> =
                        std::sync::LazyLock::new(<$factory>::default);
                    let store = stringify!($name);
                    let result = $run($crate::check_on_reused_store(&*FACTORY, store, &ops));
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
    check_in(factory, fresh_store("check"), ops).await
}

/// What empties a SQL store and starts its seqs again from 1, one
/// statement each. Groups go first: a per-key group's deleted handout
/// brings in its key's next message while the group is there.
const EMPTY_SQL_STORE: [&str; 7] = [
    "DELETE FROM litebus_topics",
    "DELETE FROM litebus_dedupe",
    "DELETE FROM litebus_tombstones",
    "DELETE FROM litebus_groups",
    "DELETE FROM litebus_handouts",
    "DELETE FROM litebus_messages",
    "DELETE FROM sqlite_sequence WHERE name = 'litebus_messages'",
];

/// Like [`check_against_model`], on the one SQL store `store` of `factory`
/// for every call: it is emptied first (with [`Factory::run_sql`]), so a
/// fuzzer pays for a database once per process, not once per input.
pub async fn check_on_reused_store<F: Factory>(
    factory: &F,
    store: &str,
    ops: &[ops::Op],
) -> Result<(), String> {
    // Opened once, so that the store exists for the statements below.
    drop(factory.open(store).await.expect("open driver"));
    for sql in EMPTY_SQL_STORE {
        let run = factory
            .run_sql(store, sql)
            .expect("a store with SQL: its factory runs statements");
        run.await.map_err(|e| format!("{sql}: {e}"))?;
    }
    check_in(factory, store.to_owned(), ops).await
}

/// A fuzz target's body: the first 100 of `ops` on the one store of
/// `factory` that every input empties and uses again
/// ([`check_on_reused_store`]), under `block_on`; panics with the first
/// difference from the model.
pub fn fuzz_on_reused_store<F: Factory>(factory: &F, ops: &[ops::Op]) {
    let ops = &ops[..ops.len().min(100)];
    if let Err(diff) = futures_lite::future::block_on(check_on_reused_store(factory, "fuzz", ops)) {
        panic!("bus and model differ: {diff}");
    }
}

async fn check_in<F: Factory>(factory: &F, store: String, ops: &[ops::Op]) -> Result<(), String> {
    let mut model = model::Model::new();
    let mut sut = harness::Harness::new(factory, store).await;
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
