//! Spans, events and metrics through `SqlxDriver` on a file, with the SQL
//! engine's span of each transaction: the test kit's telemetry check.

litebus_conformance::telemetry_tests!(litebus_sqlx::conformance::Files);
