//! The one error type of litebus: a kind per failure, with predicates.

use std::fmt;

/// Result alias used across litebus.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of name failed validation in [`Error::InvalidName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameKind {
    /// A topic name (also a dead-letter topic).
    Topic,
    /// A consumer group name.
    Group,
    /// A caller-given message id.
    MessageId,
    /// A message's ordering key.
    MessageKey,
    /// A metadata key.
    MetadataKey,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Topic => "topic",
            NameKind::Group => "group",
            NameKind::MessageId => "message id",
            NameKind::MessageKey => "message key",
            NameKind::MetadataKey => "metadata key",
        })
    }
}

/// Every failure litebus reports.
///
/// Bad input is reported before anything is stored: a call that returns one of
/// the input kinds ([`InvalidName`](Error::InvalidName),
/// [`MessageTooLarge`](Error::MessageTooLarge),
/// [`InvalidOptions`](Error::InvalidOptions)) changed nothing.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The bus was closed; no further calls are served.
    Closed,
    /// A topic, group, id or key does not follow the naming rules.
    InvalidName {
        /// Which name was wrong.
        kind: NameKind,
        /// The offending value (cut to 64 bytes).
        name: String,
        /// What rule it broke.
        reason: &'static str,
    },
    /// A message is larger than
    /// [`BusOptions::max_message_size`](crate::BusOptions::max_message_size)
    /// (payload, id, key and metadata together: [`Message::size`](crate::Message::size)).
    MessageTooLarge {
        /// The message's size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Options that cannot work together or that contradict the stored group.
    InvalidOptions(String),
    /// The group does not exist on its topic (any more).
    UnknownGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// The topic was deleted ([`Bus::delete_topic`](crate::Bus::delete_topic)):
    /// publishing to it, subscribing to it, naming it as a dead-letter
    /// topic and setting its retention are refused until
    /// [`Bus::create_topic`](crate::Bus::create_topic) lifts the deletion.
    TopicDeleted {
        /// The topic.
        topic: String,
    },
    /// The topic cannot be deleted: it is the dead-letter topic of a group
    /// of another topic, whose dead letters must always land (I8). Delete
    /// that group first.
    TopicInUse {
        /// The topic.
        topic: String,
        /// The topic of the group that names it.
        by_topic: String,
        /// The group that names it as its dead-letter topic.
        by_group: String,
    },
    /// Something that cannot happen did: a bug in litebus or in its driver
    /// (please report it), not a problem with the stored data.
    Internal(String),
    /// The lease behind an ack, nack or extend is no longer current: it
    /// expired and another consumer took the message, or it was settled.
    LeaseLost,
    /// An append with an expected last seq found another.
    Conflict {
        /// The last seq the caller expected.
        expected: u64,
        /// The topic's actual last seq.
        actual: u64,
    },
    /// The storage engine failed.
    Driver(DriverError),
    /// A stored row did not decode.
    Corrupt(String),
}

impl Error {
    /// True for [`Error::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }

    /// True for [`Error::LeaseLost`].
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Error::LeaseLost)
    }

    /// True when trying the same call again may succeed (a busy or timed-out
    /// storage engine). Input errors and lost leases are never retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Driver(e) if e.is_retryable())
    }

    pub(crate) fn invalid_name(kind: NameKind, name: &str, reason: &'static str) -> Self {
        let mut end = name.len().min(64);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        Error::InvalidName {
            kind,
            name: name[..end].to_owned(),
            reason,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("the bus is closed"),
            Error::InvalidName { kind, name, reason } => {
                write!(f, "invalid {kind} {name:?}: {reason}")
            }
            Error::MessageTooLarge { size, max } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the limit of {max} bytes"
                )
            }
            Error::InvalidOptions(why) => write!(f, "invalid options: {why}"),
            Error::UnknownGroup { topic, group } => {
                write!(f, "group {group:?} does not exist on topic {topic:?}")
            }
            Error::TopicDeleted { topic } => {
                write!(f, "topic {topic:?} was deleted (create it again to use it)")
            }
            Error::TopicInUse {
                topic,
                by_topic,
                by_group,
            } => write!(
                f,
                "topic {topic:?} is the dead-letter topic of group {by_group:?} of topic {by_topic:?}"
            ),
            Error::Internal(what) => write!(f, "internal error (a bug: please report it): {what}"),
            Error::LeaseLost => f.write_str("the lease is no longer current"),
            Error::Conflict { expected, actual } => {
                write!(f, "expected last seq {expected}, found {actual}")
            }
            Error::Driver(e) => write!(f, "storage error: {e}"),
            Error::Corrupt(what) => write!(f, "corrupt stored data: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Driver(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DriverError> for Error {
    fn from(e: DriverError) -> Self {
        Error::Driver(e)
    }
}

/// A failure of a storage engine, as a driver reports it.
#[derive(Debug)]
pub struct DriverError {
    message: String,
    retryable: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DriverError {
    /// A failure that will not go away by trying again.
    pub fn fatal(message: impl Into<String>) -> Self {
        DriverError {
            message: message.into(),
            retryable: false,
            source: None,
        }
    }

    /// A transient failure (busy, timed out): the same call may succeed later.
    pub fn retryable(message: impl Into<String>) -> Self {
        DriverError {
            message: message.into(),
            retryable: true,
            source: None,
        }
    }

    /// Attach the engine's own error.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
