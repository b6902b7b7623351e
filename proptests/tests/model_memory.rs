//! `MemoryDriver` against the reference model: random operation sequences,
//! every observation compared, under two executors.
//!
//! Case count: `PROPTEST_CASES` (default 256). Long run:
//! `PROPTEST_CASES=10000 cargo test --release -p litebus-proptests`.

use std::future::Future;
use std::sync::LazyLock;

use litebus_conformance::MemoryFactory;
use litebus_proptests::fresh_store;
use litebus_proptests::harness::Harness;
use litebus_proptests::model::Model;
use litebus_proptests::ops::{Op, op, redrive_ops};
use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

static FACTORY: LazyLock<MemoryFactory> = LazyLock::new(MemoryFactory::default);

/// The reference side: the model generates and predicts.
struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new()).boxed()
    }

    fn transitions(_state: &Model) -> BoxedStrategy<Op> {
        op().boxed()
    }

    fn apply(mut state: Model, transition: &Op) -> Model {
        state.apply(transition);
        state
    }
}

/// How a run drives the bus's futures.
trait Executor {
    fn new() -> Self;
    fn run<T>(&self, f: impl Future<Output = T>) -> T;
}

struct BlockOn;

impl Executor for BlockOn {
    fn new() -> Self {
        BlockOn
    }
    fn run<T>(&self, f: impl Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }
}

struct Tokio(tokio::runtime::Runtime);

impl Executor for Tokio {
    fn new() -> Self {
        Tokio(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio"),
        )
    }
    fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.0.block_on(f)
    }
}

struct Sut<E> {
    executor: E,
    harness: Harness<'static, MemoryFactory>,
}

struct MemoryTest<E>(std::marker::PhantomData<E>);

impl<E: Executor> StateMachineTest for MemoryTest<E> {
    type SystemUnderTest = Sut<E>;
    type Reference = Reference;

    fn init_test(_: &Model) -> Sut<E> {
        let executor = E::new();
        let harness = executor.run(Harness::new(&*FACTORY, fresh_store("model")));
        Sut { executor, harness }
    }

    fn apply(mut sut: Sut<E>, model: &Model, op: Op) -> Sut<E> {
        let got = sut.executor.run(sut.harness.apply(&op));
        assert_eq!(Some(&got), model.last.as_ref(), "after {op:?}");
        sut
    }

    fn teardown(sut: Sut<E>) {
        sut.executor.run(sut.harness.close());
    }
}

prop_state_machine! {
    #![proptest_config(Config {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..Config::default()
    })]

    #[test]
    fn memory_driver_matches_model_under_block_on(sequential 1..80 => MemoryTest<BlockOn>);

    #[test]
    fn memory_driver_matches_model_under_tokio(sequential 1..80 => MemoryTest<Tokio>);
}

proptest! {
    #![proptest_config(Config {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..Config::default()
    })]

    /// Sequences about dead letters taken back ([`redrive_ops`]).
    #[test]
    fn memory_redrives_match_model(ops in redrive_ops()) {
        let checked = futures_lite::future::block_on(
            litebus_proptests::check_against_model(&*FACTORY, &ops),
        );
        prop_assert!(checked.is_ok(), "{}", checked.unwrap_err());
    }
}

/// A sequence the fuzzer found (`ops_memory`): an ordered group's delivery
/// (seq 1, attempt 1) from before a seek is extended after the seek has
/// handed the same message out again as (seq 1, attempt 1). The store knows
/// a delivery by (seq, attempt), so it extends the new lease; the consumer
/// kept the old end for its delivery out and claimed again once that passed,
/// getting its delivery a second time, where the model (and the store's
/// lease) says it still holds it. Deliveries now carry their group's
/// generation, which the seek moved on: the extend is `LeaseLost`, in the
/// model and on the bus alike.
#[test]
fn an_extend_after_a_seek_reaches_the_delivery_out_of_the_same_identity() {
    use litebus_proptests::ops::{
        GroupChoice, MsgSpec, OrderChoice, StartChoice, SubSpec, TopicChoice,
    };
    let spec = SubSpec {
        order: OrderChoice::Ordered,
        max_attempts: 41,
        lease_ms: 10_537,
        prefetch: 41,
        start: StartChoice::Beginning,
        backoff: litebus_proptests::ops::BackoffChoice::default(),
        rate_limit: None,
    };
    let message = MsgSpec {
        id: Some(25),
        key: None,
        delay_ms: None,
        too_large: false,
        priority: 0,
    };
    let receive = Op::Receive { consumer: 0 };
    let ops = [
        Op::Subscribe(TopicChoice::A, GroupChoice::G1, spec),
        Op::Publish(TopicChoice::A, message),
        receive.clone(),
        Op::Advance(30_050),
        receive.clone(),
        Op::Seek(TopicChoice::A, GroupChoice::G1, StartChoice::Beginning),
        Op::Advance(25_697),
        receive.clone(),
        // The first delivery it holds: (seq 1, attempt 1) from before the seek.
        Op::Extend {
            consumer: 0,
            held: 0,
            by_ms: 65_535,
        },
        Op::Advance(30_050),
        receive,
    ];
    let checked =
        futures_lite::future::block_on(litebus_proptests::check_against_model(&*FACTORY, &ops));
    assert_eq!(checked, Ok(()));
}
