//! Durable, in-process publish/subscribe with consumer groups, dedupe,
//! redelivery and dead letters, over pluggable async storage drivers.
//!
//! A [`Bus`] stores messages in named topics through a [`Driver`](driver::Driver)
//! ([`MemoryDriver`] here; `SQLite` drivers in their own crates). Every
//! consumer group of a topic receives every message (fan-out); the
//! subscriptions of one group compete for them (work sharing) under leases
//! that end in an ack, a nack, a redelivery or a dead letter. The core
//! depends on no async runtime and spawns no tasks: it runs under tokio,
//! smol, a plain `block_on` or `wasm-bindgen-futures`.
//!
//! ```
//! use litebus::{Bus, BusOptions, GroupOptions, MemoryDriver, Message};
//! # futures_lite::future::block_on(async {
//! let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
//! let emails = bus.subscribe("signups", "emails", GroupOptions::new()).await?;
//! let audit = bus.subscribe("signups", "audit", GroupOptions::new()).await?;
//!
//! bus.publish("signups", Message::new("ada@example.com").with_id("u-1")).await?;
//! // A second publish of the same id is recognised, not stored again.
//! assert!(bus.publish("signups", Message::new("ada@example.com").with_id("u-1")).await?.is_duplicate());
//!
//! for group in [&emails, &audit] {
//!     let delivery = group.recv().await?;
//!     assert_eq!(delivery.message().payload(), b"ada@example.com");
//!     delivery.ack().await?;
//! }
//! # Ok::<(), litebus::Error>(())
//! # }).unwrap();
//! ```
//!
//! The guarantees (invariants I1–I14) are listed in `docs/design.md`; the
//! conformance suite (the `litebus-conformance` crate) checks them for any
//! driver.

// wasm32 has no threads, so the driver and clock need not be `Send` there.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

#[cfg(feature = "audit")]
pub mod audit;
mod bus;
mod clock;
pub mod driver;
mod error;
mod listener;
mod memory;
mod message;
mod options;
mod read;
mod stream;
mod subscription;
mod telemetry;
mod wake;
mod worker;

#[cfg(feature = "audit")]
pub use audit::{AuditReport, BrokenLink};
pub use bus::Bus;
#[cfg(all(feature = "async-io", not(target_arch = "wasm32")))]
pub use clock::AsyncIoClock;
#[cfg(not(target_arch = "wasm32"))]
pub use clock::StdClock;
#[cfg(all(feature = "tokio", not(target_arch = "wasm32")))]
pub use clock::TokioClock;
#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
pub use clock::WasmClock;
pub use clock::{Clock, ManualClock, Timestamp};
pub use driver::{GroupStats, TopicStats};
pub use error::{DriverError, Error, NameKind, Result};
pub use listener::{Listener, Live};
pub use memory::MemoryDriver;
pub use message::{DEFAULT_MAX_MESSAGE_SIZE, MAX_NAME_LEN, Message, Outcome};
pub use options::{
    Backoff, BusOptions, GroupOptions, NackOptions, Order, PRUNE_BATCH, RateLimit, Retention, Start,
};
pub use read::{DeadLetter, Follow, Record};
pub use subscription::{Delivery, Subscription};
pub use worker::{Worker, WorkerReport};
