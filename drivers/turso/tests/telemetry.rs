//! Spans, events and metrics through `TursoDriver` on a file, with the SQL
//! engine's span of each transaction: the test kit's telemetry check.

litebus_conformance::telemetry_tests!(litebus_turso::conformance::Files);
