//! The conformance suite on `MemoryDriver`, under three executors.

mod block_on {
    litebus::conformance_tests!(
        factory: litebus::conformance::MemoryFactory::default(),
        run: |case| futures_lite::future::block_on(case),
    );
}

mod tokio_multi_thread {
    litebus::conformance_tests!(
        factory: litebus::conformance::MemoryFactory::default(),
        run: |case| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(case);
        },
    );
}

mod smol {
    litebus::conformance_tests!(
        factory: litebus::conformance::MemoryFactory::default(),
        run: |case| {
            let ex = smol::Executor::new();
            smol::block_on(ex.run(ex.spawn(case)));
        },
    );
}
