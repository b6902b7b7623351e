//! `TursoDriver` and other OS processes: a second process is refused, and
//! processes killed in the middle of their work (SIGKILL) lose nothing: the
//! test kit's process tests (`litebus_conformance::kit::processes`).

fn main() {
    litebus_conformance::kit::processes::main::<litebus_turso::conformance::Files>();
}
