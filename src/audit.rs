//! The audit chain of a topic (feature `audit`): an append-only record of
//! its publishes and of its groups' settlements, each row holding
//! `blake3(previous row's hash || the event)`, so that a row changed,
//! removed or put in after the fact breaks the chain where it was touched.
//!
//! The chain of topic `T` is the topic `litebus.audit.T`, a topic like any
//! other: every store and driver keeps it, any bus reads it, and several
//! buses and processes append to it. A row's payload is its event as JSON
//! with its fields in a fixed order; its metadata holds the previous row's
//! hash ([`PREV`]) and its own ([`HASH`]), in hex. The first row's previous
//! hash is `blake3("")`. A bus appends with an expected last seq, so two
//! buses never fork the chain: the one that lost the race reads the new
//! tail and appends after it.
//!
//! A row is appended after the operation it records has committed, in a
//! step of its own: a process that dies between the two leaves the
//! operation without its row, and the chain as it was (whole, and
//! verifying). [`Bus::verify_audit`] walks a chain and names its first
//! broken row.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::bus::{Bus, BusInner};
use crate::clock::lock;
use crate::driver::{Append, DeadLettered, Read, Settlement, copy_error, dead_letter_keys as keys};
use crate::error::{Error, Result};
use crate::message::{Message, Outcome, prepare_message};

/// What an audit topic's name starts with: the chain of `T` is
/// `litebus.audit.T`.
pub const AUDIT_PREFIX: &str = "litebus.audit.";
/// Metadata key of a row's previous hash (hex).
pub const PREV: &str = "litebus.audit.prev";
/// Metadata key of a row's hash (hex): `blake3(prev || payload)`.
pub const HASH: &str = "litebus.audit.hash";

/// The topic that holds the audit chain of `topic`.
pub fn audit_topic(topic: &str) -> String {
    format!("{AUDIT_PREFIX}{topic}")
}

type Hash = [u8; 32];

fn genesis() -> Hash {
    *blake3::hash(b"").as_bytes()
}

fn link(prev: &Hash, event: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prev);
    hasher.update(event);
    *hasher.finalize().as_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<Hash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One event of an audited topic.
pub(crate) enum Event<'a> {
    /// A message stored.
    Publish { seq: u64, message: &'a Message },
    /// A delivery settled: acked or nacked (an extend is not an event).
    Settled {
        group: &'a str,
        seq: u64,
        attempt: u32,
        settlement: &'a Settlement,
    },
    /// A message dead-lettered (as its dead letter says).
    DeadLetter(&'a DeadLettered),
}

/// A JSON object written field by field, in the order given.
struct Json(String);

impl Json {
    fn new(n: u64, event: &str, topic: &str, at: u64) -> Self {
        let mut json = Json(String::from("{"));
        json.number("n", n);
        json.text("event", event);
        json.text("topic", topic);
        json.number("at", at);
        json
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{key}\":");
    }

    fn number(&mut self, key: &str, n: u64) {
        self.key(key);
        let _ = write!(self.0, "{n}");
    }

    fn text(&mut self, key: &str, text: &str) {
        self.key(key);
        self.0.push('"');
        for c in text.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", u32::from(c));
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
    }

    fn opt_text(&mut self, key: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.text(key, text);
        } else {
            self.key(key);
            self.0.push_str("null");
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.push('}');
        self.0.into_bytes()
    }
}

/// Row `n` of a chain holding an event's `rest` ([`Event::rest`]).
fn row(n: u64, rest: &[u8]) -> Vec<u8> {
    let mut row = format!("{{\"n\":{n},").into_bytes();
    row.extend_from_slice(rest);
    row
}

impl Event<'_> {
    /// The event's canonical form as row `n` of a chain: JSON, its fields
    /// in a fixed order, `n` first.
    #[cfg(test)]
    fn canonical(&self, n: u64, topic: &str, at: u64) -> Vec<u8> {
        row(n, &self.rest(topic, at))
    }

    /// The event's canonical form without its row number: what follows
    /// `{"n":<n>,` in its row.
    fn rest(&self, topic: &str, at: u64) -> Vec<u8> {
        let mut rest = self.numbered(0, topic, at);
        rest.drain(..br#"{"n":0,"#.len());
        rest
    }

    fn numbered(&self, n: u64, topic: &str, at: u64) -> Vec<u8> {
        match self {
            Event::Publish { seq, message } => {
                let mut json = Json::new(n, "publish", topic, at);
                json.number("seq", *seq);
                json.text("id", message.id());
                json.opt_text("key", message.key());
                json.number("priority", u64::from(message.priority()));
                json.text(
                    "payload_blake3",
                    &hex(blake3::hash(message.payload()).as_bytes()),
                );
                json.finish()
            }
            Event::Settled {
                group,
                seq,
                attempt,
                settlement,
            } => {
                let event = match settlement {
                    Settlement::Ack => "ack",
                    Settlement::Nack { .. } => "nack",
                    Settlement::Extend { .. } => "extend",
                };
                let mut json = Json::new(n, event, topic, at);
                json.text("group", group);
                json.number("seq", *seq);
                json.number("attempt", u64::from(*attempt));
                if let Settlement::Nack { reason, .. } = settlement {
                    json.opt_text("reason", reason.as_deref());
                }
                json.finish()
            }
            Event::DeadLetter(dead) => {
                let meta = dead.message.metadata();
                let field = |k: &str| meta.get(k).map_or("", String::as_str);
                let mut json = Json::new(n, "dead_letter", topic, at);
                json.text("group", field(keys::GROUP));
                json.number("seq", field(keys::SEQ).parse().unwrap_or(0));
                json.number("attempts", field(keys::ATTEMPTS).parse().unwrap_or(0));
                json.text("error", field(keys::ERROR));
                json.text("dead_letter_topic", &dead.topic);
                json.number("dead_letter_seq", dead.seq);
                json.finish()
            }
        }
    }
}

/// The last row of a chain, as this bus last saw it: its seq, number
/// and hash.
#[derive(Debug, Clone, Copy)]
struct Tail {
    seq: u64,
    n: u64,
    hash: Hash,
}

/// The row number a row's payload starts with (`{"n":123,`).
fn row_number(payload: &[u8]) -> Option<u64> {
    let rest = payload.strip_prefix(br#"{"n":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The audit chains a bus appends to, by chain topic.
#[derive(Debug, Default)]
pub(crate) struct Chains {
    chains: Mutex<HashMap<String, Arc<Chain>>>,
}

/// One chain's appends through a bus. A call queues its rows and takes
/// the chain's turn; whoever holds the turn appends every row that waits,
/// in one append (calls made while an append runs share the next one), and
/// tells each call how it went. 16 tasks publishing to one audited topic
/// through one bus would otherwise each append after the tail the others
/// just moved, and retry (measured: 250 publishes/s against 1,600 for one
/// task, sqlx on a file).
#[derive(Debug, Default)]
struct Chain {
    waiting: Mutex<Vec<Waiting>>,
    /// The turn, with the chain's tail as the last append left it (`None`:
    /// read it from the store).
    turn: async_lock::Mutex<Option<Tail>>,
}

/// A call's rows (each an event's [`Event::rest`]) waiting for an append,
/// and where its outcome goes.
#[derive(Debug)]
struct Waiting {
    rests: Vec<Vec<u8>>,
    outcome: Arc<Mutex<Option<Result<()>>>>,
}

/// Puts rows taken for an append back at the head of the queue if the
/// append is cut before it ends (its caller's future dropped), so that the
/// next holder of the turn appends them.
struct Requeue<'a> {
    chain: &'a Chain,
    taken: Vec<Waiting>,
}

impl Drop for Requeue<'_> {
    fn drop(&mut self) {
        if !self.taken.is_empty() {
            let mut waiting = lock(&self.chain.waiting);
            let later = std::mem::take(&mut *waiting);
            waiting.append(&mut self.taken);
            waiting.extend(later);
        }
    }
}

impl BusInner {
    fn audits(&self, topic: &str) -> bool {
        self.options.audited.iter().any(|t| t == topic)
    }

    /// Appends `events` of `topic` to its chain, if `topic` is audited.
    pub(crate) async fn audit(&self, topic: &str, events: &[Event<'_>]) -> Result<()> {
        if events.is_empty() || !self.audits(topic) {
            return Ok(());
        }
        let name = audit_topic(topic);
        let at = self.clock.now().as_millis();
        let chain = lock(&self.chains.chains)
            .entry(name.clone())
            .or_default()
            .clone();
        let outcome = Arc::new(Mutex::new(None));
        lock(&chain.waiting).push(Waiting {
            rests: events.iter().map(|e| e.rest(topic, at)).collect(),
            outcome: outcome.clone(),
        });
        let mut tail = chain.turn.lock().await;
        if let Some(done) = lock(&outcome).take() {
            // The holder of the turn before appended these rows too.
            return done;
        }
        let mut taken = Requeue {
            chain: &chain,
            taken: std::mem::take(&mut *lock(&chain.waiting)),
        };
        let appended = self.append_rows(&name, &mut tail, &taken.taken).await;
        // Settled: from here on a cut leaves nothing to append again.
        for waiting in std::mem::take(&mut taken.taken) {
            if !Arc::ptr_eq(&waiting.outcome, &outcome) {
                *lock(&waiting.outcome) = Some(appended.as_ref().map(|_| ()).map_err(copy_error));
            }
        }
        let appended = match appended {
            Ok((outcomes, rows)) => {
                self.appended(&name, &outcomes, &rows).await;
                Ok(())
            }
            Err(e) => Err(e),
        };
        #[cfg(feature = "tracing")]
        if let Err(e) = &appended {
            crate::telemetry::event!(
                warn,
                topic,
                chain = %name,
                error = %e,
                "litebus: audit rows not appended"
            );
        }
        appended
    }

    /// Appends the rows of `batch` to `chain` after `tail` (read from the
    /// store when `None`), going again from the tail another bus left when
    /// it appended first; leaves `tail` at the new last row. The outcomes
    /// and rows appended.
    async fn append_rows(
        &self,
        chain: &str,
        tail: &mut Option<Tail>,
        batch: &[Waiting],
    ) -> Result<(Vec<Outcome>, Vec<Arc<Message>>)> {
        let now = self.clock.now();
        loop {
            let last = match *tail {
                Some(last) => last,
                None => self.chain_tail(chain).await?,
            };
            // Forgotten until the append succeeds.
            *tail = None;
            let mut prev = last.hash;
            let mut n = last.n;
            let mut rows = Vec::new();
            for rest in batch.iter().flat_map(|w| &w.rests) {
                n += 1;
                let body = row(n, rest);
                let hash = link(&prev, &body);
                let message = Message::new(body)
                    .with_metadata(PREV, hex(&prev))
                    .with_metadata(HASH, hex(&hash));
                rows.push(Arc::new(prepare_message(chain, message, usize::MAX, now)?));
                prev = hash;
            }
            let appended = self
                .driver
                .append(Append {
                    topic: chain,
                    messages: &rows,
                    expected_last: Some(last.seq),
                    now,
                    handoffs: &[],
                })
                .await;
            match appended {
                Ok(outcomes) => {
                    let seq = outcomes.last().map_or(last.seq, |o| o.seq());
                    *tail = Some(Tail { seq, n, hash: prev });
                    return Ok((outcomes, rows));
                }
                // Another bus appended first: read the new tail, go again.
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends the dead letters' events to the chains of the topics they
    /// came from.
    pub(crate) async fn audit_dead_letters(&self, dead: &[DeadLettered]) -> Result<()> {
        for d in dead {
            if let Some(topic) = d.message.metadata().get(keys::TOPIC) {
                self.audit(topic, &[Event::DeadLetter(d)]).await?;
            }
        }
        Ok(())
    }

    /// The tail of `chain`, read from the store.
    async fn chain_tail(&self, chain: &str) -> Result<Tail> {
        let last = self.driver.stats(chain, self.clock.now()).await?.last_seq;
        if last == 0 {
            return Ok(Tail {
                seq: 0,
                n: 0,
                hash: genesis(),
            });
        }
        let rows = self
            .driver
            .read(Read {
                topic: chain,
                after: last - 1,
                key: None,
                limit: 1,
                skip_taken_back: false,
            })
            .await?;
        let tail = rows
            .first()
            .filter(|r| r.seq() == last)
            .and_then(|r| {
                let hash = r.message().metadata().get(HASH).and_then(|h| unhex(h))?;
                let n = row_number(r.message().payload())?;
                Some(Tail { seq: last, n, hash })
            })
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "the audit chain {chain} has no hash at its last seq {last} (removed, \
                     or let go by a retention that keeps no row?)"
                ))
            })?;
        Ok(tail)
    }
}

/// Where [`Bus::verify_audit`] found a chain broken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokenLink {
    /// The seq (in the audit topic) of the first row that does not verify.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

/// What [`Bus::verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReport {
    /// The audit topic.
    pub chain: String,
    /// Rows checked (up to the first broken one).
    pub rows: u64,
    /// The seq of the first row kept (0 when the chain is empty). A chain
    /// whose first rows a retention let go is checked from here on, from
    /// the previous hash its first kept row states.
    pub first_seq: u64,
    /// The seq of the last row checked.
    pub last_seq: u64,
    /// The hash of the last row checked, in hex: note it somewhere else
    /// (a log, a ticket, another system) to make later rewrites of the
    /// whole chain up to it evident too.
    pub last_hash: Option<String>,
    /// The first row that does not verify, if any.
    pub broken: Option<BrokenLink>,
}

impl AuditReport {
    /// Whether every row verified.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Rows read per page by a verify.
const VERIFY_PAGE: usize = 512;

impl Bus {
    /// Walks the audit chain of `topic` (see [`BusOptions::audit`](crate::BusOptions::audit))
    /// from its first row kept, and names the first row that does not
    /// verify: one whose previous hash is not its predecessor's hash (a row
    /// before it was changed, removed or put in), or whose hash is not
    /// `blake3(previous hash || payload)` (the row itself was changed).
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, MemoryDriver, Message};
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new().audit("payments"))?;
    /// bus.publish("payments", Message::new("pay 10 EUR")).await?;
    /// let report = bus.verify_audit("payments").await?;
    /// assert!(report.is_intact());
    /// assert_eq!(report.rows, 1);
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn verify_audit(&self, topic: &str) -> Result<AuditReport> {
        let chain = audit_topic(topic);
        let mut report = AuditReport {
            chain: chain.clone(),
            rows: 0,
            first_seq: 0,
            last_seq: 0,
            last_hash: None,
            broken: None,
        };
        let mut before: Option<(Hash, u64)> = None;
        let mut from = 1;
        loop {
            let page = self.read(&chain, from, VERIFY_PAGE).await?;
            for row in &page {
                if report.first_seq == 0 {
                    report.first_seq = row.seq();
                }
                report.last_seq = row.seq();
                match check_row(row.message(), before) {
                    Ok(this) => {
                        report.last_hash = Some(hex(&this.0));
                        before = Some(this);
                    }
                    Err(reason) => {
                        report.broken = Some(BrokenLink {
                            seq: row.seq(),
                            reason: reason.to_owned(),
                        });
                        return Ok(report);
                    }
                }
                report.rows += 1;
            }
            match page.last() {
                Some(last) if page.len() == VERIFY_PAGE => from = last.seq() + 1,
                _ => return Ok(report),
            }
        }
    }
}

/// Checks one row of a chain, given the hash and number of the row before
/// it (`None` for the first row kept); its own hash and number.
fn check_row(row: &Message, before: Option<(Hash, u64)>) -> Result<(Hash, u64), &'static str> {
    let payload = row.payload();
    let n = row_number(payload).ok_or("it is not an audit row: it has no row number")?;
    let meta = row.metadata();
    let prev = meta
        .get(PREV)
        .and_then(|h| unhex(h))
        .ok_or("it has no valid previous hash")?;
    let hash = meta
        .get(HASH)
        .and_then(|h| unhex(h))
        .ok_or("it has no valid hash")?;
    if link(&prev, payload) != hash {
        return Err("its hash is not blake3(previous hash || payload): the row was changed");
    }
    match before {
        Some((_, last_n)) if n != last_n + 1 => {
            Err("its row number does not follow the row before it: rows were removed or put in")
        }
        Some((last_hash, _)) if prev != last_hash => {
            Err("its previous hash is not the hash of the row before it: that row was changed")
        }
        None if n == 1 && prev != genesis() => {
            Err("it is the first row, and its previous hash is not blake3(\"\")")
        }
        _ => Ok((hash, n)),
    }
}

/// Checks the topics given to [`BusOptions::audit`](crate::BusOptions::audit).
pub(crate) fn check_audited(topics: &[String]) -> Result<()> {
    for topic in topics {
        crate::message::check_name(crate::error::NameKind::Topic, topic)?;
        if topic.starts_with(AUDIT_PREFIX) {
            return Err(Error::InvalidOptions(format!(
                "{topic} is an audit chain: a chain has no chain of its own"
            )));
        }
        crate::message::check_name(crate::error::NameKind::Topic, &audit_topic(topic)).map_err(
            |_| {
                Error::InvalidOptions(format!(
                    "{topic}: its audit topic {AUDIT_PREFIX}{topic} would be longer than a \
                     topic name may be"
                ))
            },
        )?;
    }
    Ok(())
}

/// The events of a publish's outcomes.
pub(crate) fn published<'a>(outcomes: &[Outcome], batch: &'a [Arc<Message>]) -> Vec<Event<'a>> {
    outcomes
        .iter()
        .zip(batch)
        .filter_map(|(outcome, message)| match outcome {
            Outcome::Published { seq } => Some(Event::Publish { seq: *seq, message }),
            Outcome::Duplicate { .. } => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_go_to_hex_and_back() {
        let h = link(&genesis(), b"event");
        assert_eq!(unhex(&hex(&h)), Some(h));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }

    #[test]
    fn events_are_json_in_a_fixed_order() {
        let message = Message::new("x").with_id("a\"b").with_key("k\n");
        let body = Event::Publish {
            seq: 7,
            message: &message,
        }
        .canonical(3, "t", 5);
        let text = String::from_utf8(body).unwrap();
        assert_eq!(row_number(text.as_bytes()), Some(3));
        assert!(
            text.starts_with(r#"{"n":3,"event":"publish","topic":"t","at":5,"seq":7,"id":"a\"b","key":"k\u000a","priority":0,"payload_blake3":""#),
            "{text}"
        );
        let nack = Event::Settled {
            group: "g",
            seq: 1,
            attempt: 2,
            settlement: &Settlement::Nack {
                retry_at: crate::Timestamp::from_millis(0),
                reason: None,
            },
        };
        assert_eq!(
            nack.canonical(1, "t", 0),
            br#"{"n":1,"event":"nack","topic":"t","at":0,"group":"g","seq":1,"attempt":2,"reason":null}"#
        );
    }
}
