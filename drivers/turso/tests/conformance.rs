//! The conformance suite on `TursoDriver`: file and `:memory:` databases,
//! each under tokio, smol and a plain `block_on` (turso needs no runtime).

use litebus_turso::conformance::{Files, Memory};

fn tokio_run<F: std::future::Future>(case: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(case)
}

mod file_tokio {
    use super::*;
    litebus::conformance_tests!(factory: Files::default(), run: tokio_run);
}

mod file_smol {
    use super::*;
    litebus::conformance_tests!(factory: Files::default(), run: smol::block_on);
}

mod file_block_on {
    use super::*;
    litebus::conformance_tests!(factory: Files::default(), run: futures_lite::future::block_on);
}

mod memory_tokio {
    use super::*;
    litebus::conformance_tests!(factory: Memory::default(), run: tokio_run);
}

mod memory_smol {
    use super::*;
    litebus::conformance_tests!(factory: Memory::default(), run: smol::block_on);
}

mod memory_block_on {
    use super::*;
    litebus::conformance_tests!(factory: Memory::default(), run: futures_lite::future::block_on);
}
