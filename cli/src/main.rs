//! `litebus`: inspect, tail, publish to and repair a litebus store from a
//! terminal. See `litebus --help`, and the README's "From a terminal".

mod commands;
mod output;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Failure;

/// Inspect, tail, publish to and repair a litebus store.
///
/// Exit codes: 0 done; 1 the operation failed; 2 bad usage or input;
/// 3 the store is missing, damaged, not a litebus store or newer than this
/// tool; 4 no such topic or group; 5 an audit chain does not verify.
#[derive(Debug, Parser)]
#[command(name = "litebus", version, about, long_about)]
struct Cli {
    /// The store: a SQLite file written by litebus.
    #[arg(
        short,
        long,
        env = "LITEBUS_DB",
        global = true,
        default_value = "litebus.db"
    )]
    db: PathBuf,
    /// The driver that opens it.
    #[arg(long, value_enum, global = true, default_value_t = DriverKind::Sqlx)]
    driver: DriverKind,
    /// Print JSON instead of tables (one document, or one line per message
    /// for `tail` and per refresh for `stat --watch`).
    #[arg(long, global = true)]
    json: bool,
    /// Keep the audit chain of this topic (repeatable): what this command
    /// publishes to it or settles of it is recorded, as by the buses that
    /// audit it.
    #[arg(
        long,
        value_name = "TOPIC",
        global = true,
        env = "LITEBUS_AUDIT",
        value_delimiter = ','
    )]
    audit: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

/// The driver that opens a store file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverKind {
    /// SQLite through sqlx: sees commits of other processes as they land.
    Sqlx,
    /// SQLite in pure Rust through turso.
    Turso,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Topics and groups: ready, in flight, dead, lag, oldest age, file size.
    Stat {
        /// Only this topic.
        topic: Option<String>,
        /// Refresh every SECS seconds until interrupted.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// Print messages of a topic as they are published (from any process).
    Tail {
        /// The topic.
        topic: String,
        /// Start at this seq (default: after the last one, new messages only).
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        /// Consume as this group (each message printed is acked) instead of
        /// watching; creates the group with default settings if it is new.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// Stop after this many messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Publish a message, or one per line of standard input.
    Pub(PubArgs),
    /// Print stored messages of a topic.
    Peek {
        /// The topic.
        topic: String,
        /// From this seq.
        #[arg(long, value_name = "SEQ", default_value_t = 1)]
        from: u64,
        /// At most this many.
        #[arg(long, short = 'n', value_name = "N", default_value_t = 20)]
        limit: usize,
    },
    /// A group's dead letters: list, send back, give up.
    #[command(subcommand)]
    Dlq(Dlq),
    /// Groups: list, move, delete.
    #[command(subcommand)]
    Group(Group),
    /// Topics: list, delete.
    #[command(subcommand)]
    Topic(Topic),
    /// Show or set a topic's retention, or prune it now.
    Retention(RetentionArgs),
    /// Audit chains: verify one.
    #[command(subcommand)]
    Audit(Audit),
}

#[derive(Debug, Subcommand)]
enum Audit {
    /// Walk the audit chain of TOPIC and name its first broken row (exit
    /// code 5 when there is one).
    Verify {
        /// The audited topic.
        topic: String,
    },
}

#[derive(Debug, Args)]
struct PubArgs {
    /// The topic.
    topic: String,
    /// The payload; `-` or none reads standard input, one message per line.
    payload: Option<String>,
    /// The message's id (a second publish of it is a duplicate); one
    /// message only.
    #[arg(long)]
    id: Option<String>,
    /// The message's key.
    #[arg(long)]
    key: Option<String>,
    /// A metadata entry, `KEY=VALUE` (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Deliver no sooner than this from now (`500ms`, `30s`, `5m`, `2h`, `1d`).
    #[arg(long, value_name = "DURATION")]
    delay: Option<String>,
    /// The message's priority (0–255; shared groups take higher first).
    #[arg(long, default_value_t = 0)]
    priority: u8,
}

#[derive(Debug, Subcommand)]
enum Dlq {
    /// The group's dead letters.
    List {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// From this seq of the dead-letter topic.
        #[arg(long, value_name = "SEQ", default_value_t = 1)]
        from: u64,
        /// At most this many.
        #[arg(long, short = 'n', value_name = "N", default_value_t = 100)]
        limit: usize,
    },
    /// Send dead letters back to their group (all, or those with these ids).
    Redrive {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// Only the dead letter with this message id (repeatable).
        #[arg(long)]
        id: Vec<String>,
    },
    /// Give up dead letters for good (`--all`, or those with these ids).
    Purge {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// Only the dead letter with this message id (repeatable).
        #[arg(long, required_unless_present = "all")]
        id: Vec<String>,
        /// Every dead letter of the group.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Group {
    /// Groups with their settings (of every topic, or of one).
    List {
        /// Only this topic.
        topic: Option<String>,
    },
    /// Move a group: `--to beginning`, `--to end` or `--to SEQ` (it next
    /// delivers the message after SEQ).
    Seek {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// `beginning`, `end`, or the seq to continue after.
        #[arg(long)]
        to: String,
    },
    /// Delete a group with its progress.
    Delete {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
}

#[derive(Debug, Subcommand)]
enum Topic {
    /// Topics with their message counts.
    List,
    /// Delete a topic with its messages and groups.
    Delete {
        /// The topic.
        topic: String,
    },
}

#[derive(Debug, Args)]
struct RetentionArgs {
    /// The topic.
    topic: String,
    /// Keep every message (clears the rules below).
    #[arg(long, conflicts_with_all = ["until_consumed", "max_age", "max_messages", "max_bytes"])]
    keep_all: bool,
    /// Let a message go once every group consumed it.
    #[arg(long)]
    until_consumed: bool,
    /// Let a message go at this age (`30s`, `7d`).
    #[arg(long, value_name = "DURATION")]
    max_age: Option<String>,
    /// Keep at most this many messages.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Keep at most this many payload bytes.
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
    /// Remember the ids of messages that went for this long.
    #[arg(long, value_name = "DURATION")]
    dedupe_window: Option<String>,
    /// Let go now of what the retention allows.
    #[arg(long)]
    prune: bool,
}

impl RetentionArgs {
    fn sets(&self) -> bool {
        self.keep_all
            || self.until_consumed
            || self.max_age.is_some()
            || self.max_messages.is_some()
            || self.max_bytes.is_some()
            || self.dedupe_window.is_some()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            eprintln!("litebus: {message}");
            ExitCode::from(code)
        }
    }
}
