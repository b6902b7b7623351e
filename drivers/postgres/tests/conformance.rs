//! The conformance suite on `PgDriver`, each store a schema of the server
//! that `LITEBUS_PG_URL` names, under `block_on`, tokio and smol. Without
//! the variable every case says so and returns (in CI it fails).

use litebus_postgres::conformance::Schemas;

litebus_conformance::conformance_tests!(factory_or_skip: Schemas::new());
