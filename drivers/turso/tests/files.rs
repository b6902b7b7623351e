//! Bad database files given to `TursoDriver::open` (random bytes, a cut
//! file, a directory, a database from a newer litebus, a read-only file),
//! each a clear error that leaves the file as it was, and the query plans
//! of the hot statements: the test kit's file tests.

litebus_conformance::file_tests!(litebus_turso::conformance::Files);
