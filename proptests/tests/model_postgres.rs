//! `PgDriver` against the reference model: random operation sequences on
//! a schema of the server `LITEBUS_PG_URL` names, every observation
//! compared, under tokio. Without a server each case says so and passes
//! (in CI it fails).
//!
//! Case count: `PROPTEST_CASES` (default 256, divided by 4 here: each case
//! runs real SQL).

use litebus_conformance::kit::run;
use litebus_postgres::conformance::Schemas;

proptest::proptest! {
    #![proptest_config(litebus_proptests::sql_config())]

    #[test]
    fn postgres_matches_model(ops in proptest::collection::vec(litebus_proptests::ops::op(), 1..60)) {
        let Some(factory) = Schemas::new() else { return Ok(()) };
        let result = run::tokio(litebus_proptests::check_against_model(&factory, &ops));
        proptest::prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
