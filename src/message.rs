//! Messages, publish outcomes, the naming rules and generated ids.

use std::collections::BTreeMap;
use std::fmt;

use crate::clock::Timestamp;
use crate::error::{Error, NameKind, Result};

/// A message to publish, or one read back from a topic.
///
/// ```
/// use litebus::Message;
///
/// let m = Message::new("hello")
///     .with_id("order-17")
///     .with_key("customer-3")
///     .with_metadata("content-type", "text/plain");
/// assert_eq!(m.payload(), b"hello");
/// assert_eq!(m.id(), "order-17");
/// assert_eq!(m.key(), Some("customer-3"));
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Message {
    id: String,
    payload: Vec<u8>,
    metadata: BTreeMap<String, String>,
    key: Option<String>,
    deliver_at: Option<Timestamp>,
    priority: u8,
}

impl Message {
    /// A message carrying `payload`, with an id the bus generates at publish.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Message {
            payload: payload.into(),
            ..Message::default()
        }
    }

    /// Sets the id that deduplicates this message within its topic (I2).
    /// Without one, the bus generates a unique, time-sortable id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the ordering key: in [`Order::PerKey`](crate::Order::PerKey)
    /// groups, messages of one key are delivered one at a time in seq order.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds one metadata entry (replacing an earlier one of the same key).
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds every `(key, value)` of `entries` to the metadata, in order (a
    /// later entry replaces an earlier one of the same key): headers from a
    /// map, a request or another message.
    ///
    /// ```
    /// use litebus::Message;
    /// let headers = [("trace-id", "4bf92f35"), ("tenant", "acme")];
    /// let message = Message::new("hello").with_metadata_iter(headers);
    /// assert_eq!(message.metadata()["tenant"], "acme");
    /// ```
    #[must_use]
    pub fn with_metadata_iter<K, V>(mut self, entries: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.metadata
            .extend(entries.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Holds the message back from every group until the bus clock reads `at`.
    #[must_use]
    pub fn with_deliver_at(mut self, at: Timestamp) -> Self {
        self.deliver_at = Some(at);
        self
    }

    /// Sets the priority: a [`Shared`](crate::Order::Shared) group hands
    /// out messages of a higher priority before those of a lower one, and
    /// in seq order within a priority. 0, the default, is the lowest.
    /// [`Ordered`](crate::Order::Ordered) and
    /// [`PerKey`](crate::Order::PerKey) groups keep seq order whatever the
    /// priority (their order is the point of them). A dead letter keeps
    /// its message's priority.
    ///
    /// ```
    /// use litebus::{Bus, BusOptions, GroupOptions, MemoryDriver, Message, Order};
    /// # futures_lite::future::block_on(async {
    /// let bus = Bus::open(MemoryDriver::new(), BusOptions::new())?;
    /// let shared = GroupOptions::new().order(Order::Shared { max_in_flight: 8 }).prefetch(1);
    /// let workers = bus.subscribe("jobs", "workers", shared).await?;
    /// bus.publish("jobs", Message::new("nightly report")).await?;
    /// bus.publish("jobs", Message::new("password reset").with_priority(9)).await?;
    /// assert_eq!(workers.recv().await?.message().payload(), b"password reset");
    /// # Ok::<(), litebus::Error>(())
    /// # }).unwrap();
    /// ```
    #[must_use]
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// The priority ([`with_priority`](Message::with_priority)); 0 unless set.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The id; empty on a message not yet published without an explicit id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The metadata entries.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The ordering key, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The time before which no group receives it, if any.
    pub fn deliver_at(&self) -> Option<Timestamp> {
        self.deliver_at
    }

    /// Takes the payload out of the message.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// Assembles a message read back from storage
    /// ([`driver::stored_message`](crate::driver::stored_message)).
    pub(crate) fn from_parts(
        id: String,
        payload: Vec<u8>,
        metadata: BTreeMap<String, String>,
        key: Option<String>,
        deliver_at: Option<Timestamp>,
    ) -> Self {
        Message {
            id,
            payload,
            metadata,
            key,
            deliver_at,
            priority: 0,
        }
    }

    /// The bytes the message occupies as [`BusOptions::max_message_size`]
    /// counts them: payload, id, key, and every metadata key and value.
    ///
    /// [`BusOptions::max_message_size`]: crate::BusOptions::max_message_size
    pub fn size(&self) -> usize {
        self.payload.len()
            + self.id.len()
            + self.key.as_ref().map_or(0, String::len)
            + self
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// Checks everything about the message that a publish checks, so that a
    /// bad message is refused before anything is stored. `max_size` bounds
    /// the whole message ([`Message::size`]), with room for an id that is
    /// still to be generated.
    pub(crate) fn validate(&self, max_size: usize) -> Result<()> {
        if !self.id.is_empty() {
            check_label(NameKind::MessageId, &self.id)?;
        }
        if let Some(key) = &self.key {
            check_label(NameKind::MessageKey, key)?;
        }
        for key in self.metadata.keys() {
            check_label(NameKind::MetadataKey, key)?;
        }
        let size = self.size()
            + if self.id.is_empty() {
                GENERATED_ID_LEN
            } else {
                0
            };
        if size > max_size {
            return Err(Error::MessageTooLarge {
                size,
                max: max_size,
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        d.field("id", &self.id);
        match std::str::from_utf8(&self.payload) {
            Ok(text) if text.len() <= 64 => d.field("payload", &text),
            _ => d.field("payload_len", &self.payload.len()),
        };
        if !self.metadata.is_empty() {
            d.field("metadata", &self.metadata);
        }
        if let Some(key) = &self.key {
            d.field("key", key);
        }
        if let Some(at) = &self.deliver_at {
            d.field("deliver_at", at);
        }
        if self.priority != 0 {
            d.field("priority", &self.priority);
        }
        d.finish()
    }
}

/// What a publish did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Stored at `seq`.
    Published {
        /// The message's position in its topic.
        seq: u64,
    },
    /// The topic already holds a message with this id, at `seq`; nothing was
    /// stored and nothing will be delivered again (I2).
    Duplicate {
        /// The position of the original message.
        seq: u64,
    },
}

impl Outcome {
    /// The seq of the stored message (new or original).
    pub fn seq(self) -> u64 {
        match self {
            Outcome::Published { seq } | Outcome::Duplicate { seq } => seq,
        }
    }

    /// True for [`Outcome::Duplicate`].
    pub fn is_duplicate(self) -> bool {
        matches!(self, Outcome::Duplicate { .. })
    }
}

/// The default largest message ([`Message::size`]), in bytes (1 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// The length of a generated id.
const GENERATED_ID_LEN: usize = 26;

/// Checks a message for publishing to `topic` as a publish does (`max_size`
/// bounds the whole message), and gives it a generated id if it has none.
/// For drivers that publish outside a [`Bus`](crate::Bus) (from a user's SQL
/// transaction, say).
pub fn prepare_message(
    topic: &str,
    mut message: Message,
    max_size: usize,
    now: Timestamp,
) -> Result<Message> {
    check_name(NameKind::Topic, topic)?;
    message.validate(max_size)?;
    if message.id.is_empty() {
        message.id = next_id(now);
    }
    Ok(message)
}

/// A new unique id from the process-wide generator.
pub(crate) fn next_id(now: Timestamp) -> String {
    static IDS: std::sync::Mutex<Option<IdGenerator>> = std::sync::Mutex::new(None);
    crate::clock::lock(&IDS)
        .get_or_insert_with(IdGenerator::new)
        .next(now)
}

/// Longest topic, group, id or key, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a topic or group name: 1..=255 bytes of `[A-Za-z0-9._:/-]`.
pub(crate) fn check_name(kind: NameKind, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_name(kind, name, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid_name(kind, name, "longer than 255 bytes"));
    }
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-');
    if !name.bytes().all(allowed) {
        return Err(Error::invalid_name(
            kind,
            name,
            "only A-Z, a-z, 0-9 and . _ : / - are allowed",
        ));
    }
    Ok(())
}

/// Checks an id, key or metadata key: 1..=255 bytes, no control characters.
pub(crate) fn check_label(kind: NameKind, label: &str) -> Result<()> {
    if label.is_empty() {
        return Err(Error::invalid_name(kind, label, "must not be empty"));
    }
    if label.len() > MAX_NAME_LEN {
        return Err(Error::invalid_name(kind, label, "longer than 255 bytes"));
    }
    if label.chars().any(char::is_control) {
        return Err(Error::invalid_name(
            kind,
            label,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Generates unique, time-sortable ids in the ULID layout: 48 bits of
/// milliseconds then 80 bits that start random and count up within a
/// millisecond, written as 26 Crockford base-32 characters.
///
/// Why not the `ulid` crate: ids take their time from the bus clock (I10:
/// a `ManualClock` makes them deterministic in order), and its generator
/// takes the time from `SystemTime` or needs a `rand` source; its random
/// bits on wasm32 need `getrandom`'s JavaScript backend, which would add
/// wasm-bindgen glue to every build, the memory-only browser build
/// included (115 KB gzipped today). The standard library's hasher keys seed
/// these ids on every target.
#[derive(Debug)]
pub(crate) struct IdGenerator {
    last_millis: u64,
    low: u128,
}

const LOW_BITS: u32 = 80;
const LOW_MASK: u128 = (1 << LOW_BITS) - 1;

impl IdGenerator {
    pub(crate) fn new() -> Self {
        IdGenerator {
            last_millis: 0,
            low: seed() & LOW_MASK,
        }
    }

    pub(crate) fn next(&mut self, now: Timestamp) -> String {
        let millis = now.as_millis().max(self.last_millis) & ((1 << 48) - 1);
        if millis == self.last_millis {
            self.low = (self.low + 1) & LOW_MASK;
        } else {
            // Keep the random high part, restart the counter region so ids
            // stay sortable within a millisecond.
            self.low = (self.low & !0xFFFF_FFFF) | u128::from(seed() as u32 >> 1);
            self.last_millis = millis;
        }
        encode_base32((u128::from(millis) << LOW_BITS) | self.low)
    }
}

/// Random bits from the standard library's per-process hasher keys mixed with
/// a counter and a stack address; no extra dependency, and enough to keep
/// ids of different processes apart.
fn seed() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut halves = [0u64; 2];
    for (i, half) in halves.iter_mut().enumerate() {
        let mut h = state.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_usize(std::ptr::from_ref(&i) as usize);
        *half = h.finish();
    }
    (u128::from(halves[0]) << 64) | u128::from(halves[1])
}

fn encode_base32(mut value: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = [0u8; GENERATED_ID_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    out.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_sorted() {
        let mut g = IdGenerator::new();
        let mut ids: Vec<String> = (0..1000)
            .map(|i| g.next(Timestamp::from_millis(1_700_000_000_000 + i / 10)))
            .collect();
        assert!(ids.iter().all(|id| id.len() == 26));
        let sorted = ids.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids, sorted);
    }

    fn decode(id: &str) -> u128 {
        const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        id.chars().fold(0, |v, c| {
            (v << 5) | u128::try_from(ALPHABET.find(c).expect("base 32")).unwrap()
        })
    }

    #[test]
    fn ids_carry_the_millisecond_and_count_up_within_it() {
        let t = 1_700_000_000_123;
        let mut g = IdGenerator::new();
        let first = decode(&g.next(Timestamp::from_millis(t)));
        let second = decode(&g.next(Timestamp::from_millis(t)));
        assert_eq!(first >> LOW_BITS, u128::from(t));
        assert_eq!(second, first + 1, "the same millisecond counts up by one");
        let later = decode(&g.next(Timestamp::from_millis(t + 1)));
        assert_eq!(later >> LOW_BITS, u128::from(t + 1));
        let (low, later_low) = (first & LOW_MASK, later & LOW_MASK);
        assert_eq!(
            later_low >> 32,
            low >> 32,
            "a new millisecond keeps the random high part"
        );
        assert!(
            later_low & 0xFFFF_FFFF < 1 << 31,
            "and restarts the counter low"
        );
    }

    #[test]
    fn ids_keep_rising_when_the_clock_steps_back() {
        let mut g = IdGenerator::new();
        let ahead = g.next(Timestamp::from_millis(1_700_000_000_500));
        let behind = g.next(Timestamp::from_millis(1_700_000_000_000));
        assert!(behind > ahead, "{behind} after {ahead}");
        assert_eq!(decode(&behind), decode(&ahead) + 1);
    }

    #[test]
    fn generators_start_apart() {
        let t = Timestamp::from_millis(1_700_000_000_000);
        let ids: Vec<u128> = (0..8)
            .map(|_| decode(&IdGenerator::new().next(t)))
            .collect();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ids.len(), "two generators made the same id");
        // All 80 random bits are used, not only the lower 64.
        assert!(ids.iter().any(|id| (id >> 64) & 0xFFFF != 0));
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(check_name(NameKind::Topic, "orders.v1:eu/west-2_a").is_ok());
        assert!(check_name(NameKind::Topic, "").is_err());
        assert!(check_name(NameKind::Topic, "has space").is_err());
        assert!(check_name(NameKind::Topic, "é").is_err());
        assert!(check_name(NameKind::Topic, &"a".repeat(255)).is_ok());
        assert!(check_name(NameKind::Topic, &"a".repeat(256)).is_err());
    }

    #[test]
    fn invalid_name_error_cuts_long_values_on_char_boundaries() {
        let long = "é".repeat(100);
        let Err(Error::InvalidName { name, .. }) = check_name(NameKind::Group, &long) else {
            panic!("expected InvalidName");
        };
        assert!(name.len() <= 64);
    }
}
