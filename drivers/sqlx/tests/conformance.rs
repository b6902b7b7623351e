//! The conformance suite on `SqlxDriver`: file and `:memory:` databases,
//! each under tokio, smol and a plain `block_on`. Drivers are opened on one
//! shared tokio runtime (see `litebus_sqlx::conformance`), or with the `smol`
//! feature on smol's executor (sqlx on async-io, no tokio at all); the cases
//! run on the executor named by their module.

use litebus_sqlx::conformance::{Files, Memory};

mod file {
    use super::*;
    litebus_conformance::conformance_tests!(factory: Files::default());
}

mod memory {
    use super::*;
    litebus_conformance::conformance_tests!(factory: Memory::default());
}

#[cfg(feature = "smol")]
mod file_smol_runtime {
    use super::*;
    litebus_conformance::conformance_tests!(
        factory: Files::smol(),
        run: litebus_conformance::kit::run::smol,
    );
}

#[cfg(feature = "smol")]
mod memory_smol_runtime {
    use super::*;
    litebus_conformance::conformance_tests!(
        factory: Memory::smol(),
        run: litebus_conformance::kit::run::block_on,
    );
}
