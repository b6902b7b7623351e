//! The I/O behind `TursoDriver::memory()`: turso's in-memory files with a
//! clock that comes from litebus instead of `std::time::Instant` (which
//! panics on wasm32). Used on every target, so native tests run the same
//! code the browser does.

use std::sync::Arc;
use std::time::Duration;

use turso::core::{
    Clock as TursoClock, File, IO, MemoryIO, MonotonicInstant, OpenFlags, Result, WallClockInstant,
};

/// The clock turso reads: the bus's own default clock for this target.
#[cfg(not(target_arch = "wasm32"))]
const TIME: litebus::StdClock = litebus::StdClock;
#[cfg(target_arch = "wasm32")]
const TIME: litebus::WasmClock = litebus::WasmClock;

/// In-memory files, litebus's clock, and no blocking.
pub(crate) struct MemoryClockIo {
    memory: Arc<MemoryIO>,
}

impl MemoryClockIo {
    pub(crate) fn new() -> Self {
        MemoryClockIo {
            memory: Arc::new(MemoryIO::new()),
        }
    }

    fn now_ms() -> u64 {
        litebus::Clock::now(&TIME).as_millis()
    }
}

impl TursoClock for MemoryClockIo {
    fn current_time_monotonic(&self) -> MonotonicInstant {
        MonotonicInstant::from_nanos(u128::from(Self::now_ms()) * 1_000_000)
    }

    fn current_time_wall_clock(&self) -> WallClockInstant {
        let ms = Self::now_ms();
        WallClockInstant {
            secs: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
            micros: u32::try_from(ms % 1000).unwrap_or(0) * 1000,
        }
    }
}

impl IO for MemoryClockIo {
    fn open_file(&self, path: &str, flags: OpenFlags, direct: bool) -> Result<Arc<dyn File>> {
        self.memory.open_file(path, flags, direct)
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        self.memory.remove_file(path)
    }

    fn file_id(&self, path: &str) -> Result<turso::core::io::FileId> {
        self.memory.file_id(path)
    }

    fn get_memory_io(&self) -> Arc<MemoryIO> {
        self.memory.clone()
    }

    // Memory I/O never waits on another thread: a backoff is a no-op (and
    // `std::thread::sleep` panics on wasm32).
    fn yield_now(&self) {}

    fn sleep(&self, _duration: Duration) {}
}
