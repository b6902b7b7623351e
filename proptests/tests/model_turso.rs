//! `TursoDriver` (`:memory:` and file databases) against the reference
//! model: random operation sequences, every observation compared;
//! `:memory:` under a plain `block_on`, files under tokio.
//!
//! Case count: `PROPTEST_CASES` (default 256, divided by 4 here: each case
//! runs real SQL). Long run:
//! `PROPTEST_CASES=40000 cargo test --release -p litebus-proptests --test model_turso`.

use litebus_conformance::kit::run;
use litebus_turso::conformance::{Files, Memory};

litebus_proptests::sql_model_tests! {
    turso_memory_matches_model: Memory::default(), run::block_on;
    turso_file_matches_model: Files::default(), run::tokio;
    turso_memory_redrives_match_model: Memory::default(), run::block_on,
        litebus_proptests::ops::redrive_ops();
}

litebus_proptests::sql_reused_store_tests! {
    turso_memory_reused_matches_model: Memory, run::block_on;
}
