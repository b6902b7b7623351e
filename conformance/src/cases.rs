//! The cases, one module per theme. The build script finds every case in
//! these files; a theme file without its line here fails to build.

pub mod admin;
pub mod audit;
pub mod backoff;
pub mod batches;
pub mod dead_letter;
pub mod dedupe;
pub mod groups;
pub mod input;
pub mod leases;
pub mod listeners;
pub mod ordering;
pub mod priority;
pub mod publish;
pub mod rate_limit;
pub mod reads;
pub mod redelivery;
pub mod redrive;
pub mod retention;
pub mod sharing;
pub mod topics;
pub mod wakeups;
pub mod watermill;
pub mod worker;
