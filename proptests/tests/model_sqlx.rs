//! `SqlxDriver` (`:memory:` and file databases) against the reference model:
//! random operation sequences, every observation compared; `:memory:` under
//! a plain `block_on`, files under smol (the driver enters its own tokio
//! runtime, whatever executor polls it).
//!
//! Case count: `PROPTEST_CASES` (default 256, divided by 4 here: each case
//! runs real SQL). Long run:
//! `PROPTEST_CASES=40000 cargo test --release -p litebus-proptests --test model_sqlx`.

use litebus_conformance::kit::run;
use litebus_sqlx::conformance::{Files, Memory};

litebus_proptests::sql_model_tests! {
    sqlx_memory_matches_model: Memory::default(), run::block_on;
    sqlx_file_matches_model: Files::default(), run::smol;
    sqlx_memory_redrives_match_model: Memory::default(), run::block_on,
        litebus_proptests::ops::redrive_ops();
}

litebus_proptests::sql_reused_store_tests! {
    sqlx_memory_reused_matches_model: Memory, run::block_on;
}
