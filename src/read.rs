//! Reads without consuming: [`Record`], and [`Follow`], a durable feed that
//! reads a topic from a seq, then goes on live.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::bus::BusInner;
use crate::clock::lock;
use crate::driver::{BoxFuture, Read};
use crate::error::Result;
use crate::message::Message;
use crate::stream::{StreamState, wait_out};

/// A message as its topic stores it, read without consuming it
/// ([`Bus::read`](crate::Bus::read), [`Follow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    seq: u64,
    message: Arc<Message>,
    undecodable: Option<String>,
}

impl Record {
    pub(crate) fn new(seq: u64, message: Arc<Message>, undecodable: Option<String>) -> Self {
        Record {
            seq,
            message,
            undecodable,
        }
    }

    /// Its position in the topic.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The message.
    pub fn message(&self) -> &Arc<Message> {
        &self.message
    }

    /// The message, taken out.
    pub fn into_message(self) -> Arc<Message> {
        self.message
    }

    /// For a row that plain SQL wrote into a SQL store and that is not a
    /// message (I12), why: [`message`](Record::message) then holds what could
    /// be read of it. `None` for every message litebus stored.
    pub fn undecodable(&self) -> Option<&str> {
        self.undecodable.as_deref()
    }
}

/// A dead letter of one group, as [`Bus::dead_letters`](crate::Bus::dead_letters)
/// lists it: the message in the group's dead-letter topic, and what its
/// `litebus.dead_letter.*` metadata says of where it came from and why it
/// died (I8).
#[derive(Debug, Clone)]
pub struct DeadLetter {
    record: Record,
    topic: String,
    group: String,
    seq: u64,
    id: String,
    attempts: u32,
    error: String,
}

impl DeadLetter {
    /// Reads `record` as a dead letter of `group` of `topic`: `None` for a
    /// message of the dead-letter topic that is not one (anyone may publish
    /// there) or is another group's.
    pub(crate) fn of(record: Record, topic: &str, group: &str) -> Option<DeadLetter> {
        use crate::driver::dead_letter_keys as keys;
        let meta = record.message().metadata();
        if meta.get(keys::TOPIC).map(String::as_str) != Some(topic)
            || meta.get(keys::GROUP).map(String::as_str) != Some(group)
        {
            return None;
        }
        let seq = meta.get(keys::SEQ)?.parse().ok()?;
        let attempts = meta.get(keys::ATTEMPTS)?.parse().ok()?;
        let id = meta.get(keys::ID)?.clone();
        let error = meta.get(keys::ERROR)?.clone();
        Some(DeadLetter {
            record,
            topic: topic.to_owned(),
            group: group.to_owned(),
            seq,
            id,
            attempts,
            error,
        })
    }

    /// The dead letter as its dead-letter topic stores it: its seq there
    /// (where a next page starts after) and the message, with the payload,
    /// key and metadata of the one that died.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The topic the message came from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The group that gave up on it.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Its seq in [`topic`](DeadLetter::topic).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Its id in [`topic`](DeadLetter::topic).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The message that died, as a redrive sends it back: its id, payload,
    /// key and metadata without the `litebus.dead_letter.*` entries.
    pub(crate) fn message_back(&self) -> Message {
        let message = self.record.message();
        let mut metadata = message.metadata().clone();
        metadata.retain(|k, _| !k.starts_with(crate::driver::dead_letter_keys::PREFIX));
        Message::from_parts(
            self.id.clone(),
            message.payload().to_vec(),
            metadata,
            message.key().map(str::to_owned),
            None,
        )
        .with_priority(message.priority())
    }

    /// How many deliveries it had.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last error (cut to 1 KiB): a nack's reason (or
    /// [`NACKED`](crate::driver::NACKED) when it gave none),
    /// [`LEASE_EXPIRED`](crate::driver::LEASE_EXPIRED),
    /// [`CONSUMER_RELEASED`](crate::driver::CONSUMER_RELEASED), or why a row
    /// was undecodable.
    pub fn error(&self) -> &str {
        &self.error
    }
}

/// How many messages a [`Follow`] reads per look at the store.
const PAGE: u32 = 512;

/// A durable feed of one topic (or of one key of it): the messages stored
/// from a seq on, then each new one as it is committed, through any bus on
/// the store (another process's commits as soon as the driver sees them).
/// Made by [`Bus::follow`](crate::Bus::follow) and
/// [`Bus::follow_key`](crate::Bus::follow_key).
///
/// It consumes nothing and holds no lease: it is a cursor that reads on
/// from the last seq it returned. Seqs are given in commit order, so the
/// switch from catching up to live has neither gaps nor repeats. Messages
/// come in seq order whatever their `deliver_at`.
///
/// Use [`recv`](Follow::recv) or the [`Stream`] form. The stream yields a
/// retryable driver error and goes on after a growing pause; it yields a
/// fatal one and ends; it ends when the bus closes.
#[must_use = "a follow reads nothing unless polled"]
pub struct Follow {
    reader: Arc<Reader>,
    /// The read in progress when polled as a stream. In a mutex only to
    /// keep `Follow: Sync`; it is reached through `&mut self`.
    pending: Mutex<Option<BoxFuture<'static, Result<Record>>>>,
    stream: StreamState,
}

struct Reader {
    bus: Arc<BusInner>,
    topic: String,
    key: Option<String>,
    cursor: Mutex<Cursor>,
}

/// Where a follow stands: the records read ahead and not yet returned
/// (seqs in `(returned, read_to]`).
struct Cursor {
    returned: u64,
    read_to: u64,
    ahead: VecDeque<Record>,
}

impl Follow {
    pub(crate) fn new(bus: Arc<BusInner>, topic: &str, key: Option<&str>, after: u64) -> Self {
        Follow {
            reader: Arc::new(Reader {
                bus,
                topic: topic.to_owned(),
                key: key.map(str::to_owned),
                cursor: Mutex::new(Cursor {
                    returned: after,
                    read_to: after,
                    ahead: VecDeque::new(),
                }),
            }),
            pending: Mutex::new(None),
            stream: StreamState::default(),
        }
    }

    /// The next message: at once if it is stored, else when it is
    /// committed. Errors of the driver are returned and the follow stays
    /// usable; after [`Bus::close`](crate::Bus::close) it returns
    /// [`Error::Closed`](crate::Error::Closed).
    ///
    /// # Cancel safety
    /// Cancel safe: dropped after any poll, it has returned nothing and the
    /// next call returns the same message.
    pub async fn recv(&mut self) -> Result<Record> {
        self.reader.clone().next().await
    }

    /// The seq of the last message returned (the seq before the start when
    /// none was): a checkpoint to follow on from later with
    /// `bus.follow(topic, checkpoint + 1)`.
    pub fn position(&self) -> u64 {
        lock(&self.reader.cursor).returned
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.reader.topic
    }

    /// The key it reads, if it reads one key's messages.
    pub fn key(&self) -> Option<&str> {
        self.reader.key.as_deref()
    }
}

impl Reader {
    async fn next(self: Arc<Self>) -> Result<Record> {
        loop {
            self.bus.check_open()?;
            let after = {
                let mut cursor = lock(&self.cursor);
                if let Some(record) = cursor.ahead.pop_front() {
                    cursor.returned = record.seq;
                    return Ok(record);
                }
                cursor.read_to
            };
            // Armed before the look, so no commit slips between the look
            // and the wait.
            let published = self.bus.wakeups.published_listener(&self.topic);
            let closing = self.bus.closing.listen();
            let external = self.bus.driver.watch_external();
            let records = self
                .bus
                .driver
                .read(Read {
                    topic: &self.topic,
                    after,
                    key: self.key.as_deref(),
                    limit: PAGE,
                    skip_taken_back: false,
                })
                .await?;
            if !records.is_empty() {
                let mut cursor = lock(&self.cursor);
                // Another read of this follow (its stream and `next` polled
                // by turns) may have gone on meanwhile: keep only what
                // follows on from where it stands.
                if cursor.read_to == after && cursor.ahead.is_empty() {
                    cursor.read_to = records.last().map_or(after, |r| r.seq);
                    cursor.ahead.extend(records);
                }
                continue;
            }
            let others = async {
                match external {
                    Some(external) => futures_lite::future::or(closing, external).await,
                    None => closing.await,
                }
            };
            futures_lite::future::or(published, others).await;
        }
    }
}

impl Stream for Follow {
    type Item = Result<Record>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let slot = this
            .pending
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let reader = &this.reader;
        this.stream.poll_next(slot, cx, |pause| {
            let reader = reader.clone();
            Box::pin(async move {
                wait_out(&reader.bus, pause).await;
                reader.next().await
            })
        })
    }
}

impl fmt::Debug for Follow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follow")
            .field("topic", &self.reader.topic)
            .field("key", &self.reader.key)
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}
