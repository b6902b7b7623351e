//! Several OS processes on one database file, and processes killed in the
//! middle of their work (SIGKILL): the test kit's process tests
//! (`litebus_conformance::kit::processes`) on `SqlxDriver` files.

fn main() {
    litebus_conformance::kit::processes::main::<litebus_sqlx::conformance::Files>();
}
