//! The conformance suite on `TursoDriver`: file and `:memory:` databases,
//! each under tokio, smol and a plain `block_on` (turso needs no runtime).

use litebus_turso::conformance::{Files, Memory};

mod file {
    use super::*;
    litebus_conformance::conformance_tests!(factory: Files::default());
}

mod memory {
    use super::*;
    litebus_conformance::conformance_tests!(factory: Memory::default());
}
