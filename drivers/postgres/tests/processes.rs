//! Several OS processes on one PostgreSQL store (two publishers, two
//! consumers in each of two groups), and processes killed in the middle of
//! their work (SIGKILL): the test kit's process tests on `PgDriver`, each
//! process with its own pool, against the server `LITEBUS_PG_URL` names.

fn main() {
    // A child process has its role and the variable from its parent.
    if std::env::var_os("LITEBUS_ROLE").is_none() && litebus_postgres::conformance::url().is_none()
    {
        return;
    }
    litebus_conformance::kit::processes::main::<litebus_postgres::conformance::Processes>();
}
