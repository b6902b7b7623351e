//! The README's examples, compiled and run as doc tests: every `rust` block
//! of `README.md` is a whole program (no hidden lines, so it reads on a
//! repository page as it runs here) using the core and the SQL drivers.
//! `tests/first_program.rs` checks that the README's first program is
//! `drivers/sqlx/examples/durable.rs`, as it says.

/// The README, as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct Readme;
