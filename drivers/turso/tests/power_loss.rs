//! Power loss, not only killed processes: a turso I/O that keeps each file
//! twice, as written and as synced, and at a chosen operation loses power:
//! that operation and every later one fail, and every write not yet synced
//! is gone. The store is then opened again from what was synced.
//!
//! With `Durability::Full` no publish or ack that returned is lost; with
//! `Normal` the file opens clean and only the last commits may be missing
//! (the test prints how many). `LITEBUS_POWER_CUTS` sets how many cut points
//! each durability gets (default 24; the long run in docs/testing.md uses
//! 1000).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::future::block_on;
use litebus::{Bus, BusOptions, GroupOptions, ManualClock, Message, Order, Timestamp};
use litebus_turso::{Durability, TursoDriver, TursoOptions};
use turso::core::io::{FileId, FileSyncType};
use turso::core::{
    Buffer, Clock, Completion, CompletionError, File, IO, LimboError, MonotonicInstant, OpenFlags,
    WallClockInstant,
};

/// A file as written (what reads see) and as synced (what survives).
#[derive(Debug, Default, Clone)]
struct Image {
    written: Vec<u8>,
    synced: Vec<u8>,
}

/// Every file of one store, and the power switch.
#[derive(Debug, Default)]
struct Disk {
    /// The store's name on this disk (unique in the process: turso keeps
    /// one database per path).
    path: String,
    files: HashMap<String, Image>,
    /// Writes, syncs and truncations so far.
    ops: u64,
    /// The operation at which the power goes.
    cut_at: Option<u64>,
    off: bool,
}

impl Disk {
    /// Counts a write, sync or truncation; false once the power is off
    /// (the operation then does not happen).
    fn tick(&mut self) -> bool {
        if self.off {
            return false;
        }
        self.ops += 1;
        if self.cut_at == Some(self.ops) {
            self.off = true;
        }
        !self.off
    }

    /// The machine comes back: only what was synced is there.
    fn restart(&mut self) {
        for image in self.files.values_mut() {
            image.written = image.synced.clone();
        }
        self.off = false;
        self.cut_at = None;
    }
}

type Shared = Arc<Mutex<Disk>>;

fn lock(disk: &Shared) -> std::sync::MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(PoisonError::into_inner)
}

fn power_off() -> LimboError {
    LimboError::CompletionError(CompletionError::IOError(
        std::io::ErrorKind::Other,
        "power cut",
    ))
}

struct PowerCutIo(Shared);

struct PowerCutFile {
    path: String,
    disk: Shared,
}

impl Clock for PowerCutIo {
    fn current_time_monotonic(&self) -> MonotonicInstant {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        MonotonicInstant::from_nanos(since.as_nanos())
    }

    fn current_time_wall_clock(&self) -> WallClockInstant {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        WallClockInstant {
            secs: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            micros: since.subsec_micros(),
        }
    }
}

impl IO for PowerCutIo {
    fn open_file(
        &self,
        path: &str,
        flags: OpenFlags,
        _direct: bool,
    ) -> turso::core::Result<Arc<dyn File>> {
        let mut disk = lock(&self.0);
        if disk.off {
            return Err(power_off());
        }
        if !disk.files.contains_key(path) {
            if !flags.contains(OpenFlags::Create) {
                return Err(LimboError::CompletionError(CompletionError::IOError(
                    std::io::ErrorKind::NotFound,
                    "open",
                )));
            }
            disk.files.insert(path.to_owned(), Image::default());
        }
        Ok(Arc::new(PowerCutFile {
            path: path.to_owned(),
            disk: self.0.clone(),
        }))
    }

    fn remove_file(&self, path: &str) -> turso::core::Result<()> {
        lock(&self.0).files.remove(path);
        Ok(())
    }

    fn file_id(&self, path: &str) -> turso::core::Result<FileId> {
        Ok(FileId::from_path_hash(path))
    }
}

impl File for PowerCutFile {
    fn lock_file(&self, _exclusive: bool) -> turso::core::Result<()> {
        Ok(())
    }

    fn unlock_file(&self) -> turso::core::Result<()> {
        Ok(())
    }

    fn pread(&self, pos: u64, c: Completion) -> turso::core::Result<Completion> {
        let disk = lock(&self.disk);
        if disk.off {
            return Err(power_off());
        }
        let data = &disk.files[&self.path].written;
        let buf = c.as_read().buf();
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf.as_mut_slice()[..n].copy_from_slice(&data[start..start + n]);
        drop(disk);
        c.complete(i32::try_from(n).expect("read size"));
        Ok(c)
    }

    fn pwrite(
        &self,
        pos: u64,
        buffer: Arc<Buffer>,
        c: Completion,
    ) -> turso::core::Result<Completion> {
        let mut disk = lock(&self.disk);
        if !disk.tick() {
            return Err(power_off());
        }
        let data = &mut disk.files.get_mut(&self.path).expect("open file").written;
        let start = usize::try_from(pos).expect("position");
        let bytes = buffer.as_slice();
        if data.len() < start + bytes.len() {
            data.resize(start + bytes.len(), 0);
        }
        data[start..start + bytes.len()].copy_from_slice(bytes);
        drop(disk);
        c.complete(i32::try_from(bytes.len()).expect("write size"));
        Ok(c)
    }

    fn sync(&self, c: Completion, _sync_type: FileSyncType) -> turso::core::Result<Completion> {
        let mut disk = lock(&self.disk);
        if !disk.tick() {
            return Err(power_off());
        }
        let image = disk.files.get_mut(&self.path).expect("open file");
        image.synced = image.written.clone();
        drop(disk);
        c.complete(0);
        Ok(c)
    }

    fn size(&self) -> turso::core::Result<u64> {
        let disk = lock(&self.disk);
        Ok(disk.files[&self.path].written.len() as u64)
    }

    fn truncate(&self, len: u64, c: Completion) -> turso::core::Result<Completion> {
        let mut disk = lock(&self.disk);
        if !disk.tick() {
            return Err(power_off());
        }
        let data = &mut disk.files.get_mut(&self.path).expect("open file").written;
        data.truncate(usize::try_from(len).expect("length"));
        drop(disk);
        c.complete(0);
        Ok(c)
    }
}

const ROUNDS: usize = 60;

/// An empty disk whose store has a name of its own.
fn disk(cut_at: Option<u64>) -> Shared {
    static DISKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = DISKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Arc::new(Mutex::new(Disk {
        path: format!("power-{n}.db"),
        cut_at,
        ..Disk::default()
    }))
}

const LEASE: Duration = Duration::from_secs(600);

/// A bus on the disk's store; `later` moves its clock past every lease the
/// workload took, as the time a machine takes to come back would.
async fn open(disk: &Shared, durability: Durability, later: bool) -> litebus::Result<Bus> {
    let io: Arc<dyn IO> = Arc::new(PowerCutIo(disk.clone()));
    let path = lock(disk).path.clone();
    let driver =
        TursoDriver::open_with_io(&path, io, TursoOptions::new().durability(durability)).await?;
    let start = Timestamp::from_millis(1_700_000_000_000);
    let clock = ManualClock::new(if later { start + LEASE * 2 } else { start });
    Bus::open(driver, BusOptions::new().clock(clock))
}

fn options() -> GroupOptions {
    GroupOptions::new()
        .order(Order::Shared { max_in_flight: 8 })
        .prefetch(1)
        .lease(LEASE)
}

/// What returned `Ok` before the power went.
#[derive(Debug, Default)]
struct Returned {
    published: Vec<String>,
    acked: BTreeSet<String>,
    /// Why the workload stopped early.
    error: Option<String>,
}

impl Returned {
    fn stopped(mut self, e: &litebus::Error) -> Self {
        self.error = Some(e.to_string());
        self
    }
}

/// Publishes `m0`, `m1`, … and acks every other one as it goes, until an
/// error (the power is off) or the end.
async fn workload(disk: &Shared, durability: Durability) -> Returned {
    let mut returned = Returned::default();
    let bus = match open(disk, durability, false).await {
        Ok(bus) => bus,
        Err(e) => return returned.stopped(&e),
    };
    let sub = match bus.subscribe("t", "g", options()).await {
        Ok(sub) => sub,
        Err(e) => return returned.stopped(&e),
    };
    for i in 0..ROUNDS {
        let id = format!("m{i}");
        if let Err(e) = bus.publish("t", Message::new("x").with_id(&id)).await {
            return returned.stopped(&e);
        }
        returned.published.push(id);
        if i % 2 == 1 {
            let d = match sub.try_recv().await {
                Ok(d) => d.expect("a message to receive"),
                Err(e) => return returned.stopped(&e),
            };
            if let Err(e) = d.ack().await {
                return returned.stopped(&e);
            }
            returned.acked.insert(d.message().id().to_owned());
        }
    }
    // Dropping the subscription releases its leases: a write that fails
    // once the power is off.
    drop(sub);
    returned
}

/// What the store holds after the restart: which published ids it knows,
/// and which its group delivers again.
struct Found {
    present: Vec<bool>,
    delivered: BTreeSet<String>,
}

async fn look(disk: &Shared, durability: Durability, returned: &Returned) -> Found {
    {
        // The file itself is sound.
        let io: Arc<dyn IO> = Arc::new(PowerCutIo(disk.clone()));
        let path = lock(disk).path.clone();
        let db = turso::Builder::new_local(&path)
            .with_io_impl(io)
            .build()
            .await
            .expect("the store opens after the power cut");
        let conn = db.connect().expect("connect");
        let mut rows = conn
            .query("PRAGMA integrity_check", ())
            .await
            .expect("integrity_check");
        let row = rows.next().await.expect("a row").expect("a result");
        assert_eq!(
            row.get::<String>(0).expect("text"),
            "ok",
            "integrity_check after the power cut"
        );
    }
    let bus = open(disk, durability, true).await.expect("reopen");
    let sub = bus.subscribe("t", "g", options()).await.expect("subscribe");
    let mut delivered = BTreeSet::new();
    while let Some(d) = sub.try_recv().await.expect("receive") {
        delivered.insert(d.message().id().to_owned());
        d.ack().await.expect("ack");
    }
    let mut present = Vec::new();
    for id in &returned.published {
        // A publish of a stored id is a duplicate: the id is still there.
        let again = bus
            .publish("t", Message::new("x").with_id(id))
            .await
            .expect("publish after restart");
        present.push(again.is_duplicate());
    }
    bus.close().await.expect("close");
    Found { present, delivered }
}

/// A small deterministic generator (xorshift) for the cut points.
struct Points(u64);

impl Points {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn cuts() -> usize {
    std::env::var("LITEBUS_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// Runs the workload with the power cut at many points; returns, for each,
/// how many returned publishes and acks were lost.
fn run(durability: Durability) -> Vec<(u64, usize, usize)> {
    block_on(async {
        let whole = disk(None);
        let returned = workload(&whole, durability).await;
        assert_eq!(
            returned.published.len(),
            ROUNDS,
            "the run without a cut: {:?}",
            returned.error
        );
        let total = lock(&whole).ops;
        let mut points = Points(0x9e37_79b9_7f4a_7c15 ^ total);
        let mut losses = Vec::new();
        for _ in 0..cuts() {
            let cut_at = 1 + points.next(total);
            let disk = disk(Some(cut_at));
            let returned = workload(&disk, durability).await;
            lock(&disk).restart();
            let found = look(&disk, durability, &returned).await;
            // Commits are durable in order: what survived is a prefix.
            let kept = found.present.iter().take_while(|&&p| p).count();
            assert!(
                found.present[kept..].iter().all(|&p| !p),
                "cut at {cut_at}: a later publish survived an earlier one: {:?}",
                found.present
            );
            let lost_publishes = found.present.len() - kept;
            let redelivered = returned
                .acked
                .iter()
                .filter(|id| found.delivered.contains(*id))
                .count();
            // Nothing kept is lost to the group: delivered now or acked before.
            for id in &returned.published[..kept] {
                assert!(
                    found.delivered.contains(id) || returned.acked.contains(id),
                    "cut at {cut_at}: {id} was neither acked nor delivered again"
                );
            }
            losses.push((cut_at, lost_publishes, redelivered));
        }
        losses
    })
}

#[test]
fn full_durability_loses_nothing_that_returned() {
    let losses = run(Durability::Full);
    for (cut_at, lost, redelivered) in &losses {
        assert_eq!(
            (*lost, *redelivered),
            (0, 0),
            "cut at {cut_at}: returned publishes lost, acks undone"
        );
    }
    println!(
        "Durability::Full, {} power cuts: nothing lost",
        losses.len()
    );
}

#[test]
fn normal_durability_opens_clean_and_loses_only_the_last_commits() {
    let losses = run(Durability::Normal);
    let most = losses.iter().map(|l| l.1).max().unwrap_or(0);
    let mean = losses.iter().map(|l| l.1).sum::<usize>() as f64 / losses.len().max(1) as f64;
    let acks = losses.iter().map(|l| l.2).max().unwrap_or(0);
    println!(
        "Durability::Normal, {} power cuts: publishes lost per cut: mean {mean:.1}, most {most} \
         of {ROUNDS}; acks undone: most {acks}",
        losses.len()
    );
}
