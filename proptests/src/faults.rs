//! A driver wrapper that injects failures, and the check that a bus survives
//! them without losing or resurrecting anything.
//!
//! Faults come from a byte schedule (the fuzzer's choice): for each driver
//! call the next byte decides whether it passes, fails before touching the
//! store, or fails after the store did the work (a lost reply). A run of
//! operations under faults cannot be compared with the model step by step,
//! so [`check_faults`] checks what must hold anyway: no panic; a message whose
//! publish returned `Ok` is, for every group, acked, dead-lettered or still
//! delivered (I3, I8) — or its ack failed, which may have been stored; a
//! message whose ack returned `Ok` is never delivered to that group again
//! (I5); seqs of successful publishes increase (I1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use litebus::driver::{
    Append, BoxFuture, Capabilities, Claim, ClaimOutcome, DeadLettered, Driver, EnsureGroup, Read,
    Release, Seek, Settle, TopicStats, dead_letter_keys,
};
use litebus::{
    Bus, BusOptions, DriverError, Error, GroupOptions, ManualClock, MemoryDriver, Message,
    NackOptions, Order, Record, Result, Subscription, Timestamp,
};

use crate::harness::group_options;
use crate::model::START_MILLIS;
use crate::ops::{MsgSpec, Op, OrderChoice, StartChoice, SubSpec, TopicChoice};

/// What the next driver call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Runs normally.
    Pass,
    /// Fails without touching the store.
    FailBefore,
    /// Does the work, then reports a failure.
    FailAfter,
}

/// The shared fault schedule of a [`FaultyDriver`].
#[derive(Debug, Default)]
pub struct Schedule {
    bytes: Vec<u8>,
    next: usize,
    enabled: bool,
}

impl Schedule {
    fn next(&mut self) -> Fault {
        if !self.enabled || self.bytes.is_empty() {
            return Fault::Pass;
        }
        let b = self.bytes[self.next % self.bytes.len()];
        self.next += 1;
        match b {
            0..=199 => Fault::Pass,
            200..=227 => Fault::FailBefore,
            _ => Fault::FailAfter,
        }
    }
}

/// Wraps a driver and fails calls as the schedule says.
#[derive(Debug, Clone)]
pub struct FaultyDriver<D> {
    inner: D,
    schedule: Arc<Mutex<Schedule>>,
}

impl<D> FaultyDriver<D> {
    /// Wraps `inner`; faults are on.
    pub fn new(inner: D, bytes: Vec<u8>) -> Self {
        FaultyDriver {
            inner,
            schedule: Arc::new(Mutex::new(Schedule {
                bytes,
                next: 0,
                enabled: true,
            })),
        }
    }

    /// Turns faults on or off (for every clone).
    pub fn set_enabled(&self, enabled: bool) {
        self.schedule.lock().expect("schedule").enabled = enabled;
    }

    fn fault(&self) -> Fault {
        self.schedule.lock().expect("schedule").next()
    }
}

fn injected() -> Error {
    DriverError::retryable("injected fault").into()
}

async fn with_fault<T>(fault: Fault, call: impl Future<Output = Result<T>>) -> Result<T> {
    match fault {
        Fault::Pass => call.await,
        Fault::FailBefore => Err(injected()),
        Fault::FailAfter => {
            let _ = call.await;
            Err(injected())
        }
    }
}

impl<D: Driver + Clone> Driver for FaultyDriver<D> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn append<'a>(&'a self, append: Append<'a>) -> BoxFuture<'a, Result<Vec<litebus::Outcome>>> {
        Box::pin(with_fault(self.fault(), self.inner.append(append)))
    }

    fn ensure_group<'a>(&'a self, group: EnsureGroup<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(with_fault(self.fault(), self.inner.ensure_group(group)))
    }

    fn claim<'a>(&'a self, claim: Claim<'a>) -> BoxFuture<'a, Result<ClaimOutcome>> {
        Box::pin(with_fault(self.fault(), self.inner.claim(claim)))
    }

    fn settle<'a>(&'a self, settle: Settle<'a>) -> BoxFuture<'a, Result<Option<DeadLettered>>> {
        Box::pin(with_fault(self.fault(), self.inner.settle(settle)))
    }

    fn release<'a>(&'a self, release: Release<'a>) -> BoxFuture<'a, Result<Vec<DeadLettered>>> {
        Box::pin(with_fault(self.fault(), self.inner.release(release)))
    }

    fn stats<'a>(&'a self, topic: &'a str, now: Timestamp) -> BoxFuture<'a, Result<TopicStats>> {
        Box::pin(with_fault(self.fault(), self.inner.stats(topic, now)))
    }

    fn seek<'a>(&'a self, seek: Seek<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(with_fault(self.fault(), self.inner.seek(seek)))
    }

    fn redrive<'a>(
        &'a self,
        redrive: litebus::driver::Redrive<'a>,
    ) -> BoxFuture<'a, Result<Vec<u64>>> {
        Box::pin(with_fault(self.fault(), self.inner.redrive(redrive)))
    }

    fn delete_group<'a>(&'a self, topic: &'a str, group: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(with_fault(
            self.fault(),
            self.inner.delete_group(topic, group),
        ))
    }

    fn topics(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(with_fault(self.fault(), self.inner.topics()))
    }

    fn delete_topic<'a>(
        &'a self,
        step: litebus::driver::DeleteTopic<'a>,
    ) -> BoxFuture<'a, Result<litebus::driver::TopicDeletion>> {
        Box::pin(with_fault(self.fault(), self.inner.delete_topic(step)))
    }

    fn set_retention<'a>(
        &'a self,
        topic: &'a str,
        retention: litebus::Retention,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(with_fault(
            self.fault(),
            self.inner.set_retention(topic, retention),
        ))
    }

    fn prune<'a>(&'a self, prune: litebus::driver::Prune<'a>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(with_fault(self.fault(), self.inner.prune(prune)))
    }

    fn read<'a>(&'a self, read: Read<'a>) -> BoxFuture<'a, Result<Vec<Record>>> {
        Box::pin(with_fault(self.fault(), self.inner.read(read)))
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(with_fault(self.fault(), self.inner.close()))
    }
}

/// Group settings as first subscribed, made valid, and always from the
/// beginning so every successful publish concerns every group.
fn options(spec: SubSpec) -> GroupOptions {
    group_options(SubSpec {
        order: match spec.order {
            OrderChoice::Shared(n) => OrderChoice::Shared(n.max(1)),
            OrderChoice::PerKeyCapped(n) => OrderChoice::PerKeyCapped(n.max(1)),
            order => order,
        },
        max_attempts: spec.max_attempts.max(1),
        lease_ms: spec.lease_ms.max(1),
        prefetch: spec.prefetch.max(1),
        start: StartChoice::Beginning,
        backoff: if spec.backoff.is_valid() {
            spec.backoff
        } else {
            crate::ops::BackoffChoice::default()
        },
        rate_limit: spec
            .rate_limit
            .filter(|(max, period)| *max > 0 && *period > 0),
    })
}

fn message(n: usize, spec: &MsgSpec, now: Timestamp) -> Message {
    // Never too large: a refused publish proves nothing here.
    let mut m = Message::new(format!("p{n}"));
    if let Some(id) = spec.id {
        m = m.with_id(crate::ops::message_id(id, 0));
    }
    if let Some(key) = spec.key {
        m = m.with_key(format!("k{}", key % 3));
    }
    if let Some(d) = spec.delay_ms {
        m = m.with_deliver_at(now + Duration::from_millis(u64::from(d)));
    }
    m.with_priority(spec.priority)
}

type Key = (String, String);

/// Runs `ops` on a bus over a [`FaultyDriver`] driven by `schedule`, then
/// turns faults off, drains every group and checks the guarantees above.
pub async fn check_faults(schedule: Vec<u8>, ops: &[Op]) -> std::result::Result<(), String> {
    let store = MemoryDriver::new();
    let driver = FaultyDriver::new(store, schedule);
    let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
    let open = |d: &FaultyDriver<MemoryDriver>| {
        Bus::open(d.clone(), BusOptions::new().clock(clock.clone())).expect("open")
    };
    let mut bus = open(&driver);
    let mut published: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut acked: BTreeSet<(String, String, u64)> = BTreeSet::new();
    let mut maybe_acked: BTreeSet<(String, String, u64)> = BTreeSet::new();
    let mut groups: BTreeMap<Key, GroupOptions> = BTreeMap::new();
    let mut consumers: Vec<(Option<Subscription>, Vec<litebus::Delivery>)> = Vec::new();
    let mut n = 0;

    for op in ops {
        match op {
            Op::Publish(topic, spec) => {
                publish(
                    &bus,
                    &clock,
                    *topic,
                    std::slice::from_ref(spec),
                    &mut n,
                    &mut published,
                )
                .await?;
            }
            Op::PublishBatch(topic, specs) => {
                publish(&bus, &clock, *topic, specs, &mut n, &mut published).await?;
            }
            Op::Subscribe(topic, group, spec) => {
                if *topic == TopicChoice::Invalid || group.name().contains(' ') {
                    continue;
                }
                let key = (topic.name().to_owned(), group.name().to_owned());
                let opts = groups.get(&key).cloned().unwrap_or_else(|| options(*spec));
                if let Ok(s) = bus.subscribe(&key.0, &key.1, opts.clone()).await {
                    groups.entry(key).or_insert(opts);
                    consumers.push((Some(s), Vec::new()));
                }
            }
            Op::Receive { consumer } if !consumers.is_empty() => {
                let c = usize::from(*consumer) % consumers.len();
                if let (Some(s), held) = &mut consumers[c]
                    && let Ok(Some(d)) = s.try_recv().await
                {
                    held.push(d);
                }
            }
            Op::Ack { consumer, held } | Op::Nack { consumer, held, .. }
                if !consumers.is_empty() =>
            {
                let c = usize::from(*consumer) % consumers.len();
                let list = &mut consumers[c].1;
                if list.is_empty() {
                    continue;
                }
                let d = list.remove(usize::from(*held) % list.len());
                if let Op::Nack { delay_ms, .. } = op {
                    let delay = delay_ms.map(|d| Duration::from_millis(u64::from(d)));
                    let options = NackOptions {
                        delay,
                        ..NackOptions::new()
                    };
                    let _ = d.nack(options).await;
                } else {
                    let key = (d.topic().to_owned(), d.group().to_owned(), d.seq());
                    // An ack that failed may still have been stored (a lost
                    // reply): such a message may rightly never come back.
                    if d.ack().await.is_ok() {
                        acked.insert(key);
                    } else {
                        maybe_acked.insert(key);
                    }
                }
            }
            Op::Extend {
                consumer,
                held,
                by_ms,
            } if !consumers.is_empty() => {
                let c = usize::from(*consumer) % consumers.len();
                let list = &consumers[c].1;
                if !list.is_empty() {
                    let by = Duration::from_millis(u64::from(*by_ms));
                    let _ = list[usize::from(*held) % list.len()].extend(by).await;
                }
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(u64::from(*ms))),
            Op::Drop { consumer } if !consumers.is_empty() => {
                let c = usize::from(*consumer) % consumers.len();
                consumers[c].0 = None;
            }
            Op::Stats(topic) => {
                let _ = bus.stats(topic.name()).await;
            }
            Op::Read {
                topic, from, limit, ..
            } => {
                let _ = bus
                    .read(topic.name(), u64::from(*from), usize::from(*limit))
                    .await;
            }
            Op::Reopen => {
                let _ = bus.close().await;
                for c in &mut consumers {
                    c.0 = None;
                }
                bus = open(&driver);
            }
            _ => {}
        }
    }

    // Faults off: every group must still account for every message.
    driver.set_enabled(false);
    let _ = bus.close().await;
    consumers.clear();
    let bus = open(&driver);
    let far = Duration::from_hours(1);
    let mut drained: BTreeMap<Key, BTreeSet<u64>> = BTreeMap::new();
    for ((topic, group), opts) in &groups {
        let sub = bus
            .subscribe(topic, group, opts.clone())
            .await
            .map_err(|e| format!("drain subscribe: {e}"))?;
        let seen = drained.entry((topic.clone(), group.clone())).or_default();
        loop {
            clock.advance(far);
            let Some(d) = sub.try_recv().await.map_err(|e| format!("drain: {e}"))? else {
                break;
            };
            let key = (topic.clone(), group.clone(), d.seq());
            if acked.contains(&key) {
                return Err(format!("I5: acked {key:?} delivered again"));
            }
            seen.insert(d.seq());
            d.ack().await.map_err(|e| format!("drain ack: {e}"))?;
        }
        sub.close().await.map_err(|e| format!("drain close: {e}"))?;
    }
    let mut dead: BTreeSet<(String, String, u64)> = BTreeSet::new();
    for topic in published.keys() {
        dead.extend(dead_letters(&bus, topic).await?);
    }
    for ((topic, group), seen) in &drained {
        for &seq in published.get(topic).into_iter().flatten() {
            let key = (topic.clone(), group.clone(), seq);
            let accounted = acked.contains(&key)
                || maybe_acked.contains(&key)
                || seen.contains(&seq)
                || dead.contains(&key);
            if !accounted {
                return Err(format!("I3: published {key:?} lost"));
            }
        }
    }
    Ok(())
}

async fn publish(
    bus: &Bus,
    clock: &ManualClock,
    topic: TopicChoice,
    specs: &[MsgSpec],
    n: &mut usize,
    published: &mut BTreeMap<String, Vec<u64>>,
) -> std::result::Result<(), String> {
    if topic == TopicChoice::Invalid {
        return Ok(());
    }
    let messages: Vec<Message> = specs
        .iter()
        .map(|s| {
            *n += 1;
            message(*n, s, clock.now())
        })
        .collect();
    if let Ok(outcomes) = bus.publish_batch(topic.name(), messages).await {
        let seqs = published.entry(topic.name().to_owned()).or_default();
        for o in outcomes.iter().filter(|o| !o.is_duplicate()) {
            if seqs.last().is_some_and(|&last| last >= o.seq()) {
                return Err(format!("I1: seq {} after {:?}", o.seq(), seqs.last()));
            }
            seqs.push(o.seq());
        }
    }
    Ok(())
}

/// Every dead letter of `topic` as (topic, group, seq), read by a group of
/// its own from the dead-letter topic.
async fn dead_letters(
    bus: &Bus,
    topic: &str,
) -> std::result::Result<Vec<(String, String, u64)>, String> {
    let options = GroupOptions::new()
        .order(Order::Shared {
            max_in_flight: u32::MAX,
        })
        .prefetch(1000);
    let reader = bus
        .subscribe(&format!("{topic}.dlq"), "fault-oracle", options)
        .await
        .map_err(|e| format!("dlq subscribe: {e}"))?;
    let mut found = Vec::new();
    while let Some(d) = reader
        .try_recv()
        .await
        .map_err(|e| format!("dlq read: {e}"))?
    {
        let meta = d.message().metadata();
        if let (Some(t), Some(g), Some(seq)) = (
            meta.get(dead_letter_keys::TOPIC),
            meta.get(dead_letter_keys::GROUP),
            meta.get(dead_letter_keys::SEQ).and_then(|s| s.parse().ok()),
        ) {
            found.push((t.clone(), g.clone(), seq));
        }
        d.ack().await.map_err(|e| format!("dlq ack: {e}"))?;
    }
    Ok(found)
}
