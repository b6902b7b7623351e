//! Each driver call as statements. Every function runs inside one
//! transaction the driver opened, so each is atomic.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::codec::{decode_metadata, encode_metadata};
use litebus::driver::{
    Ahead, Append, CONSUMER_RELEASED, Claim, ClaimOutcome, Claimed, DeadLettered, DeleteTopic,
    EnsureGroup, GroupSpec, Handoff, Inbox, LEASE_EXPIRED, NACKED, Prune, Read, Redrive, Release,
    Seek, Settle, Settlement, TopicDeletion, TopicStats, dead_letter_message, generate_id,
    group_stats, lag, prune_count, stored_message, stored_record, topic_stats,
};
use litebus::{
    Backoff, Error, Message, Order, Outcome, RateLimit, Record, Result, Retention, Timestamp,
};

use crate::{Conn, Row, Value};
use hot::{
    ACK, CLAIM_APART, CLAIM_GROUP, CLAIM_ORDERED, CLAIM_PER_KEY, CLAIM_SHARED, NEXT_PER_KEY,
    NEXT_PRIORITIZED, NEXT_SHARED, ORDERED_ACK, ORDERED_AHEAD, ORDERED_LEASE, TAKE_IN_PER_KEY,
    TAKE_IN_PRIORITIZED, TAKE_IN_RETURNING, TAKE_IN_SQL, TAKE_IN_WINDOW,
};

/// Rows per multi-row `INSERT`: six parameters each stays far below
/// SQLite's parameter limit.
const INSERT_CHUNK: usize = 100;
/// Rows one lease `UPDATE` of a claim takes (three values each at most):
/// a claim of more (a prefetch of thousands) runs several, as no statement
/// may bind more than 32,766 values.
const LEASE_CHUNK: usize = 100;
/// The most acks one statement of [`ack_many`] takes.
pub const ACK_CHUNK: usize = INSERT_CHUNK * 2;

/// The most messages [`insert_new`] stores with its one statement.
pub const ONE_STATEMENT_APPEND: usize = INSERT_CHUNK;
/// Messages a group takes in per round of a claim, at least.
const TAKE_IN: u64 = 256;
/// ... and at most: a claim that wants more (a prefetch of thousands)
/// takes in what it lacks, up to this many per round, rather than 256 a
/// round with every candidate read again after each (measured: a claim of
/// 12,000 messages took 6.5 s in 47 rounds).
const TAKE_IN_MAX: u64 = 4096;

fn ts(t: Timestamp) -> Value {
    Value::from(t.as_millis())
}

/// `count` bare parameters: `?,?,?`.
///
/// A statement with a long list of parameters uses only bare `?`, its
/// values in the order the text names them. sqlx looks up the name of every
/// parameter, and SQLite finds a name by walking the list of all named ones,
/// so `?1 … ?600` cost time quadratic in the count (measured: 30 % of a
/// batch publish). sqlx binds the k-th bare `?` to the k-th value, SQLite
/// and turso number it one above the highest before it: they agree only
/// when no numbered parameter comes first.
fn placeholders(out: &mut String, count: usize) {
    for i in 0..count {
        out.push_str(if i == 0 { "?" } else { ",?" });
    }
}

/// The columns of a message row `m` (see `MESSAGE_COLUMNS`).
macro_rules! message_columns {
    () => {
        "m.seq, typeof(m.id), CAST(m.id AS BLOB), \
         typeof(m.payload), CAST(m.payload AS BLOB), typeof(m.metadata), CAST(m.metadata AS BLOB), \
         typeof(m.msg_key), CAST(m.msg_key AS BLOB), \
         typeof(m.deliver_at), CASE WHEN typeof(m.deliver_at) = 'integer' THEN m.deliver_at END, \
         typeof(m.priority), CASE WHEN typeof(m.priority) = 'integer' THEN m.priority END"
    };
}

/// The statements of the hot path (claims and acks), public so that a test
/// can prove with `EXPLAIN QUERY PLAN` that each is an index range.
pub mod hot {
    /// `INSERT … SELECT` of the next messages of topic `?1` after seq `?3`
    /// into shared group `?2`, at most `?4`, passing over those of a
    /// priority above 0 (each became a handout of the group when it was
    /// stored, and may have gone since). (`NOT priority > 0`, not
    /// `priority = 0`: a row plain SQL wrote with a priority below 0 is
    /// taken in, and dead-lettered as undecodable, not passed over by both.)
    macro_rules! take_in {
        () => {
            "INSERT INTO litebus_handouts (topic, grp, seq, msg_key, attempt, ready_at)
             SELECT topic, ?2, seq, NULL, 0,
                    CASE WHEN typeof(deliver_at) = 'integer' THEN deliver_at ELSE 0 END
             FROM litebus_messages
             WHERE topic = ?1 AND seq > ?3 AND NOT priority > 0 ORDER BY seq LIMIT ?4"
        };
    }
    /// The deliverable handouts of group `?2` of topic `?1` at `?3` that
    /// also meet `$also`, at most `$limit`, in the order `$order`; a row
    /// each: 1, its attempts so far, its message's columns.
    macro_rules! next_handouts {
        ($also:expr, $limit:expr) => {
            next_handouts!($also, $limit, "h.seq")
        };
        ($also:expr, $limit:expr, $order:expr) => {
            concat!(
                "SELECT 1, h.attempt, ",
                message_columns!(),
                ", NULL, NULL, NULL, NULL
                 FROM litebus_handouts h JOIN litebus_messages m ON m.seq = h.seq
                 WHERE h.topic = ?1 AND h.grp = ?2
                   AND (h.consumer IS NULL OR h.lease_until <= ?3) AND h.ready_at <= ?3",
                $also,
                " ORDER BY ",
                $order,
                " LIMIT ",
                $limit
            )
        };
    }
    /// A per-key group's handout `h` is the first of its key (its
    /// handouts are the heads of keys) or has none. (`e.msg_key IS NOT
    /// NULL`, implied by the equality, lets turso's planner use the partial
    /// index on keys: without it turso reads every earlier handout of the
    /// group for each one, measured 10 s for 2,000 candidates.)
    macro_rules! first_of_key {
        () => {
            " AND (h.msg_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM litebus_handouts e
                WHERE e.topic = h.topic AND e.grp = h.grp AND e.msg_key IS NOT NULL
                  AND e.msg_key = h.msg_key AND e.seq < h.seq))"
        };
    }
    pub(super) use first_of_key;
    /// A per-key group's candidates: the first of each key, and those
    /// without a key.
    macro_rules! next_per_key {
        () => {
            next_handouts!(first_of_key!(), "?4")
        };
    }
    /// What is left of shared group `?2`'s `max_in_flight` at `?3`, at
    /// most `?4`.
    macro_rules! shared_room {
        () => {
            "MAX(0, MIN(?4, (
                SELECT g.max_in_flight FROM litebus_groups g WHERE g.topic = ?1 AND g.grp = ?2
             ) - (
                SELECT COUNT(*) FROM litebus_handouts a
                WHERE a.topic = ?1 AND a.grp = ?2 AND a.consumer IS NOT NULL AND a.lease_until > ?3
             )))"
        };
    }
    /// A shared group's candidates of priority 0: no more than what is
    /// left of its `max_in_flight` (a claim of a group at its limit reads
    /// none), in seq order. (Its prioritized ones: [`NEXT_PRIORITIZED`],
    /// read only when the group has some: a compound read of both cost a
    /// claim of 100 about 15%, measured with the bench's `consume.1x1` on
    /// a sqlx file.)
    macro_rules! next_shared {
        () => {
            next_handouts!(" AND NOT h.priority > 0", shared_room!())
        };
    }
    /// An ordered group's next messages: up to `$limit` of topic `?1`
    /// after seq `$after`, and up to `$limit` of the messages a redrive
    /// sent back to group `$grp` (its only handouts), each row `$before`,
    /// the message's columns, `$tail`. Two index ranges (`topic IN (…)` would sort the
    /// whole backlog); the caller puts the rows in seq order and keeps the
    /// first `$limit`.
    macro_rules! ordered_next {
        (($before:expr, $tail:expr), $after:expr, $grp:expr, $limit:expr) => {
            concat!(
                "SELECT * FROM (SELECT ",
                $before,
                message_columns!(),
                $tail,
                " FROM litebus_messages m WHERE m.topic = ?1 AND m.seq > ",
                $after,
                " ORDER BY m.seq LIMIT ",
                $limit,
                ") UNION ALL SELECT * FROM (SELECT ",
                $before,
                message_columns!(),
                $tail,
                " FROM litebus_handouts h JOIN litebus_messages m ON m.seq = h.seq
                 WHERE h.topic = ?1 AND h.grp = ",
                $grp,
                " ORDER BY h.seq LIMIT ",
                $limit,
                ")"
            )
        };
    }
    /// Ordered group `?2`'s next messages: up to `?4` after its cursor
    /// ([`ordered_next`]), as [`next_handouts`] gives them (no attempts: 0).
    macro_rules! next_ordered {
        () => {
            concat!(
                "SELECT * FROM (",
                ordered_next!(
                    ("1, 0, ", ", NULL, NULL, NULL, NULL"),
                    "(SELECT cursor FROM litebus_groups WHERE topic = ?1 AND grp = ?2)",
                    "?2",
                    "?4"
                ),
                ")"
            )
        };
    }
    /// What a claim of group `?2` of topic `?1` at `?3` needs to know of
    /// the group: a row of 0, the group row (`GROUP_COLUMNS`: its
    /// settings, cursor and an ordered group's head); whether the topic holds messages
    /// after the group's cursor that a take-in would take (so a claim that
    /// finds nothing writes nothing); the unexpired leases of a shared
    /// group or a capped per-key one (I7); and, a row
    /// each, the final attempts whose lease ran out (I8), with their lease
    /// end; its generation, its rate limit's window, and whether a shared
    /// group has prioritized handouts. One row when none
    /// did.
    macro_rules! claim_group {
        () => {
            "SELECT 0, g.ordering, g.max_in_flight, g.max_attempts, g.dead_letter, g.cursor,
                g.head_seq, g.head_attempt, g.holder, g.lease_until, g.ready_at,
                EXISTS (SELECT 1 FROM litebus_messages m WHERE m.topic = ?1 AND m.seq > g.cursor
                        AND (NOT m.priority > 0 OR g.ordering <> 'shared')),
                CASE WHEN g.ordering = 'shared' OR (g.ordering = 'per_key' AND g.max_in_flight > 0) THEN (
                    SELECT COUNT(*) FROM litebus_handouts a
                    WHERE a.topic = ?1 AND a.grp = ?2 AND a.consumer IS NOT NULL AND a.lease_until > ?3
                ) ELSE 0 END,
                x.seq, x.lease_until, g.generation, g.rate_start, g.rate_count,
                CASE WHEN g.ordering = 'shared' AND EXISTS (
                    SELECT 1 FROM litebus_handouts p
                    WHERE p.topic = ?1 AND p.grp = ?2 AND p.priority > 0
                ) THEN 1 ELSE 0 END
             FROM litebus_groups g
             LEFT JOIN litebus_handouts x ON x.topic = ?1 AND x.grp = ?2 AND x.consumer IS NOT NULL
                AND x.lease_until <= ?3 AND x.attempt >= g.max_attempts
             WHERE g.topic = ?1 AND g.grp = ?2"
        };
    }
    /// [`claim_group`], then the rows of a `next_*` statement: a claim's
    /// one read when it knows its group's order.
    macro_rules! claim_with {
        ($next:expr) => {
            concat!(claim_group!(), " UNION ALL SELECT * FROM (", $next, ")")
        };
    }

    /// Takes the next messages of a topic into a shared group (a shared
    /// group's handouts keep no key).
    pub const TAKE_IN_SQL: &str = take_in!();
    /// The last seq and the count of the next messages of topic `?1`
    /// after seq `?2`, at most `?3`: what a per-key take-in looks at.
    pub const TAKE_IN_WINDOW: &str = "SELECT MAX(seq), COUNT(*) FROM (
        SELECT seq FROM litebus_messages WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3)";
    /// Takes the messages of topic `?1` after seq `?3` up to seq `?4` into
    /// per-key group `?2`: those without a key, and the first of each key
    /// that has no handout (its head). The others wait in the messages
    /// table for their key's head to go (`litebus_next_of_key`). (Each
    /// `msg_key IS NOT NULL`: see `next_per_key`.)
    pub const TAKE_IN_PER_KEY: &str = "INSERT INTO litebus_handouts
            (topic, grp, seq, msg_key, attempt, ready_at)
         SELECT m.topic, ?2, m.seq, m.msg_key, 0,
                CASE WHEN typeof(m.deliver_at) = 'integer' THEN m.deliver_at ELSE 0 END
         FROM litebus_messages m
         WHERE m.topic = ?1 AND m.seq > ?3 AND m.seq <= ?4
           AND (m.msg_key IS NULL OR (
                NOT EXISTS (
                    SELECT 1 FROM litebus_handouts e
                    WHERE e.topic = ?1 AND e.grp = ?2 AND e.msg_key IS NOT NULL
                      AND e.msg_key = m.msg_key AND e.seq < m.seq)
                AND NOT EXISTS (
                    SELECT 1 FROM litebus_messages p
                    WHERE p.topic = ?1 AND p.msg_key IS NOT NULL AND p.msg_key = m.msg_key
                      AND p.seq > ?3 AND p.seq < m.seq)))";
    /// The next message of key `?3` of topic `?1` after seq `?4`, up to
    /// group `?2`'s cursor: the statement `litebus_next_of_key` runs (with
    /// the deleted row's values) when a per-key group's head goes.
    pub const NEXT_OF_KEY: &str = next_of_key!("m.seq", "?1", "?2", "?3", "?4");
    /// [`TAKE_IN_SQL`], returning the seqs it took in.
    pub const TAKE_IN_RETURNING: &str = concat!(take_in!(), " RETURNING seq");
    /// The messages of topic `?1` after seq `?3` of a priority above 0,
    /// as handouts of shared group `?2` (at its creation and at a seek;
    /// the trigger `litebus_prioritized` does it for later ones), by their
    /// partial index.
    pub const TAKE_IN_PRIORITIZED: &str = "INSERT OR IGNORE INTO litebus_handouts
            (topic, grp, seq, msg_key, attempt, ready_at, priority)
         SELECT m.topic, ?2, m.seq, NULL, 0,
                CASE WHEN typeof(m.deliver_at) = 'integer' THEN m.deliver_at ELSE 0 END,
                m.priority
         FROM litebus_messages m WHERE m.topic = ?1 AND m.seq > ?3 AND m.priority > 0
           AND EXISTS (SELECT 1 FROM litebus_groups g
                       WHERE g.topic = ?1 AND g.grp = ?2 AND g.ordering = 'shared')";
    /// Deliverable messages of a per-key group: the first of each key, and
    /// those without a key.
    pub const NEXT_PER_KEY: &str = next_per_key!();
    /// Deliverable messages of a shared group of priority 0.
    pub const NEXT_SHARED: &str = next_shared!();
    /// A shared group's deliverable handouts of a priority above 0, up to
    /// `?4`, highest first then by seq: a range of their partial index.
    /// (`h.priority > 0` states the index's condition, for turso.)
    pub const NEXT_PRIORITIZED: &str =
        next_handouts!(" AND h.priority > 0", "?4", "h.priority DESC, h.seq");
    /// What a claim needs to know of its group, when it does not know the
    /// group's order.
    pub const CLAIM_GROUP: &str = claim_group!();
    /// [`CLAIM_GROUP`] and the shared group's candidates, in one statement.
    pub const CLAIM_SHARED: &str = claim_with!(next_shared!());
    /// [`CLAIM_GROUP`] and the per-key group's candidates, in one statement.
    pub const CLAIM_PER_KEY: &str = claim_with!(next_per_key!());
    /// [`CLAIM_GROUP`] and the ordered group's next messages, in one
    /// statement.
    pub const CLAIM_ORDERED: &str = claim_with!(next_ordered!());
    /// Ordered group `?4`'s next messages: up to `?3` of topic `?1` after
    /// its cursor `?2` and of its redriven messages (`ordered_next`; in
    /// seq order, the first is its head), every column with its SQL type
    /// so that any row plain SQL wrote decodes or is dead-lettered.
    pub const ORDERED_AHEAD: &str = ordered_next!(("", ""), "?2", "?4", "?3");
    /// Delivers ordered group `?2` of topic `?1`: its head is seq `?3`, at
    /// attempt `?4`, leased to `?5` until `?6`, and deliverable again from
    /// `?7` should the lease run out (its end and the group's backoff).
    pub const ORDERED_LEASE: &str = "UPDATE litebus_groups
         SET head_seq = ?3, head_attempt = ?4, holder = ?5, lease_until = ?6, ready_at = ?7
         WHERE topic = ?1 AND grp = ?2";
    /// Acks ordered group `?2`'s delivery `(?3, ?4)` of generation `?5` if
    /// it is current: the cursor moves to it (never back: a redriven head
    /// behind the group's position leaves it), and the consumer that held it
    /// takes seq `?6` (attempt 1, leased until `?7`, deliverable again from
    /// `?8` should the lease run out) when `?6` is not `NULL` (then `?8`
    /// is 0).
    pub const ORDERED_ACK: &str = "UPDATE litebus_groups
         SET cursor = MAX(cursor, head_seq), head_seq = ?6,
             head_attempt = CASE WHEN ?6 IS NULL THEN 0 ELSE 1 END,
             holder = CASE WHEN ?6 IS NULL THEN NULL ELSE holder END,
             lease_until = ?7, ready_at = ?8
         WHERE topic = ?1 AND grp = ?2 AND head_seq = ?3 AND head_attempt = ?4
           AND holder IS NOT NULL AND generation = ?5";
    /// PostgreSQL only (see [`claim_apart`](crate::claim_apart)): up to
    /// `?4` deliverable handouts of shared group `?2` of topic `?1` at
    /// `?3` within its `max_in_flight`, locked (`FOR UPDATE SKIP LOCKED`:
    /// a row another transaction holds is passed over, not waited for), as
    /// [`NEXT_SHARED`] gives them, each with the group's generation, what
    /// the claim may lease (`?4` within the group's room), whether the topic
    /// holds messages after the group's cursor, and the cursor. None while
    /// the group has final attempts whose lease ran out (they are
    /// dead-lettered first, I8) or prioritized handouts (read with
    /// [`NEXT_PRIORITIZED`]).
    pub const CLAIM_APART: &str = concat!(
        "SELECT 1, h.attempt, ",
        message_columns!(),
        ", g.generation, ",
        shared_room!(),
        ", EXISTS (SELECT 1 FROM litebus_messages o WHERE o.topic = ?1 AND NOT o.priority > 0
                   AND o.seq > (SELECT cursor FROM litebus_groups WHERE topic = ?1 AND grp = ?2)),
           g.cursor
         FROM litebus_handouts h JOIN litebus_messages m ON m.seq = h.seq
         JOIN litebus_groups g ON g.topic = h.topic AND g.grp = h.grp
         WHERE h.topic = ?1 AND h.grp = ?2
           AND (h.consumer IS NULL OR h.lease_until <= ?3) AND h.ready_at <= ?3
           AND NOT h.priority > 0 AND g.ordering = 'shared'
           AND NOT EXISTS (SELECT 1 FROM litebus_handouts x JOIN litebus_groups xg
                   ON xg.topic = x.topic AND xg.grp = x.grp
               WHERE x.topic = ?1 AND x.grp = ?2 AND x.consumer IS NOT NULL
                 AND x.lease_until <= ?3 AND x.attempt >= xg.max_attempts)
           AND NOT EXISTS (SELECT 1 FROM litebus_handouts p
               WHERE p.topic = ?1 AND p.grp = ?2 AND p.priority > 0)
         ORDER BY h.seq LIMIT ",
        shared_room!(),
        " FOR UPDATE OF h SKIP LOCKED"
    );
    /// Acks delivery `(?3, ?4)` of generation `?5` if it is current.
    /// (`+consumer`: the test on the lease must not steer turso's planner
    /// to the partial index of leases, a range over every lease of the
    /// group, instead of the primary key.)
    pub const ACK: &str = "DELETE FROM litebus_handouts
         WHERE topic = ?1 AND grp = ?2 AND seq = ?3 AND attempt = ?4 AND +consumer IS NOT NULL
           AND EXISTS (SELECT 1 FROM litebus_groups g
                       WHERE g.topic = ?1 AND g.grp = ?2 AND g.generation = ?5)";

    /// The ids among `count` (≥ 1) given as `?2…` that topic `?1` already
    /// holds, with their seqs. A join on a `VALUES` list, not `id IN (…)`:
    /// turso runs an `IN` list beside `topic = ?` as a range over the whole
    /// topic, the join as one index lookup per id (so does SQLite).
    /// Parameters: the `count` ids, then the topic (bare `?`, see
    /// `placeholders`).
    #[must_use]
    pub fn known_ids(count: usize) -> String {
        let mut sql = String::from("SELECT m.id, m.seq FROM (VALUES ");
        for i in 0..count {
            sql.push_str(if i == 0 { "(?)" } else { ",(?)" });
        }
        sql.push_str(") AS v JOIN litebus_messages m ON m.topic = ? AND m.id = v.column1");
        sql
    }

    /// The seqs among `count` (≥ 1) given as bare `?` that are messages of
    /// topic `?` (after them) and that no redrive or purge took back: the
    /// dead letters a redrive may still take back. A primary-key lookup per
    /// seq (`+m.topic`: SQLite's planner otherwise ranges over the whole
    /// dead-letter topic per statement, measured 7 ms per 100 in a topic
    /// of 10,000, so a redrive was quadratic).
    #[must_use]
    pub fn still_dead_letters(count: usize) -> String {
        let mut sql = String::from("SELECT m.seq FROM (VALUES ");
        for i in 0..count {
            sql.push_str(if i == 0 { "(?)" } else { ",(?)" });
        }
        sql.push_str(
            ") AS v JOIN litebus_messages m ON m.seq = v.column1
             WHERE +m.topic = ? AND NOT EXISTS (
                SELECT 1 FROM litebus_taken_back t WHERE t.seq = m.seq)
             ORDER BY m.seq",
        );
        sql
    }

    /// [`known_ids`], and the ids among them that retention let go of
    /// within their dedupe window (`litebus_dedupe`). Parameters: the
    /// ids, the topic, the ids again, the topic, the bus clock's time.
    /// (Inside a `SELECT * FROM (…)`: PostgreSQL runs a top-level `UNION
    /// ALL` as one query per part, see `dialect::postgres_parts`; both
    /// parts here have the same column types, so this is one round trip.)
    #[must_use]
    pub fn known_or_remembered_ids(count: usize) -> String {
        let mut sql = String::from("SELECT * FROM (");
        sql.push_str(&known_ids(count));
        sql.push_str(" UNION ALL SELECT d.id, d.seq FROM (VALUES ");
        for i in 0..count {
            sql.push_str(if i == 0 { "(?)" } else { ",(?)" });
        }
        sql.push_str(
            ") AS v JOIN litebus_dedupe d ON d.topic = ? AND d.id = v.column1 AND d.until > ?)",
        );
        sql
    }

    /// The highest seq of a topic, or of what retention let go of (a
    /// topic's last seq never goes back), 0 if none. (`ORDER BY … LIMIT 1`
    /// rather than `MAX(seq)`: turso answers `MAX` by reading every row.)
    pub const LAST_SEQ: &str = "SELECT MAX(
        COALESCE((SELECT seq FROM litebus_messages WHERE topic = ?1 ORDER BY seq DESC LIMIT 1), 0),
        COALESCE((SELECT pruned_to FROM litebus_topics WHERE topic = ?1), 0))";

    /// Reads: the messages of topic `?1` after seq `?2`, at most `?3`.
    pub const READ: &str = concat!(
        "SELECT ",
        message_columns!(),
        " FROM litebus_messages m WHERE m.topic = ?1 AND m.seq > ?2 ORDER BY m.seq LIMIT ?3"
    );

    /// [`READ`], leaving out the dead letters a redrive or purge took back
    /// (`litebus_taken_back`).
    pub const READ_LISTED: &str = concat!(
        "SELECT ",
        message_columns!(),
        " FROM litebus_messages m WHERE m.topic = ?1 AND m.seq > ?2
            AND NOT EXISTS (SELECT 1 FROM litebus_taken_back t WHERE t.seq = m.seq)
         ORDER BY m.seq LIMIT ?3"
    );

    /// Reads of one key: the messages of topic `?1` and key `?4` after seq
    /// `?2`, at most `?3`, through `litebus_messages_by_key`. (The
    /// `IS NOT NULL` repeats what `msg_key = ?4` implies: turso uses the
    /// partial index only when the query states its condition, and ranges
    /// over the whole topic otherwise.)
    pub const READ_KEY: &str = concat!(
        "SELECT ",
        message_columns!(),
        " FROM litebus_messages m
         WHERE m.topic = ?1 AND m.msg_key = ?4 AND m.msg_key IS NOT NULL AND m.seq > ?2
         ORDER BY m.seq LIMIT ?3"
    );

    /// Every statement above.
    pub const ALL: &[&str] = &[
        LAST_SEQ,
        READ,
        READ_LISTED,
        READ_KEY,
        TAKE_IN_SQL,
        TAKE_IN_RETURNING,
        TAKE_IN_PRIORITIZED,
        TAKE_IN_WINDOW,
        TAKE_IN_PER_KEY,
        NEXT_OF_KEY,
        NEXT_PER_KEY,
        NEXT_SHARED,
        NEXT_PRIORITIZED,
        CLAIM_GROUP,
        CLAIM_SHARED,
        CLAIM_PER_KEY,
        CLAIM_ORDERED,
        ORDERED_AHEAD,
        ORDERED_LEASE,
        ORDERED_ACK,
        ACK,
    ];
}

/// Stores messages in order with dedupe by id within the topic (I1, I2).
async fn insert_messages(
    conn: &mut dyn Conn,
    topic: &str,
    messages: &[&Message],
    now: Timestamp,
) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(INSERT_CHUNK) {
        // Duplicates are found before the insert rather than skipped by
        // `ON CONFLICT DO NOTHING`: a skipped row still uses up an
        // AUTOINCREMENT value, and seqs would depend on how many
        // duplicates came by.
        let sql = hot::known_or_remembered_ids(chunk.len());
        let ids = chunk.iter().map(|m| Value::from(m.id()));
        let mut params: Vec<Value> = ids.clone().collect();
        params.push(Value::from(topic));
        params.extend(ids);
        params.push(Value::from(topic));
        params.push(ts(now));
        let mut known: HashMap<String, u64> = HashMap::new();
        for row in conn.query(&sql, params).await? {
            known.insert(row.text(0)?.to_owned(), row.uint(1)?);
        }

        // Which messages of the chunk are new; a repeated id inside the batch
        // is a duplicate of its first occurrence, resolved after the insert.
        let mut fresh: Vec<&Message> = Vec::new();
        let mut first_in_batch: HashMap<&str, usize> = HashMap::new();
        let mut plan: Vec<Result<usize, u64>> = Vec::with_capacity(chunk.len());
        for m in chunk {
            if let Some(&seq) = known.get(m.id()) {
                plan.push(Err(seq));
            } else if let Some(&i) = first_in_batch.get(m.id()) {
                plan.push(Ok(i));
            } else {
                first_in_batch.insert(m.id(), fresh.len());
                plan.push(Ok(fresh.len()));
                fresh.push(m);
            }
        }
        let seqs = insert_rows(conn, topic, &fresh, now).await?;
        let mut published = vec![false; fresh.len()];
        for step in plan {
            outcomes.push(match step {
                Err(seq) => Outcome::Duplicate { seq },
                Ok(i) if published[i] => Outcome::Duplicate { seq: seqs[i] },
                Ok(i) => {
                    published[i] = true;
                    Outcome::Published { seq: seqs[i] }
                }
            });
        }
    }
    Ok(outcomes)
}

/// Inserts `messages` with one statement; their seqs, in order.
/// The multi-row `INSERT` of `messages` into topic `topic`, and its values.
fn insert_statement(topic: &str, messages: &[&Message], now: Timestamp) -> (String, Vec<Value>) {
    insert_rows_statement(messages.iter().map(|m| (topic, *m)), now)
}

/// [`insert_statement`] of rows `(topic, message)`, each of its own topic.
fn insert_rows_statement<'m>(
    rows: impl ExactSizeIterator<Item = (&'m str, &'m Message)>,
    now: Timestamp,
) -> (String, Vec<Value>) {
    let mut sql = String::from(
        "INSERT INTO litebus_messages \
         (topic, id, payload, metadata, msg_key, deliver_at, published_at, priority) VALUES ",
    );
    let mut params = Vec::with_capacity(rows.len() * 8);
    for (i, (topic, m)) in rows.enumerate() {
        // Bare `?`, values in text order: see `placeholders`.
        sql.push_str(if i == 0 {
            "(?,?,?,?,?,?,?,?)"
        } else {
            ",(?,?,?,?,?,?,?,?)"
        });
        params.push(Value::from(topic));
        params.push(Value::from(m.id()));
        params.push(Value::from(m.payload()));
        params.push(Value::Text(encode_metadata(m.metadata())));
        params.push(Value::from(m.key()));
        params.push(ts(m.deliver_at().unwrap_or(Timestamp::ZERO)));
        params.push(ts(now));
        params.push(Value::from(u64::from(m.priority())));
    }
    (sql, params)
}

/// Inserts `messages` into `topic` with one multi-row `INSERT`; returns
/// their seqs in order: with `RETURNING` where it is cheap; else from the
/// connection's last inserted row id ([`Conn::last_insert_rowid`], no
/// statement), as the rows of one `INSERT` take consecutive row ids, unless
/// a trigger on the table inserted rows between them: one look at the
/// first row tells, and then the seqs are read by id.
async fn insert_rows(
    conn: &mut dyn Conn,
    topic: &str,
    messages: &[&Message],
    now: Timestamp,
) -> Result<Vec<u64>> {
    let Some(first_message) = messages.first() else {
        return Ok(Vec::new());
    };
    let (mut sql, params) = insert_statement(topic, messages, now);
    if !conn.slow_returning() {
        sql.push_str(" RETURNING seq");
        let mut seqs = conn
            .query(&sql, params)
            .await
            .map_err(|e| deleted_topic(e, topic))?
            .iter()
            .map(|row| row.uint(0))
            .collect::<Result<Vec<u64>>>()?;
        // Row ids are given in insertion order.
        seqs.sort_unstable();
        if seqs.len() != messages.len() {
            return Err(Error::Internal(
                "an insert returned the wrong number of seqs".into(),
            ));
        }
        return Ok(seqs);
    }
    conn.execute(&sql, params)
        .await
        .map_err(|e| deleted_topic(e, topic))?;
    let last = conn.last_insert_rowid().await?;
    let first = (last + 1)
        .checked_sub(messages.len() as u64)
        .ok_or_else(|| Error::Internal("an insert took fewer row ids than rows".into()))?;
    if messages.len() == 1 {
        return Ok(vec![last]);
    }
    let at_first = conn
        .query(
            "SELECT id FROM litebus_messages WHERE seq = ?1 AND topic = ?2",
            vec![Value::from(first), Value::from(topic)],
        )
        .await?;
    if at_first
        .first()
        .is_some_and(|row| row.text(0).ok() == Some(first_message.id()))
    {
        return Ok((first..=last).collect());
    }
    // Rows of a trigger came in between: by id (each is unique in the topic).
    let mut params: Vec<Value> = messages.iter().map(|m| Value::from(m.id())).collect();
    params.push(Value::from(topic));
    let rows = conn.query(&hot::known_ids(messages.len()), params).await?;
    let mut by_id = HashMap::with_capacity(rows.len());
    for row in &rows {
        by_id.insert(row.text(0)?.to_owned(), row.uint(1)?);
    }
    messages
        .iter()
        .map(|m| {
            by_id.get(m.id()).copied().ok_or_else(|| {
                Error::Internal(format!("message {} not found after its insert", m.id()))
            })
        })
        .collect()
}

/// Stores up to [`ONE_STATEMENT_APPEND`] messages of a publish with one
/// `INSERT` and no duplicate check: all `Published`, or, if the topic holds
/// one of their ids or two of them share one, an error naming the `UNIQUE`
/// constraint and nothing stored (the statement is undone whole, seqs
/// included). Then [`append`] sorts the duplicates out. One statement
/// outside a transaction is atomic by itself.
pub async fn insert_new(conn: &mut dyn Conn, append: Append<'_>) -> Result<Vec<Outcome>> {
    if append.expected_last.is_some() || append.messages.len() > ONE_STATEMENT_APPEND {
        return Err(Error::Internal(
            "insert_new takes one chunk without expected_last".into(),
        ));
    }
    let messages: Vec<&Message> = append.messages.iter().map(|m| &**m).collect();
    let seqs = insert_rows(conn, append.topic, &messages, append.now).await?;
    Ok(seqs
        .into_iter()
        .map(|seq| Outcome::Published { seq })
        .collect())
}

/// `e` as [`Error::TopicDeleted`] when it is the tombstone's trigger
/// (`litebus_deleted_topic`) refusing an insert.
fn deleted_topic(e: Error, topic: &str) -> Error {
    if matches!(e, Error::Driver(_)) && e.to_string().contains(TOPIC_DELETED) {
        return Error::TopicDeleted {
            topic: topic.to_owned(),
        };
    }
    e
}

/// The text of the tombstone trigger's error.
const TOPIC_DELETED: &str = "litebus: the topic was deleted";

/// [`Error::TopicDeleted`] for the first of `topics` that has a tombstone.
async fn refuse_deleted(conn: &mut dyn Conn, topics: [&str; 2]) -> Result<()> {
    let rows = conn
        .query(
            "SELECT topic FROM litebus_tombstones WHERE topic IN (?1, ?2) ORDER BY topic = ?1 DESC",
            vec![Value::from(topics[0]), Value::from(topics[1])],
        )
        .await?;
    match rows.first() {
        Some(row) => Err(Error::TopicDeleted {
            topic: row.text(0)?.to_owned(),
        }),
        None => Ok(()),
    }
}

/// [`Driver::delete_topic`](litebus::driver::Driver::delete_topic): the
/// tombstone, then (the first time) the check that no group of another
/// topic dead-letters into it, its groups with their handouts, its
/// retention row and remembered ids; then up to `limit` of its messages
/// (by seq, through the topic index), and when lifting with none left, the
/// tombstone.
pub async fn delete_topic(conn: &mut dyn Conn, step: DeleteTopic<'_>) -> Result<TopicDeletion> {
    let topic = || vec![Value::from(step.topic)];
    let was_deleted = !conn
        .query("SELECT 1 FROM litebus_tombstones WHERE topic = ?1", topic())
        .await?
        .is_empty();
    if step.lift && !was_deleted {
        return Ok(TopicDeletion::default());
    }
    let mut groups = Vec::new();
    if !step.lift {
        let users = conn
            .query(
                "SELECT topic, grp FROM litebus_groups WHERE dead_letter = ?1 AND topic <> ?1 LIMIT 1",
                topic(),
            )
            .await?;
        if let Some(row) = users.first() {
            return Err(Error::TopicInUse {
                topic: step.topic.to_owned(),
                by_topic: row.text(0)?.to_owned(),
                by_group: row.text(1)?.to_owned(),
            });
        }
        if !was_deleted {
            conn.execute(
                "INSERT INTO litebus_tombstones (topic) VALUES (?1)",
                topic(),
            )
            .await?;
        }
        for row in conn
            .query(
                "SELECT grp FROM litebus_groups WHERE topic = ?1 ORDER BY grp",
                topic(),
            )
            .await?
        {
            groups.push(row.text(0)?.to_owned());
        }
        if !groups.is_empty() {
            // The groups first: the per-key trigger then brings in nothing.
            conn.execute("DELETE FROM litebus_groups WHERE topic = ?1", topic())
                .await?;
            conn.execute("DELETE FROM litebus_handouts WHERE topic = ?1", topic())
                .await?;
        }
        conn.execute("DELETE FROM litebus_topics WHERE topic = ?1", topic())
            .await?;
        conn.execute("DELETE FROM litebus_dedupe WHERE topic = ?1", topic())
            .await?;
    }
    let messages = conn
        .execute(
            "DELETE FROM litebus_messages WHERE seq IN (
                SELECT seq FROM litebus_messages WHERE topic = ?1 ORDER BY seq LIMIT ?2)",
            vec![Value::from(step.topic), Value::from(step.limit)],
        )
        .await?;
    if step.lift && messages < u64::from(step.limit) {
        conn.execute("DELETE FROM litebus_tombstones WHERE topic = ?1", topic())
            .await?;
    }
    Ok(TopicDeletion {
        was_deleted,
        groups,
        messages,
    })
}

/// Publishes one message on an application's connection, inside its own
/// transaction (the outbox of the SQL drivers): checked as
/// [`Bus::publish`](litebus::Bus::publish) checks it, with the default size
/// limit, an id generated if it has none, at the system clock's time
/// (native targets: the system clock is not there on wasm32).
#[cfg(not(target_arch = "wasm32"))]
pub async fn publish_in(conn: &mut dyn Conn, topic: &str, message: Message) -> Result<Outcome> {
    let now = litebus::Clock::now(&litebus::StdClock);
    let message =
        litebus::driver::prepare_message(topic, message, litebus::DEFAULT_MAX_MESSAGE_SIZE, now)?;
    let batch = [Arc::new(message)];
    let outcomes = append(
        conn,
        Append {
            topic,
            messages: &batch,
            expected_last: None,
            now,
            handoffs: &[],
        },
    )
    .await?;
    Ok(outcomes[0])
}

/// Whether `e` is the store refusing an id the topic holds (the unique
/// index on `(topic, id)`).
#[must_use]
pub fn is_known_id(e: &Error) -> bool {
    matches!(e, Error::Driver(_)) && e.to_string().contains("UNIQUE constraint failed")
}

async fn last_seq(conn: &mut dyn Conn, topic: &str) -> Result<u64> {
    let rows = conn.query(hot::LAST_SEQ, vec![Value::from(topic)]).await?;
    rows.first().map_or(Ok(0), |r| r.uint(0))
}

/// [`Driver::append`](litebus::driver::Driver::append).
pub async fn append(conn: &mut dyn Conn, append: Append<'_>) -> Result<Vec<Outcome>> {
    if let Some(expected) = append.expected_last {
        let actual = last_seq(conn, append.topic).await?;
        if actual != expected {
            return Err(Error::Conflict { expected, actual });
        }
    }
    let messages: Vec<&Message> = append.messages.iter().map(|m| &**m).collect();
    insert_messages(conn, append.topic, &messages, append.now).await
}

/// A group's `ordering` and `max_in_flight` columns (0: no cap, for an
/// ordered group and a per-key group without one).
fn order_columns(spec: &GroupSpec) -> (&'static str, u32) {
    match spec.order {
        Order::Ordered => ("ordered", 0),
        Order::PerKey => ("per_key", spec.max_in_flight.unwrap_or(0)),
        Order::Shared { max_in_flight } => ("shared", max_in_flight),
    }
}

/// A group row.
struct Group {
    spec: GroupSpec,
    /// Shared and per-key groups: every message up to it has been taken
    /// into the group (has a handout row, or had one). Ordered groups: every
    /// message up to it is settled.
    cursor: u64,
    /// Ordered groups: their one delivery.
    head: Head,
    /// Given at creation and by each seek from the store's count
    /// (`litebus_meta` `generations`; `Claimed::generation`). Read by the
    /// claim and `load_group` only: `group_from` leaves it 0.
    generation: u64,
}

/// An ordered group's delivery, kept in its group row: a lease of the
/// group, whose first unsettled message (the head) is the one delivered.
#[derive(Debug, Clone, Default)]
struct Head {
    /// The head, once delivered (`None`: not delivered since the cursor moved).
    seq: Option<u64>,
    /// Its deliveries so far.
    attempt: u32,
    /// Who holds the lease, if anyone.
    holder: Option<String>,
    lease_until: u64,
    /// Not deliverable again before (a nack's delay).
    ready_at: u64,
}

impl Head {
    /// From the columns `head_seq, head_attempt, holder, lease_until,
    /// ready_at` at `at`.
    fn read(row: &Row, at: usize) -> Result<Self> {
        Ok(Head {
            seq: row.opt_uint(at)?,
            attempt: u32::try_from(row.uint(at + 1)?).unwrap_or(u32::MAX),
            holder: row.opt_text(at + 2)?.map(str::to_owned),
            lease_until: row.opt_uint(at + 3)?.unwrap_or(0),
            ready_at: row.opt_uint(at + 4)?.unwrap_or(0),
        })
    }

    /// The attempts so far of the message at `seq`, if it is the head.
    fn attempts_of(&self, seq: u64) -> u32 {
        if self.seq == Some(seq) {
            self.attempt
        } else {
            0
        }
    }
}

/// The group columns [`group_from`] reads.
const GROUP_COLUMNS: &str = "ordering, max_in_flight, max_attempts, dead_letter, cursor, head_seq, head_attempt, holder, lease_until, ready_at";

async fn load_group(conn: &mut dyn Conn, topic: &str, group: &str) -> Result<Option<Group>> {
    let rows = conn
        .query(
            &format!(
                "SELECT {GROUP_COLUMNS}, generation, {SETTINGS_COLUMNS}
                 FROM litebus_groups WHERE topic = ?1 AND grp = ?2"
            ),
            vec![Value::from(topic), Value::from(group)],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let mut g = group_from(row, 0)?;
    g.generation = row.uint(10)?;
    settings_from(row, 11, &mut g.spec)?;
    Ok(Some(g))
}

/// A group from the [`GROUP_COLUMNS`] of `row` from column `at` on.
fn group_from(row: &Row, at: usize) -> Result<Group> {
    let max_in_flight = u32::try_from(row.uint(at + 1)?)
        .map_err(|_| Error::Corrupt("max_in_flight out of range".into()))?;
    let (order, cap) = match row.text(at)? {
        "ordered" => (Order::Ordered, None),
        "per_key" => (Order::PerKey, Some(max_in_flight).filter(|&n| n > 0)),
        "shared" => (Order::Shared { max_in_flight }, None),
        other => return Err(Error::Corrupt(format!("unknown ordering {other:?}"))),
    };
    Ok(Group {
        spec: GroupSpec {
            order,
            max_attempts: u32::try_from(row.uint(at + 2)?)
                .map_err(|_| Error::Corrupt("max_attempts out of range".into()))?,
            backoff: Backoff::none(),
            rate_limit: None,
            max_in_flight: cap,
            dead_letter: row.text(at + 3)?.to_owned(),
        },
        cursor: row.uint(at + 4)?,
        head: Head::read(row, at + 5)?,
        generation: 0,
    })
}

/// The group columns [`settings_from`] reads.
const SETTINGS_COLUMNS: &str =
    "backoff_base, backoff_max, backoff_jitter, backoff_seed, rate_max, rate_period";

/// A group's backoff and rate limit from the [`SETTINGS_COLUMNS`] of `row`
/// from column `at` on, into `spec`.
fn settings_from(row: &Row, at: usize, spec: &mut GroupSpec) -> Result<()> {
    let jitter = u32::try_from(row.uint(at + 2)?)
        .map_err(|_| Error::Corrupt("backoff_jitter out of range".into()))?;
    spec.backoff = Backoff::from_parts(
        row.uint(at)?,
        row.uint(at + 1)?,
        jitter,
        row.int(at + 3)?.cast_unsigned(),
    );
    spec.rate_limit = match row.opt_uint(at + 4)? {
        None => None,
        Some(max) => Some(RateLimit::new(
            u32::try_from(max).map_err(|_| Error::Corrupt("rate_max out of range".into()))?,
            std::time::Duration::from_millis(row.uint(at + 5)?),
        )),
    };
    Ok(())
}

/// When a lease of attempt `attempt` of `seq` that ends at `lease_until`
/// leaves its message deliverable again, should it run out.
fn after_lease(backoff: Backoff, lease_until: Timestamp, seq: u64, attempt: u32) -> Value {
    ts(lease_until + backoff.delay(seq, attempt))
}

fn unknown_group(topic: &str, group: &str) -> Error {
    Error::UnknownGroup {
        topic: topic.to_owned(),
        group: group.to_owned(),
    }
}

/// Counts one more generation in the store: the next group created or
/// sought takes it (`SELECT value FROM litebus_meta WHERE name =
/// 'generations'`), so no two generations of a group are ever the same,
/// even across a delete.
const NEXT_GENERATION: &str =
    "UPDATE litebus_meta SET value = value + 1 WHERE name = 'generations'";

/// [`Driver::ensure_group`](litebus::driver::Driver::ensure_group).
pub async fn ensure_group(conn: &mut dyn Conn, req: EnsureGroup<'_>) -> Result<()> {
    if let Some(existing) = load_group(conn, req.topic, req.group).await? {
        if existing.spec != *req.spec {
            return Err(Error::InvalidOptions(format!(
                "group {:?} of topic {:?} exists with {:?}, not {:?}",
                req.group, req.topic, existing.spec, req.spec
            )));
        }
        return Ok(());
    }
    refuse_deleted(conn, [req.topic, &req.spec.dead_letter]).await?;
    let start_after = match req.start_after {
        Some(seq) => seq,
        None => last_seq(conn, req.topic).await?,
    };
    let (ordering, max_in_flight) = order_columns(req.spec);
    conn.execute(NEXT_GENERATION, Vec::new()).await?;
    let backoff = req.spec.backoff;
    conn.execute(
        "INSERT INTO litebus_groups
            (topic, grp, ordering, max_in_flight, max_attempts, dead_letter, start_after, cursor,
             generation, backoff_base, backoff_max, backoff_jitter, backoff_seed,
             rate_max, rate_period)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7,
             (SELECT value FROM litebus_meta WHERE name = 'generations'), ?8, ?9, ?10, ?11,
             ?12, ?13)",
        vec![
            Value::from(req.topic),
            Value::from(req.group),
            Value::from(ordering),
            Value::from(max_in_flight),
            Value::from(req.spec.max_attempts),
            Value::from(req.spec.dead_letter.as_str()),
            Value::from(start_after),
            Value::from(backoff.base_millis()),
            Value::from(backoff.max_millis()),
            Value::from(backoff.jitter_permille()),
            Value::Int(backoff.get_seed().cast_signed()),
            req.spec
                .rate_limit
                .map_or(Value::Null, |r| Value::from(r.max())),
            req.spec
                .rate_limit
                .map_or(Value::Null, |r| Value::from(r.period_millis())),
        ],
    )
    .await?;
    if matches!(req.spec.order, Order::Shared { .. }) {
        let params = vec![
            Value::from(req.topic),
            Value::from(req.group),
            Value::from(start_after),
        ];
        conn.execute(TAKE_IN_PRIORITIZED, params).await?;
    }
    Ok(())
}

/// Takes up to `want` more messages into the group; how many the group's
/// cursor moved past. (A per-key group takes in only the heads of keys
/// that have none, and the messages without a key.)
async fn take_in(
    conn: &mut dyn Conn,
    topic: &str,
    group: &str,
    g: &mut Group,
    want: u64,
) -> Result<u64> {
    if g.spec.order == Order::PerKey {
        return take_in_per_key(conn, topic, group, g, want).await;
    }
    let params = vec![
        Value::from(topic),
        Value::from(group),
        Value::from(g.cursor),
        Value::from(want),
    ];
    let (taken, last) = if conn.slow_returning() {
        let taken = conn.execute(TAKE_IN_SQL, params).await?;
        if taken == 0 {
            return Ok(0);
        }
        // (Not a redriven message's handout: its seq is not the topic's;
        // nor a prioritized one's, which may be later.)
        let rows = conn
            .query(
                "SELECT MAX(seq) FROM litebus_handouts
                 WHERE topic = ?1 AND grp = ?2 AND redriven = 0 AND NOT priority > 0",
                vec![Value::from(topic), Value::from(group)],
            )
            .await?;
        (taken, rows.first().map_or(Ok(None), |r| r.opt_uint(0))?)
    } else {
        // The seqs taken in come back with the insert: one statement less.
        let rows = conn.query(TAKE_IN_RETURNING, params).await?;
        let mut last = None;
        for row in &rows {
            last = last.max(Some(row.uint(0)?));
        }
        (rows.len() as u64, last)
    };
    let Some(last) = last else {
        return Ok(0);
    };
    g.cursor = g.cursor.max(last);
    conn.execute(
        "UPDATE litebus_groups SET cursor = ?3 WHERE topic = ?1 AND grp = ?2",
        vec![
            Value::from(topic),
            Value::from(group),
            Value::from(g.cursor),
        ],
    )
    .await?;
    Ok(taken)
}

async fn take_in_per_key(
    conn: &mut dyn Conn,
    topic: &str,
    group: &str,
    g: &mut Group,
    want: u64,
) -> Result<u64> {
    let rows = conn
        .query(
            TAKE_IN_WINDOW,
            vec![Value::from(topic), Value::from(g.cursor), Value::from(want)],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(0);
    };
    let (Some(last), looked) = (row.opt_uint(0)?, row.uint(1)?) else {
        return Ok(0);
    };
    conn.execute(
        TAKE_IN_PER_KEY,
        vec![
            Value::from(topic),
            Value::from(group),
            Value::from(g.cursor),
            Value::from(last),
        ],
    )
    .await?;
    g.cursor = last;
    conn.execute(
        "UPDATE litebus_groups SET cursor = ?3 WHERE topic = ?1 AND grp = ?2",
        vec![Value::from(topic), Value::from(group), Value::from(last)],
    )
    .await?;
    Ok(looked)
}

/// How many messages of per-key group `$grp` of topic `?1` wait behind
/// their key's first handout up to seq `$upto`, in no handout of their
/// own. (A key's handouts are its head and, before or after it, the
/// messages a redrive sent back; the messages before the first are
/// settled.)
macro_rules! waiting_of_keys {
    ($what:expr, $grp:expr, $upto:expr) => {
        concat!(
            "SELECT ",
            $what,
            " FROM litebus_handouts h JOIN litebus_messages m
                ON m.topic = h.topic AND m.msg_key = h.msg_key AND m.msg_key IS NOT NULL
                AND m.seq > h.seq AND m.seq <= ",
            $upto,
            "
             WHERE h.topic = ?1 AND h.grp = ",
            $grp,
            " AND h.msg_key IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM litebus_handouts e
                   WHERE e.topic = h.topic AND e.grp = h.grp AND e.msg_key IS NOT NULL
                     AND e.msg_key = h.msg_key AND e.seq < h.seq)
               AND NOT EXISTS (SELECT 1 FROM litebus_handouts o
                   WHERE o.topic = h.topic AND o.grp = h.grp AND o.seq = m.seq)"
        )
    };
}

/// The last error of a dead letter made of a row that is not a message.
const UNDECODABLE: &str = "undecodable message";

/// The columns of a message row, read so that any value plain SQL can
/// store comes back (as bytes, with its type), for [`decode_message`].
const MESSAGE_COLUMNS: &str = message_columns!();

/// A message row read with [`MESSAGE_COLUMNS`] from column `at` on: the
/// message, or why it is not one (a row written by plain SQL with a wrong
/// type, text that is not UTF-8, metadata that is not a JSON object of
/// strings) together with what can be kept of it for its dead letter.
fn decode_message(row: &Row, at: usize) -> Result<std::result::Result<Message, (String, Message)>> {
    // Column `i` holds the type, `i + 1` the value as bytes.
    let column = |i: usize| -> Result<(&str, &[u8])> {
        let kind = row.text(at + i)?;
        let bytes = match row.0.get(at + i + 1) {
            Some(Value::Null) => &[][..],
            _ => row.blob(at + i + 1)?,
        };
        Ok((kind, bytes))
    };
    let (id_kind, id) = column(1)?;
    let (payload_kind, payload) = column(3)?;
    let (metadata_kind, metadata) = column(5)?;
    let (key_kind, key) = column(7)?;
    let deliver_kind = row.text(at + 9)?;
    let mut problems: Vec<String> = Vec::new();
    let text = |kind: &str, bytes: &[u8], what: &str, problems: &mut Vec<String>| {
        if kind != "text" {
            problems.push(format!("{what} is {kind}, not text"));
            return None;
        }
        let text = std::str::from_utf8(bytes).ok().map(str::to_owned);
        if text.is_none() {
            problems.push(format!("{what} is not UTF-8"));
        }
        text
    };
    let valid_id = text(id_kind, id, "id", &mut problems);
    if !matches!(payload_kind, "blob" | "text") {
        problems.push(format!("payload is {payload_kind}, not a blob"));
    }
    let metadata = if matches!(metadata_kind, "text" | "blob") {
        decode_metadata(metadata).unwrap_or_else(|e| {
            problems.push(e.to_string());
            BTreeMap::new()
        })
    } else {
        problems.push(format!("metadata is {metadata_kind}, not text"));
        BTreeMap::new()
    };
    let key = match key_kind {
        "null" => None,
        kind => text(kind, key, "key", &mut problems),
    };
    let deliver_at = match (deliver_kind, row.0.get(at + 10)) {
        ("integer", Some(&Value::Int(at))) if at >= 0 => {
            (at > 0).then(|| Timestamp::from_millis(at.unsigned_abs()))
        }
        (kind, _) => {
            problems.push(format!("deliver_at is {kind}, not milliseconds"));
            None
        }
    };
    let priority = match (row.text(at + 11)?, row.0.get(at + 12)) {
        ("integer", Some(&Value::Int(p))) => u8::try_from(p).unwrap_or_else(|_| {
            problems.push(format!("priority is {p}, not 0 to 255"));
            0
        }),
        (kind, _) => {
            problems.push(format!("priority is {kind}, not an integer"));
            0
        }
    };
    let id = valid_id.unwrap_or_else(|| String::from_utf8_lossy(id).into_owned());
    let message =
        stored_message(id, payload.to_vec(), metadata, key, deliver_at).with_priority(priority);
    Ok(if problems.is_empty() {
        Ok(message)
    } else {
        Err((problems.join("; "), message))
    })
}

/// Moves one message of a group to its dead-letter topic (I8), under its
/// dead-letter id, or a generated one if that topic already holds it: a
/// dead letter always lands.
async fn dead_letter(
    conn: &mut dyn Conn,
    key: (&str, &str),
    g: &Group,
    seq: u64,
    error: &str,
    now: Timestamp,
) -> Result<DeadLettered> {
    let (topic, group) = key;
    let sql = format!(
        "SELECT h.attempt, {MESSAGE_COLUMNS}
         FROM litebus_handouts h JOIN litebus_messages m ON m.seq = h.seq
         WHERE h.topic = ?1 AND h.grp = ?2 AND h.seq = ?3"
    );
    let rows = conn
        .query(
            &sql,
            vec![Value::from(topic), Value::from(group), Value::from(seq)],
        )
        .await?;
    let row = rows.first().ok_or_else(|| {
        Error::Internal(format!(
            "handout {seq} of {topic}/{group} vanished inside its transaction"
        ))
    })?;
    let attempt = u32::try_from(row.uint(0)?).unwrap_or(u32::MAX);
    let letter = send_dead_letter(conn, key, g, seq, attempt, (row, 1), error, now).await?;
    conn.execute(
        "DELETE FROM litebus_handouts WHERE topic = ?1 AND grp = ?2 AND seq = ?3",
        vec![Value::from(topic), Value::from(group), Value::from(seq)],
    )
    .await?;
    conn.execute(
        "UPDATE litebus_groups SET dead_lettered = dead_lettered + 1 WHERE topic = ?1 AND grp = ?2",
        vec![Value::from(topic), Value::from(group)],
    )
    .await?;
    Ok(letter)
}

/// [`dead_letter`] for an ordered group's head, at attempt `attempt`: the
/// group's cursor moves past it and its lease ends.
async fn dead_letter_head(
    conn: &mut dyn Conn,
    key: (&str, &str),
    g: &mut Group,
    seq: u64,
    error: &str,
    now: Timestamp,
) -> Result<DeadLettered> {
    let (topic, group) = key;
    let rows = conn
        .query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM litebus_messages m WHERE m.seq = ?1"),
            vec![Value::from(seq)],
        )
        .await?;
    let row = rows.first().ok_or_else(|| {
        Error::Internal(format!(
            "message {seq} of {topic} vanished inside its transaction"
        ))
    })?;
    let attempt = g.head.attempts_of(seq);
    let letter = send_dead_letter(conn, key, g, seq, attempt, (row, 0), error, now).await?;
    if seq <= g.cursor {
        // A redriven message behind the group's position (its only kind
        // of handout): the cursor stays, so `litebus_ordered_settled` sees
        // no move; its handout goes here (else the claim meets it again).
        conn.execute(
            "DELETE FROM litebus_handouts WHERE topic = ?1 AND grp = ?2 AND seq = ?3",
            vec![Value::from(topic), Value::from(group), Value::from(seq)],
        )
        .await?;
    }
    conn.execute(
        "UPDATE litebus_groups SET cursor = MAX(cursor, ?3), head_seq = NULL, head_attempt = 0,
            holder = NULL,
            lease_until = NULL, ready_at = 0, dead_lettered = dead_lettered + 1
         WHERE topic = ?1 AND grp = ?2",
        vec![Value::from(topic), Value::from(group), Value::from(seq)],
    )
    .await?;
    g.cursor = g.cursor.max(seq);
    g.head = Head::default();
    Ok(letter)
}

/// Stores the dead letter of the message in `row` (its
/// [`MESSAGE_COLUMNS`] from `at` on) in the group's dead-letter topic.
#[allow(clippy::too_many_arguments)]
async fn send_dead_letter(
    conn: &mut dyn Conn,
    (topic, group): (&str, &str),
    g: &Group,
    seq: u64,
    attempt: u32,
    (row, at): (&Row, usize),
    error: &str,
    now: Timestamp,
) -> Result<DeadLettered> {
    // A row that does not decode still leaves, with the reason.
    let (original, error) = match decode_message(row, at)? {
        Ok(message) => (message, error.to_owned()),
        Err((why, kept)) if error == UNDECODABLE => (kept, format!("{UNDECODABLE}: {why}")),
        Err((why, kept)) => (kept, format!("{error}; {UNDECODABLE}: {why}")),
    };
    let mut letter = dead_letter_message(topic, group, seq, attempt, &error, &original);
    let seq_there = loop {
        match insert_messages(conn, &g.spec.dead_letter, &[&letter], now).await?[0] {
            Outcome::Published { seq } => break seq,
            Outcome::Duplicate { .. } => letter = letter.with_id(generate_id(now)),
        }
    };
    Ok(DeadLettered {
        topic: g.spec.dead_letter.clone(),
        seq: seq_there,
        message: Arc::new(letter),
    })
}

fn seqs(rows: &[Row]) -> Result<Vec<u64>> {
    rows.iter().map(|r| r.uint(0)).collect()
}

/// When something of the group may become deliverable with no other call.
async fn next_due(
    conn: &mut dyn Conn,
    topic: &str,
    group: &str,
    order: Order,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    // A lease that has not run out: its end, or should it run out, the
    // backoff after it.
    let due = "CASE WHEN h.consumer IS NOT NULL AND h.lease_until > ?3
        THEN MAX(h.lease_until, h.ready_at) ELSE h.ready_at END";
    let sql = match order {
        Order::PerKey => format!(
            "SELECT MIN({due}) FROM litebus_handouts h WHERE h.topic = ?1 AND h.grp = ?2 {}",
            hot::first_of_key!()
        ),
        Order::Shared { .. } | Order::Ordered => {
            format!("SELECT MIN({due}) FROM litebus_handouts h WHERE h.topic = ?1 AND h.grp = ?2")
        }
    };
    let rows = conn
        .query(&sql, vec![Value::from(topic), Value::from(group), ts(now)])
        .await?;
    Ok(match rows.first() {
        Some(row) => row
            .opt_uint(0)?
            .map(Timestamp::from_millis)
            .filter(|&t| t > now),
        None => None,
    })
}

/// Where a candidate row (kind 1 of a claim's read) has its message's
/// columns; its attempts so far are at column 1.
const CANDIDATE_AT: usize = 2;

/// What a claim knows of its group after its first read.
struct ClaimGroup {
    g: Group,
    /// The topic may hold messages after the group's cursor.
    more: bool,
    /// Unexpired leases (counted for a shared group and a capped per-key
    /// one only).
    active: u64,
    /// Final attempts whose lease ran out, by lease end.
    expired: Vec<u64>,
    /// The candidates read with the group, in seq order, when the claim
    /// knew the group's order: still to be used.
    next: Option<Vec<Row>>,
    /// Its rate limit's window as stored: when it opened, the deliveries
    /// in it.
    window: (Timestamp, u32),
    /// A shared group with handouts of a priority above 0: a claim reads
    /// them too ([`NEXT_PRIORITIZED`]).
    prioritized: bool,
}

fn same_order(a: Order, b: Order) -> bool {
    std::mem::discriminant(&a) == std::mem::discriminant(&b)
}

/// The claim's first read: the group, and its candidates too when the
/// order `known` is the group's.
async fn claim_group(
    conn: &mut dyn Conn,
    c: Claim<'_>,
    known: Option<Order>,
) -> Result<Option<ClaimGroup>> {
    let mut params = vec![Value::from(c.topic), Value::from(c.group), ts(c.now)];
    let sql = match known {
        None => CLAIM_GROUP,
        Some(order) => {
            params.push(Value::from(u64::from(c.max.max(1))));
            match order {
                Order::Ordered => CLAIM_ORDERED,
                Order::PerKey => CLAIM_PER_KEY,
                Order::Shared { .. } => CLAIM_SHARED,
            }
        }
    };
    let mut group = None;
    let mut expired = Vec::new();
    let mut next = Vec::new();
    for row in conn.query(sql, params).await? {
        if row.int(0)? != 0 {
            next.push(row);
            continue;
        }
        if let Some(seq) = row.opt_uint(13)? {
            expired.push((row.uint(14)?, seq));
        }
        if group.is_none() {
            group = Some(row);
        }
    }
    let Some(row) = group else {
        return Ok(None);
    };
    let mut g = group_from(&row, 1)?;
    g.generation = row.uint(15)?;
    expired.sort_unstable();
    sort_candidates(&mut next, g.spec.order)?;
    let known_right = known.is_some_and(|o| same_order(o, g.spec.order));
    let window = (
        Timestamp::from_millis(row.uint(16)?),
        u32::try_from(row.uint(17)?).unwrap_or(u32::MAX),
    );
    Ok(Some(ClaimGroup {
        window,
        prioritized: row.int(18)? != 0,
        more: row.int(11)? != 0,
        active: row.uint(12)?,
        expired: expired.into_iter().map(|(_, seq)| seq).collect(),
        next: known_right.then_some(next),
        g,
    }))
}

/// Candidate rows in the order the group hands them out (a compound
/// `SELECT` does not promise the order of its parts): a shared group's by
/// priority, highest first, then seq; the others' by seq.
fn sort_candidates(rows: &mut [Row], order: Order) -> Result<()> {
    sort_rows(rows, CANDIDATE_AT)?;
    if matches!(order, Order::Shared { .. }) {
        // Stable: seq order within a priority.
        rows.sort_by_key(|row| std::cmp::Reverse(candidate_priority(row)));
    }
    Ok(())
}

/// A candidate's priority as its row has it (0 when it is not one: such a
/// row is dead-lettered as it is met).
fn candidate_priority(row: &Row) -> i64 {
    match row.0.get(CANDIDATE_AT + 12) {
        Some(&Value::Int(p)) => p,
        _ => 0,
    }
}

/// Rows in the order of their seq at column `at`.
fn sort_rows(rows: &mut [Row], at: usize) -> Result<()> {
    for row in rows.iter() {
        row.uint(at)?;
    }
    rows.sort_by_key(|row| row.uint(at).unwrap_or(0));
    Ok(())
}

/// [`Driver::claim`](litebus::driver::Driver::claim), and the group's
/// order. `known` is the group's order if the caller knows it (an order
/// never changes; a wrong one costs a statement).
///
/// Statements: one read of the group and its candidates with their
/// messages ([`CLAIM_SHARED`], [`CLAIM_PER_KEY`], [`CLAIM_ORDERED`]), one
/// that leases what the claim chose (one per 100 of it). A take-in (two
/// or three more) only when there are too few candidates and the topic
/// holds messages after the group's cursor; dead letters when due. A claim that finds nothing
/// deliverable writes nothing.
pub async fn claim(
    conn: &mut dyn Conn,
    c: Claim<'_>,
    known: Option<Order>,
) -> Result<(ClaimOutcome, Order)> {
    let (topic, group, now) = (c.topic, c.group, c.now);
    let mut cg = claim_group(conn, c, known)
        .await?
        .ok_or_else(|| unknown_group(topic, group))?;
    let order = cg.g.spec.order;
    let mut window = match c.rate_limit {
        Some(rate) => Some(Window::new(c, rate, cg.window)),
        None => None,
    };
    if order == Order::Ordered {
        return Ok((claim_ordered(conn, c, cg, window).await?, order));
    }

    // I8: final attempts whose lease ran out leave first, by lease end.
    let mut dead_lettered = Vec::new();
    if !cg.expired.is_empty() {
        for seq in std::mem::take(&mut cg.expired) {
            dead_lettered
                .push(dead_letter(conn, (topic, group), &cg.g, seq, LEASE_EXPIRED, now).await?);
        }
        // They were among the candidates read with the group.
        cg.next = None;
    }

    // Rows that do not decode are dead-lettered as they are met; what they
    // held back may then be deliverable, so the claim looks again.
    loop {
        let limit = claim_limit(c, &cg).min(window.as_ref().map_or(u64::MAX, Window::left));
        let chosen = if limit == 0 {
            Vec::new()
        } else {
            choose(conn, c, &mut cg, limit).await?
        };
        if chosen.is_empty() {
            let next_due = if let Some(closes) = window.as_ref().and_then(Window::full) {
                Some(closes)
            } else if limit == 0 {
                let rows = conn
                    .query(
                        "SELECT MIN(lease_until) FROM litebus_handouts
                         WHERE topic = ?1 AND grp = ?2 AND consumer IS NOT NULL AND lease_until > ?3",
                        vec![Value::from(topic), Value::from(group), ts(now)],
                    )
                    .await?;
                rows.first()
                    .map_or(Ok(None), |r| r.opt_uint(0))?
                    .map(Timestamp::from_millis)
            } else {
                next_due(conn, topic, group, order, now).await?
            };
            return Ok((
                ClaimOutcome {
                    deliveries: Vec::new(),
                    ahead: Vec::new(),
                    next_due,
                    dead_lettered,
                },
                order,
            ));
        }
        lease(conn, c, &chosen).await?;
        if let Some(window) = &mut window {
            window.count(conn, c, chosen.len()).await?;
        }
        let mut deliveries = Vec::with_capacity(chosen.len());
        let mut undecodable = Vec::new();
        for row in &chosen {
            let seq = row.uint(CANDIDATE_AT)?;
            let attempt = u32::try_from(row.uint(1)? + 1).unwrap_or(u32::MAX);
            match decode_message(row, CANDIDATE_AT)? {
                Ok(message) => deliveries.push(Claimed {
                    seq,
                    attempt,
                    lease_until: c.lease_until,
                    message: Arc::new(message),
                    generation: cg.g.generation,
                }),
                Err(_) => undecodable.push(seq),
            }
        }
        for seq in &undecodable {
            // `dead_letter` reads the row again and keeps what it can.
            let letter = dead_letter(conn, (topic, group), &cg.g, *seq, UNDECODABLE, now).await?;
            dead_lettered.push(letter);
        }
        if !deliveries.is_empty() || undecodable.is_empty() {
            return Ok((
                ClaimOutcome {
                    deliveries,
                    ahead: Vec::new(),
                    next_due: None,
                    dead_lettered,
                },
                order,
            ));
        }
        // What was dead-lettered held back what comes next, not yet known.
    }
}

/// How a claim apart begins on PostgreSQL: it shares the store's write
/// lock with other claims apart (a transaction that holds it alone, every
/// engine transaction and message `INSERT`, waits for them and they for
/// it, so what the steps read under it is as on SQLite), and holds its
/// group's lock alone: claims of one group take turns, as its
/// `max_in_flight` is one count across hosts. The group's lock key is the
/// schema's `hashtext` in the high 32 bits and the FNV-1a hash of the
/// topic and group in the low ones, the same on every host (the one-key
/// form of advisory locks, which never meets the store lock's two-key
/// one). It sends no `NOTIFY` (`litebus.quiet`): a lease wakes nobody.
fn apart_begin(topic: &str, group: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in topic.bytes().chain([0]).chain(group.bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    format!(
        "BEGIN; SET LOCAL litebus.quiet = 'on';
         SELECT pg_advisory_xact_lock_shared(1818386274, hashtext(current_schema())),
         pg_advisory_xact_lock((CAST(hashtext(current_schema()) AS BIGINT) << 32) | {hash})"
    )
}

/// A claim of a shared group apart from the engine's transactions, on
/// PostgreSQL: consumers of a store claim at once, on any host, and never
/// hold the same lease (I4). One transaction: `apart_begin`'s locks, the
/// candidates locked with `FOR UPDATE SKIP LOCKED` ([`CLAIM_APART`]), their
/// leases. `None`, having written nothing, when the claim is the
/// engine's to run: another dialect, a rate-limited group, or one with
/// nothing to lease this way (a take-in, a dead letter, a prioritized or
/// undecodable message is due first, or it is not a shared group).
pub async fn claim_apart(conn: &mut dyn Conn, c: Claim<'_>) -> Result<Option<ClaimOutcome>> {
    if conn.dialect() != crate::Dialect::Postgres || c.rate_limit.is_some() {
        return Ok(None);
    }
    if let Err(e) = conn
        .execute(&apart_begin(c.topic, c.group), Vec::new())
        .await
    {
        let _ = conn.execute("ROLLBACK", Vec::new()).await;
        return Err(e);
    }
    let result = claim_apart_in(conn, c).await;
    let end = if matches!(result, Ok(Some(_))) {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    match conn.execute(end, Vec::new()).await {
        Ok(_) => result,
        Err(e) => {
            if end == "COMMIT" {
                let _ = conn.execute("ROLLBACK", Vec::new()).await;
            }
            Err(result.err().unwrap_or(e))
        }
    }
}

async fn claim_apart_in(conn: &mut dyn Conn, c: Claim<'_>) -> Result<Option<ClaimOutcome>> {
    let params = vec![
        Value::from(c.topic),
        Value::from(c.group),
        ts(c.now),
        Value::from(u64::from(c.max.max(1))),
    ];
    let rows = conn.query(CLAIM_APART, params).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let at = CANDIDATE_AT + 13;
    let (generation, want, more, cursor) = (
        first.uint(at)?,
        first.uint(at + 1)?,
        first.int(at + 2)? != 0,
        first.uint(at + 3)?,
    );
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in &rows {
        let seq = row.uint(CANDIDATE_AT)?;
        // As `choose`: with too few, or a redriven message among them
        // while the topic holds messages not taken in, the group takes in
        // first.
        if more && (seq > cursor || (rows.len() as u64) < want) {
            return Ok(None);
        }
        let Ok(message) = decode_message(row, CANDIDATE_AT)? else {
            // Dead-lettered by the engine's claim.
            return Ok(None);
        };
        deliveries.push(Claimed {
            seq,
            attempt: u32::try_from(row.uint(1)? + 1).unwrap_or(u32::MAX),
            lease_until: c.lease_until,
            message: Arc::new(message),
            generation,
        });
    }
    lease(conn, c, &rows).await?;
    Ok(Some(ClaimOutcome {
        deliveries,
        ahead: Vec::new(),
        next_due: None,
        dead_lettered: Vec::new(),
    }))
}

/// An ordered group's claim: its head, if nobody else holds the group and
/// it is due, leased to the claiming consumer with the group; the messages
/// after it read ahead. The holder of an unexpired lease that claims again
/// (its ack or its claim was cut) gets its delivery again, unchanged.
async fn claim_ordered(
    conn: &mut dyn Conn,
    c: Claim<'_>,
    cg: ClaimGroup,
    mut window: Option<Window>,
) -> Result<ClaimOutcome> {
    let (topic, group, now) = (c.topic, c.group, c.now);
    let mut g = cg.g;
    let mut next = cg.next;
    let mut dead_lettered = Vec::new();
    let nothing = |next_due: Option<u64>, dead_lettered| ClaimOutcome {
        deliveries: Vec::new(),
        ahead: Vec::new(),
        next_due: next_due.map(Timestamp::from_millis),
        dead_lettered,
    };
    let mut again = None;
    if let (Some(holder), Some(seq)) = (&g.head.holder, g.head.seq) {
        if g.head.lease_until > now.as_millis() {
            if holder != c.consumer {
                // Should it run out, the backoff after it.
                let due = g.head.lease_until.max(g.head.ready_at);
                return Ok(nothing(Some(due), dead_lettered));
            }
            again = Some(seq);
        } else if g.head.attempt >= g.spec.max_attempts {
            // I8: the final attempt's lease ran out.
            let letter =
                dead_letter_head(conn, (topic, group), &mut g, seq, LEASE_EXPIRED, now).await?;
            dead_lettered.push(letter);
            // The messages read with the group began with it.
            next = None;
        }
    }
    if again.is_none() && g.head.ready_at > now.as_millis() {
        return Ok(nothing(Some(g.head.ready_at), dead_lettered));
    }
    // Rows that do not decode are dead-lettered as they are met, and the
    // claim goes on with the next (I12).
    let max = usize::try_from(c.max.max(1)).unwrap_or(usize::MAX);
    loop {
        let (mut rows, at) = if let Some(rows) = next.take() {
            (rows, CANDIDATE_AT)
        } else {
            let params = vec![
                Value::from(topic),
                Value::from(g.cursor),
                Value::from(u64::from(c.max.max(1))),
                Value::from(group),
            ];
            let mut rows = conn.query(ORDERED_AHEAD, params).await?;
            sort_rows(&mut rows, 0)?;
            (rows, 0)
        };
        // The topic's next messages and the redriven ones, in seq order.
        rows.truncate(max);
        let Some(first) = rows.first() else {
            return Ok(nothing(None, dead_lettered));
        };
        let seq = first.uint(at)?;
        let Ok(message) = decode_message(first, at)? else {
            let letter =
                dead_letter_head(conn, (topic, group), &mut g, seq, UNDECODABLE, now).await?;
            dead_lettered.push(letter);
            again = None;
            continue;
        };
        let ahead = rows[1..]
            .iter()
            .map_while(|row| {
                let seq = row.uint(at).ok()?;
                let message = decode_message(row, at).ok()?.ok()?;
                Some(Ahead {
                    seq,
                    message: Arc::new(message),
                })
            })
            .collect();
        let delivery = if again == Some(seq) {
            Claimed {
                seq,
                attempt: g.head.attempt,
                lease_until: Timestamp::from_millis(g.head.lease_until),
                message: Arc::new(message),
                generation: g.generation,
            }
        } else {
            if let Some(at) = message.deliver_at().filter(|&at| at > now) {
                return Ok(nothing(Some(at.as_millis()), dead_lettered));
            }
            if let Some(window) = &mut window {
                if let Some(closes) = window.full() {
                    return Ok(nothing(Some(closes.as_millis()), dead_lettered));
                }
                window.count(conn, c, 1).await?;
            }
            let attempt = g.head.attempts_of(seq) + 1;
            conn.execute(
                ORDERED_LEASE,
                vec![
                    Value::from(topic),
                    Value::from(group),
                    Value::from(seq),
                    Value::from(attempt),
                    Value::from(c.consumer),
                    ts(c.lease_until),
                    after_lease(c.backoff, c.lease_until, seq, attempt),
                ],
            )
            .await?;
            Claimed {
                seq,
                attempt,
                lease_until: c.lease_until,
                message: Arc::new(message),
                generation: g.generation,
            }
        };
        return Ok(ClaimOutcome {
            deliveries: vec![delivery],
            ahead,
            next_due: None,
            dead_lettered,
        });
    }
}

/// A rate-limited group's window, as a claim finds it: when it opened,
/// the deliveries in it, what is left of it (`RateLimit::allowed`).
struct Window {
    rate: RateLimit,
    start: Timestamp,
    count: u32,
    left: u32,
}

impl Window {
    /// The window at the claim's time, from the stored one.
    fn new(c: Claim<'_>, rate: RateLimit, (start, count): (Timestamp, u32)) -> Window {
        let (left, start, count) = rate.allowed(c.now, start, count);
        Window {
            rate,
            start,
            count,
            left,
        }
    }

    fn left(&self) -> u64 {
        u64::from(self.left)
    }

    /// When the window closes, if it is full.
    fn full(&self) -> Option<Timestamp> {
        (self.left == 0).then(|| self.rate.closes(self.start))
    }

    /// Counts `delivered` more deliveries into the window.
    async fn count(&mut self, conn: &mut dyn Conn, c: Claim<'_>, delivered: usize) -> Result<()> {
        let delivered = u32::try_from(delivered).unwrap_or(u32::MAX);
        self.count = self.count.saturating_add(delivered);
        self.left = self.left.saturating_sub(delivered);
        conn.execute(
            "UPDATE litebus_groups SET rate_start = ?3, rate_count = ?4 WHERE topic = ?1 AND grp = ?2",
            vec![
                Value::from(c.topic),
                Value::from(c.group),
                ts(self.start),
                Value::from(self.count),
            ],
        )
        .await?;
        Ok(())
    }
}

/// How many messages this claim may lease (I7): what is left of
/// `max_in_flight` for a shared group.
fn claim_limit(c: Claim<'_>, cg: &ClaimGroup) -> u64 {
    match cg.g.spec.order {
        Order::Ordered => 1,
        Order::PerKey => match cg.g.spec.max_in_flight {
            Some(max) => u64::from(max).saturating_sub(cg.active),
            None => u64::MAX,
        }
        .min(u64::from(c.max)),
        Order::Shared { max_in_flight } => u64::from(max_in_flight)
            .saturating_sub(cg.active)
            .min(u64::from(c.max)),
    }
}

/// Up to `limit` deliverable messages of a shared or per-key group in seq
/// order, as candidate rows, taking more messages into the group while
/// there are too few and the topic holds more.
async fn choose(
    conn: &mut dyn Conn,
    c: Claim<'_>,
    cg: &mut ClaimGroup,
    limit: u64,
) -> Result<Vec<Row>> {
    let (topic, group, now) = (c.topic, c.group, c.now);
    let sql = if cg.g.spec.order == Order::PerKey {
        NEXT_PER_KEY
    } else {
        NEXT_SHARED
    };
    loop {
        let mut rows = if let Some(rows) = cg.next.take() {
            rows
        } else {
            let params = vec![
                Value::from(topic),
                Value::from(group),
                ts(now),
                Value::from(limit),
            ];
            conn.query(sql, params).await?
        };
        if cg.prioritized {
            let params = vec![
                Value::from(topic),
                Value::from(group),
                ts(now),
                Value::from(limit),
            ];
            rows.extend(conn.query(NEXT_PRIORITIZED, params).await?);
            sort_candidates(&mut rows, cg.g.spec.order)?;
        }
        // A redriven message's handout has a seq above the messages the
        // group had not taken in at the redrive: those come first, so
        // while one is among the candidates, the group takes in first.
        // (A prioritized one's comes before them anyway.)
        let shared = matches!(cg.g.spec.order, Order::Shared { .. });
        let redriven = rows.iter().any(|row| {
            (!shared || candidate_priority(row) == 0)
                && row.uint(CANDIDATE_AT).is_ok_and(|seq| seq > cg.g.cursor)
        });
        // (A shared group's read gives up to `limit` of each kind.)
        let keep = usize::try_from(limit).unwrap_or(usize::MAX);
        if !cg.more || (rows.len() as u64 >= limit && !redriven) {
            rows.truncate(keep);
            return Ok(rows);
        }
        // What comes next is read again after the take-in, with these.
        let want = limit
            .saturating_sub(rows.len() as u64)
            .clamp(TAKE_IN, TAKE_IN_MAX);
        let taken = take_in(conn, topic, group, &mut cg.g, want).await?;
        cg.more = taken == want;
        if taken == 0 {
            rows.truncate(keep);
            return Ok(rows);
        }
    }
}

/// Leases the candidates `chosen` to the claiming consumer. They were read
/// in this transaction, so each is leased, at its next attempt. With a
/// backoff, each row's `ready_at` is when it is deliverable again should
/// its lease run out (without one, its `ready_at`, not after now, says so
/// already).
async fn lease(conn: &mut dyn Conn, c: Claim<'_>, chosen: &[Row]) -> Result<()> {
    for chunk in chosen.chunks(LEASE_CHUNK) {
        lease_chunk(conn, c, chunk).await?;
    }
    Ok(())
}

/// Leases `chosen` with one `UPDATE`, binding up to three values per row
/// and four more.
async fn lease_chunk(conn: &mut dyn Conn, c: Claim<'_>, chosen: &[Row]) -> Result<()> {
    let mut sql = String::from(
        "UPDATE litebus_handouts SET attempt = attempt + 1, consumer = ?, lease_until = ?",
    );
    // Bare `?`, values in text order: see `placeholders`.
    let mut params = vec![Value::from(c.consumer), ts(c.lease_until)];
    if !c.backoff.is_none() {
        sql.push_str(", ready_at = CASE seq");
        for row in chosen {
            let seq = row.uint(CANDIDATE_AT)?;
            let attempt = u32::try_from(row.uint(1)? + 1).unwrap_or(u32::MAX);
            sql.push_str(" WHEN ? THEN ?");
            params.extend([
                Value::from(seq),
                after_lease(c.backoff, c.lease_until, seq, attempt),
            ]);
        }
        sql.push_str(" END");
    }
    // The range as well as the list: turso reads the whole group for an
    // `IN` list alone (measured: 62 ms a statement in a group of 4,800).
    sql.push_str(" WHERE topic = ? AND grp = ? AND seq BETWEEN ? AND ? AND seq IN (");
    placeholders(&mut sql, chosen.len());
    sql.push(')');
    let seqs = chosen
        .iter()
        .map(|row| row.uint(CANDIDATE_AT))
        .collect::<Result<Vec<_>>>()?;
    let (first, last) = (seqs.iter().min(), seqs.iter().max());
    params.extend([Value::from(c.topic), Value::from(c.group)]);
    params.extend([first, last].map(|seq| Value::from(seq.copied().unwrap_or(0))));
    params.extend(seqs.into_iter().map(Value::from));
    let leased = conn.execute(&sql, params).await?;
    if leased != chosen.len() as u64 {
        return Err(Error::Internal(format!(
            "a claim of {}/{} leased {leased} of {} candidates read in its transaction",
            c.topic,
            c.group,
            chosen.len()
        )));
    }
    Ok(())
}

/// Where a delivery's lease is kept: a shared or per-key group's handout
/// row, or an ordered group's own row. `current` is true of the row while
/// delivery `(?3, ?4)` of generation `?5` of group `?2` of topic `?1` is
/// current; `give_back` ends its lease, deliverable again from `?6`.
struct LeaseRow {
    table: &'static str,
    current: &'static str,
    give_back: &'static str,
}

const HANDOUT_LEASE: LeaseRow = LeaseRow {
    table: "litebus_handouts",
    current: "topic = ?1 AND grp = ?2 AND seq = ?3 AND attempt = ?4 AND consumer IS NOT NULL
        AND EXISTS (SELECT 1 FROM litebus_groups g WHERE g.topic = ?1 AND g.grp = ?2 AND g.generation = ?5)",
    give_back: "consumer = NULL, lease_until = NULL, ready_at = ?6",
};

const GROUP_LEASE: LeaseRow = LeaseRow {
    table: "litebus_groups",
    current:
        "topic = ?1 AND grp = ?2 AND head_seq = ?3 AND head_attempt = ?4 AND holder IS NOT NULL
        AND generation = ?5",
    give_back: "holder = NULL, lease_until = NULL, ready_at = ?6",
};

/// What a group with a consumer waiting caught up looks like, for
/// [`hand_off`]: ordering, `max_in_flight`, cursor, its unexpired leases,
/// whether it has messages older than the first new one (`?4`) not taken
/// in (shared) or not settled (ordered), whether the group is free of
/// holders, its head, its delay, its generation.
const HANDOFF_GROUP: &str = "SELECT g.ordering, g.max_in_flight, g.cursor,
        (SELECT COUNT(*) FROM litebus_handouts a WHERE a.topic = ?1 AND a.grp = ?2
            AND a.consumer IS NOT NULL AND a.lease_until > ?3),
        EXISTS (SELECT 1 FROM litebus_messages o WHERE o.topic = ?1 AND o.seq > g.cursor AND o.seq < ?4
                AND (NOT o.priority > 0 OR g.ordering <> 'shared'))
            OR (g.ordering = 'ordered'
                AND EXISTS (SELECT 1 FROM litebus_handouts r WHERE r.topic = ?1 AND r.grp = ?2)),
        g.holder IS NULL OR g.lease_until <= ?3, g.head_seq IS NULL, g.ready_at <= ?3,
        g.generation
     FROM litebus_groups g WHERE g.topic = ?1 AND g.grp = ?2";

/// Leases the new messages of a publish to consumers of the topic waiting
/// caught up (a hand-off), inside the publish's transaction, as their
/// claim would: a shared group's first new messages that are due, within
/// `max_in_flight`, when the group has taken in every message before them;
/// an ordered group's first new message, when the group is free, settled
/// up to it, with no redriven message waiting, and not delayed, with the next ones read ahead; a per-key
/// group's new heads (`hand_off_per_key`). Anything else is left to the
/// woken consumers' claims. `new`: the
/// messages the publish stored, in seq order. Returns what each consumer
/// got, for its inbox once the transaction commits. Three statements per
/// shared group, two per ordered one.
pub async fn hand_off(
    conn: &mut dyn Conn,
    topic: &str,
    new: &[(u64, Arc<Message>)],
    handoffs: &[Handoff],
) -> Result<Vec<(Inbox, ClaimOutcome)>> {
    let mut handed = Vec::new();
    for h in handoffs {
        let due = new
            .iter()
            .take_while(|(_, m)| m.deliver_at().is_none_or(|t| t <= h.now))
            .count();
        let Some(&(first, _)) = new.first().filter(|_| due > 0) else {
            continue;
        };
        let rows = conn
            .query(
                HANDOFF_GROUP,
                vec![
                    Value::from(topic),
                    Value::from(h.group.as_str()),
                    ts(h.now),
                    Value::from(first),
                ],
            )
            .await?;
        let Some(g) = rows.first() else {
            continue;
        };
        let (ordering, max_in_flight, cursor, active) =
            (g.text(0)?, g.uint(1)?, g.uint(2)?, g.uint(3)?);
        let (older, free, no_head, ready) = (
            g.int(4)? != 0,
            g.int(5)? != 0,
            g.int(6)? != 0,
            g.int(7)? != 0,
        );
        let generation = g.uint(8)?;
        if older || cursor >= first {
            continue;
        }
        let claimed = |(seq, message): &(u64, Arc<Message>)| Claimed {
            seq: *seq,
            attempt: 1,
            lease_until: h.lease_until,
            message: message.clone(),
            generation,
        };
        let outcome = match ordering {
            "shared" => {
                let room = max_in_flight.saturating_sub(active).min(u64::from(h.max));
                let take = &new[..due.min(usize::try_from(room).unwrap_or(usize::MAX))];
                let Some(&(last, _)) = take.last() else {
                    continue;
                };
                // A new message it would leave of a higher priority than
                // one it takes: left to the consumers' claims.
                let lowest = take.iter().map(|(_, m)| m.priority()).min();
                if new[take.len()..due]
                    .iter()
                    .any(|(_, m)| Some(m.priority()) > lowest)
                {
                    continue;
                }
                for chunk in take.chunks(INSERT_CHUNK) {
                    // A prioritized message is a handout already (the
                    // trigger `litebus_prioritized`): leased here.
                    let mut sql = String::from(
                        "INSERT INTO litebus_handouts
                            (topic, grp, seq, msg_key, attempt, ready_at, consumer, lease_until,
                             priority) VALUES ",
                    );
                    let mut params = Vec::with_capacity(chunk.len() * 7);
                    for (i, (seq, message)) in chunk.iter().enumerate() {
                        // Bare `?`, values in text order: see `placeholders`.
                        // A shared group's handouts keep no key.
                        sql.push_str(if i == 0 {
                            "(?,?,?,NULL,1,?,?,?,?)"
                        } else {
                            ",(?,?,?,NULL,1,?,?,?,?)"
                        });
                        params.extend([
                            Value::from(topic),
                            Value::from(h.group.as_str()),
                            Value::from(*seq),
                            after_lease(h.backoff, h.lease_until, *seq, 1),
                            Value::from(h.consumer.as_str()),
                            ts(h.lease_until),
                            Value::from(u64::from(message.priority())),
                        ]);
                    }
                    sql.push_str(
                        " ON CONFLICT (topic, grp, seq) DO UPDATE SET attempt = 1,
                            ready_at = excluded.ready_at, consumer = excluded.consumer,
                            lease_until = excluded.lease_until",
                    );
                    conn.execute(&sql, params).await?;
                }
                conn.execute(
                    "UPDATE litebus_groups SET cursor = ?3 WHERE topic = ?1 AND grp = ?2",
                    vec![
                        Value::from(topic),
                        Value::from(h.group.as_str()),
                        Value::from(last),
                    ],
                )
                .await?;
                let mut deliveries: Vec<Claimed> = take.iter().map(claimed).collect();
                // Stable: seq order within a priority.
                deliveries.sort_by_key(|d| std::cmp::Reverse(d.message.priority()));
                ClaimOutcome {
                    deliveries,
                    ..ClaimOutcome::default()
                }
            }
            "ordered" if free && no_head && ready => {
                conn.execute(
                    ORDERED_LEASE,
                    vec![
                        Value::from(topic),
                        Value::from(h.group.as_str()),
                        Value::from(first),
                        Value::from(1u32),
                        Value::from(h.consumer.as_str()),
                        ts(h.lease_until),
                        after_lease(h.backoff, h.lease_until, first, 1),
                    ],
                )
                .await?;
                let ahead = (h.max as usize).saturating_sub(1);
                ClaimOutcome {
                    deliveries: vec![claimed(&new[0])],
                    ahead: new[1..]
                        .iter()
                        .take(ahead)
                        .map(|(seq, message)| Ahead {
                            seq: *seq,
                            message: message.clone(),
                        })
                        .collect(),
                    ..ClaimOutcome::default()
                }
            }
            "per_key" if due == new.len() => {
                // A capped group: what is left of its cap (0: none).
                let room = match max_in_flight {
                    0 => u64::from(h.max),
                    max => max.saturating_sub(active).min(u64::from(h.max)),
                };
                let room = usize::try_from(room).unwrap_or(usize::MAX);
                let handed = hand_off_per_key(conn, topic, new, h, (generation, room)).await?;
                let Some(outcome) = handed else {
                    continue;
                };
                outcome
            }
            _ => continue,
        };
        handed.push((h.inbox.clone(), outcome));
    }
    Ok(handed)
}

/// A per-key group's hand-off, when it has taken in every message before
/// `new` and they are all due: the new messages that are heads (without a
/// key, or the first of a key that has none) become its handouts, the
/// first `room` of them leased to the waiting consumer; the others wait
/// behind their key's head; the cursor moves past them all. Three
/// statements: the keys among them that have a head, the insert, the
/// cursor.
async fn hand_off_per_key(
    conn: &mut dyn Conn,
    topic: &str,
    new: &[(u64, Arc<Message>)],
    h: &Handoff,
    (generation, room): (u64, usize),
) -> Result<Option<ClaimOutcome>> {
    let group = h.group.as_str();
    let mut keys: Vec<&str> = new.iter().filter_map(|(_, m)| m.key()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut busy = std::collections::HashSet::new();
    for chunk in keys.chunks(LEASE_CHUNK) {
        let mut sql = String::from(
            "SELECT DISTINCT msg_key FROM litebus_handouts
             WHERE topic = ? AND grp = ? AND msg_key IS NOT NULL AND msg_key IN (",
        );
        placeholders(&mut sql, chunk.len());
        sql.push(')');
        let mut params = vec![Value::from(topic), Value::from(group)];
        params.extend(chunk.iter().map(|&k| Value::from(k)));
        for row in conn.query(&sql, params).await? {
            busy.insert(row.text(0)?.to_owned());
        }
    }
    let mut heads = Vec::new();
    for item in new {
        match item.1.key() {
            None => heads.push(item),
            Some(key) if !busy.contains(key) => {
                busy.insert(key.to_owned());
                heads.push(item);
            }
            Some(_) => {}
        }
    }
    let leased = heads.len().min(room);
    if leased == 0 {
        return Ok(None);
    }
    for (at, chunk) in (0..).step_by(INSERT_CHUNK).zip(heads.chunks(INSERT_CHUNK)) {
        let mut sql = String::from(
            "INSERT INTO litebus_handouts
                (topic, grp, seq, msg_key, attempt, ready_at, consumer, lease_until) VALUES ",
        );
        let mut params = Vec::with_capacity(chunk.len() * 7);
        for (i, (seq, message)) in chunk.iter().copied().enumerate() {
            // Bare `?`, values in text order: see `placeholders`.
            if i > 0 {
                sql.push(',');
            }
            params.extend([
                Value::from(topic),
                Value::from(group),
                Value::from(*seq),
                Value::from(message.key()),
            ]);
            if at + i < leased {
                sql.push_str("(?,?,?,?,1,?,?,?)");
                params.extend([
                    after_lease(h.backoff, h.lease_until, *seq, 1),
                    Value::from(h.consumer.as_str()),
                    ts(h.lease_until),
                ]);
            } else {
                sql.push_str("(?,?,?,?,0,0,NULL,NULL)");
            }
        }
        conn.execute(&sql, params).await?;
    }
    let last = new.last().map_or(0, |(seq, _)| *seq);
    conn.execute(
        "UPDATE litebus_groups SET cursor = ?3 WHERE topic = ?1 AND grp = ?2",
        vec![Value::from(topic), Value::from(group), Value::from(last)],
    )
    .await?;
    Ok(Some(ClaimOutcome {
        deliveries: heads[..leased]
            .iter()
            .map(|(seq, message)| Claimed {
                seq: *seq,
                attempt: 1,
                lease_until: h.lease_until,
                message: message.clone(),
                generation,
            })
            .collect(),
        ..ClaimOutcome::default()
    }))
}

/// [`Driver::settle`](litebus::driver::Driver::settle). An ordered group's
/// delivery is its lease of the group, kept in its row.
pub async fn settle(conn: &mut dyn Conn, s: Settle<'_>) -> Result<Option<DeadLettered>> {
    let row = if s.ordered {
        &GROUP_LEASE
    } else {
        &HANDOUT_LEASE
    };
    let (table, current) = (row.table, row.current);
    let key = || {
        vec![
            Value::from(s.topic),
            Value::from(s.group),
            Value::from(s.seq),
            Value::from(s.attempt),
            Value::from(s.generation),
        ]
    };
    let changed = match s.settlement {
        Settlement::Ack if s.ordered => {
            let mut params = key();
            match s.next {
                Some(next) => params.extend([
                    Value::from(next.seq),
                    ts(next.lease_until),
                    after_lease(s.backoff, next.lease_until, next.seq, 1),
                ]),
                None => params.extend([Value::Null, Value::Null, Value::from(0u64)]),
            }
            conn.execute(ORDERED_ACK, params).await?
        }
        Settlement::Ack => conn.execute(ACK, key()).await?,
        Settlement::Extend { lease_until } => {
            let sql = format!("UPDATE {table} SET lease_until = ?6, ready_at = ?7 WHERE {current}");
            let mut params = key();
            params.push(ts(lease_until));
            params.push(after_lease(s.backoff, lease_until, s.seq, s.attempt));
            conn.execute(&sql, params).await?
        }
        Settlement::Nack { retry_at, reason } => {
            // A deleted group's deliveries are not current.
            let mut g = load_group(conn, s.topic, s.group)
                .await?
                .ok_or(Error::LeaseLost)?;
            let sql = format!("SELECT 1 FROM {table} WHERE {current}");
            if conn.query(&sql, key()).await?.is_empty() {
                return Err(Error::LeaseLost);
            }
            if s.attempt >= g.spec.max_attempts {
                let error = reason.as_deref().unwrap_or(NACKED);
                let key = (s.topic, s.group);
                let letter = if s.ordered {
                    dead_letter_head(conn, key, &mut g, s.seq, error, s.now).await
                } else {
                    dead_letter(conn, key, &g, s.seq, error, s.now).await
                };
                return letter.map(Some);
            }
            let sql = format!("UPDATE {table} SET {} WHERE {current}", row.give_back);
            let mut params = key();
            params.push(ts(retry_at));
            conn.execute(&sql, params).await?
        }
    };
    match changed {
        0 => Err(Error::LeaseLost),
        _ => Ok(None),
    }
}

/// Acks many deliveries of one group in one statement (the coalesced form
/// of [`settle`] with [`Settlement::Ack`]), all of one generation of the
/// group; for each, whether its lease was current. A delivery named twice
/// is acked by its first mention only.
pub async fn ack_many(
    conn: &mut dyn Conn,
    (topic, group, generation): (&str, &str, u64),
    deliveries: &[(u64, u32)],
) -> Result<Vec<bool>> {
    let mut first: HashMap<u64, usize> = HashMap::new();
    for (i, (seq, _)) in deliveries.iter().enumerate() {
        first.entry(*seq).or_insert(i);
    }
    let mut unique: Vec<(u64, u32)> = first
        .iter()
        .map(|(&seq, &i)| (seq, deliveries[i].1))
        .collect();
    unique.sort_unstable();
    let mut acked = std::collections::HashSet::new();
    for chunk in unique.chunks(ACK_CHUNK) {
        let mut sql = String::from(
            "DELETE FROM litebus_handouts WHERE topic = ? AND grp = ? AND consumer IS NOT NULL AND seq IN (",
        );
        // Bare `?`, values in text order: see `placeholders`.
        let mut params = vec![Value::from(topic), Value::from(group)];
        placeholders(&mut sql, chunk.len());
        params.extend(chunk.iter().map(|(seq, _)| Value::from(*seq)));
        sql.push_str(") AND attempt = CASE seq");
        for (seq, attempt) in chunk {
            sql.push_str(" WHEN ? THEN ?");
            params.push(Value::from(*seq));
            params.push(Value::from(*attempt));
        }
        sql.push_str(
            " END AND EXISTS (SELECT 1 FROM litebus_groups g
                   WHERE g.topic = ? AND g.grp = ? AND g.generation = ?) RETURNING seq",
        );
        params.extend([
            Value::from(topic),
            Value::from(group),
            Value::from(generation),
        ]);
        for row in conn.query(&sql, params).await? {
            acked.insert(row.uint(0)?);
        }
    }
    Ok(deliveries
        .iter()
        .enumerate()
        .map(|(i, (seq, _))| first[seq] == i && acked.contains(seq))
        .collect())
}

/// [`Driver::release`](litebus::driver::Driver::release).
pub async fn release(conn: &mut dyn Conn, release: Release<'_>) -> Result<Vec<DeadLettered>> {
    let Release {
        topic,
        group,
        consumer,
        now,
    } = release;
    let Some(mut g) = load_group(conn, topic, group).await? else {
        // A deleted group's consumers hold nothing.
        return Ok(Vec::new());
    };
    if g.spec.order == Order::Ordered {
        let (Some(seq), Some(holder)) = (g.head.seq, g.head.holder.as_deref()) else {
            return Ok(Vec::new());
        };
        if holder != consumer {
            return Ok(Vec::new());
        }
        if g.head.attempt >= g.spec.max_attempts {
            let letter =
                dead_letter_head(conn, (topic, group), &mut g, seq, CONSUMER_RELEASED, now).await?;
            return Ok(vec![letter]);
        }
        conn.execute(
            "UPDATE litebus_groups SET holder = NULL, lease_until = NULL, ready_at = ?3
             WHERE topic = ?1 AND grp = ?2",
            vec![Value::from(topic), Value::from(group), ts(now)],
        )
        .await?;
        return Ok(Vec::new());
    }
    let finals = conn
        .query(
            "SELECT seq FROM litebus_handouts
             WHERE topic = ?1 AND grp = ?2 AND consumer = ?3 AND attempt >= ?4
             ORDER BY lease_until, seq",
            vec![
                Value::from(topic),
                Value::from(group),
                Value::from(consumer),
                Value::from(g.spec.max_attempts),
            ],
        )
        .await?;
    let mut dead = Vec::new();
    for seq in seqs(&finals)? {
        dead.push(dead_letter(conn, (topic, group), &g, seq, CONSUMER_RELEASED, now).await?);
    }
    conn.execute(
        "UPDATE litebus_handouts SET consumer = NULL, lease_until = NULL, ready_at = ?4
         WHERE topic = ?1 AND grp = ?2 AND consumer = ?3",
        vec![
            Value::from(topic),
            Value::from(group),
            Value::from(consumer),
            ts(now),
        ],
    )
    .await?;
    Ok(dead)
}

/// [`Driver::read`](litebus::driver::Driver::read): one statement.
pub async fn read(conn: &mut dyn Conn, read: Read<'_>) -> Result<Vec<Record>> {
    let mut params = vec![
        Value::from(read.topic),
        Value::from(read.after),
        Value::from(u64::from(read.limit)),
    ];
    let sql = match read.key {
        Some(key) => {
            params.push(Value::from(key));
            hot::READ_KEY
        }
        None if read.skip_taken_back => hot::READ_LISTED,
        None => hot::READ,
    };
    let rows = conn.query(sql, params).await?;
    let mut records = Vec::with_capacity(rows.len());
    for row in &rows {
        let seq = row.uint(0)?;
        records.push(match decode_message(row, 0)? {
            Ok(message) => stored_record(seq, Arc::new(message), None),
            Err((why, kept)) => {
                stored_record(seq, Arc::new(kept), Some(format!("{UNDECODABLE}: {why}")))
            }
        });
    }
    Ok(records)
}

/// What the topic of a redriven message's row starts with (the seq of its
/// dead letter follows): a name no topic can have, that sorts after every
/// topic's name.
pub const REDRIVEN_PREFIX: &str = "~redriven/";

/// [`Driver::redrive`](litebus::driver::Driver::redrive): checks the group;
/// lists the dead letters its dead-letter topic still holds and no redrive
/// or purge took back (a `VALUES` join: an index lookup per seq), takes them
/// back (`litebus_taken_back`) and, for a redrive, gives each message a row
/// of its own and the group a handout of it (`redriven`), per message.
pub async fn redrive(conn: &mut dyn Conn, r: Redrive<'_>) -> Result<Vec<u64>> {
    let rows = conn
        .query(
            "SELECT ordering FROM litebus_groups WHERE topic = ?1 AND grp = ?2",
            vec![Value::from(r.topic), Value::from(r.group)],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Err(Error::UnknownGroup {
            topic: r.topic.to_owned(),
            group: r.group.to_owned(),
        });
    };
    let ordering = row.text(0)?.to_owned();
    let mut done = Vec::new();
    for chunk in r.letters.chunks(INSERT_CHUNK) {
        let sql = hot::still_dead_letters(chunk.len());
        let mut params: Vec<Value> = chunk.iter().map(|(seq, _)| Value::from(*seq)).collect();
        params.push(Value::from(r.dead_letter));
        let held = conn.query(&sql, params).await?;
        let held = held
            .iter()
            .map(|row| row.uint(0))
            .collect::<Result<Vec<u64>>>()?;
        if held.is_empty() {
            continue;
        }
        let mut sql = String::from("INSERT INTO litebus_taken_back (seq, topic) VALUES ");
        let mut params = Vec::with_capacity(held.len() * 2);
        for (i, seq) in held.iter().enumerate() {
            sql.push_str(if i == 0 { "(?,?)" } else { ",(?,?)" });
            params.push(Value::from(*seq));
            params.push(Value::from(r.dead_letter));
        }
        conn.execute(&sql, params).await?;
        done.extend(held);
    }
    if r.purge {
        return Ok(done);
    }
    done.sort_unstable();
    let per_key = u64::from(ordering == "per_key");
    let back: Vec<(String, &Message)> = r
        .letters
        .iter()
        .filter(|(seq, _)| done.binary_search(seq).is_ok())
        .map(|(seq, message)| (format!("{REDRIVEN_PREFIX}{seq}"), message.as_ref()))
        .collect();
    for chunk in back.chunks(INSERT_CHUNK) {
        let rows = chunk
            .iter()
            .map(|(name, message)| (name.as_str(), *message));
        let (sql, params) = insert_rows_statement(rows, r.now);
        conn.execute(&sql, params).await?;
        // Their handouts, found by their rows' topics (an index lookup
        // each). Bare `?`, values in text order: see `placeholders`.
        let mut sql = String::from(
            "INSERT INTO litebus_handouts
                (topic, grp, seq, msg_key, attempt, ready_at, redriven, priority)
             SELECT ?, ?, m.seq, CASE WHEN ? <> 0 THEN m.msg_key END, 0, 0, 1,
                    CASE WHEN ? <> 0 THEN m.priority ELSE 0 END
             FROM (VALUES ",
        );
        let mut params = vec![
            Value::from(r.topic),
            Value::from(r.group),
            Value::from(per_key),
            Value::from(u64::from(ordering == "shared")),
        ];
        for (i, (name, _)) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 { "(?)" } else { ",(?)" });
            params.push(Value::from(name.as_str()));
        }
        sql.push_str(") AS v JOIN litebus_messages m ON m.topic = v.column1");
        conn.execute(&sql, params).await?;
    }
    Ok(done)
}

/// [`Driver::seek`](litebus::driver::Driver::seek): the group row back to
/// a new group's at the position, and no handouts.
pub async fn seek(conn: &mut dyn Conn, seek: Seek<'_>) -> Result<()> {
    let (topic, group) = (seek.topic, seek.group);
    let start_after = match seek.start_after {
        Some(seq) => seq,
        None => last_seq(conn, topic).await?,
    };
    let key = || vec![Value::from(topic), Value::from(group)];
    // Cursor -1 first: deleting a per-key group's handouts brings in no
    // next message of their keys (`litebus_next_of_key` takes up to it).
    conn.execute(NEXT_GENERATION, Vec::new()).await?;
    let moved = conn
        .execute(
            "UPDATE litebus_groups SET cursor = -1, head_seq = NULL, head_attempt = 0,
                holder = NULL, lease_until = NULL, ready_at = 0,
                generation = (SELECT value FROM litebus_meta WHERE name = 'generations')
             WHERE topic = ?1 AND grp = ?2",
            key(),
        )
        .await?;
    if moved == 0 {
        return Err(unknown_group(topic, group));
    }
    conn.execute(
        "DELETE FROM litebus_handouts WHERE topic = ?1 AND grp = ?2",
        key(),
    )
    .await?;
    let mut params = key();
    params.push(Value::from(start_after));
    conn.execute(
        "UPDATE litebus_groups SET start_after = ?3, cursor = ?3 WHERE topic = ?1 AND grp = ?2",
        params.clone(),
    )
    .await?;
    conn.execute(TAKE_IN_PRIORITIZED, params).await?;
    Ok(())
}

/// [`Driver::delete_group`](litebus::driver::Driver::delete_group): the
/// group row first, so that deleting a per-key group's handouts brings in
/// nothing.
pub async fn delete_group(conn: &mut dyn Conn, topic: &str, group: &str) -> Result<bool> {
    let key = || vec![Value::from(topic), Value::from(group)];
    let deleted = conn
        .execute(
            "DELETE FROM litebus_groups WHERE topic = ?1 AND grp = ?2",
            key(),
        )
        .await?;
    conn.execute(
        "DELETE FROM litebus_handouts WHERE topic = ?1 AND grp = ?2",
        key(),
    )
    .await?;
    Ok(deleted > 0)
}

/// [`Driver::topics`](litebus::driver::Driver::topics): each topic of the
/// messages found by one seek of their topic index after the one before
/// (a statement per topic, none reading a topic's messages), and the
/// topics of the groups.
pub async fn topics(conn: &mut dyn Conn) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    loop {
        let after = names.last().map_or("", String::as_str);
        let rows = conn
            .query(
                "SELECT topic, typeof(topic) FROM litebus_messages
                 WHERE topic > ?1 AND topic < ?2 ORDER BY topic LIMIT 1",
                vec![Value::from(after), Value::from(REDRIVEN_PREFIX)],
            )
            .await?;
        // Redriven messages' topics sort after every topic name; text
        // sorts before blobs: a topic plain SQL wrote as a blob ends the walk.
        match rows.first() {
            Some(row) if row.text(1)? == "text" => names.push(row.text(0)?.to_owned()),
            _ => break,
        }
    }
    for row in conn
        .query("SELECT DISTINCT topic FROM litebus_groups", Vec::new())
        .await?
    {
        names.push(row.text(0)?.to_owned());
    }
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// [`Driver::stats`](litebus::driver::Driver::stats).
pub async fn stats(conn: &mut dyn Conn, topic: &str, now: Timestamp) -> Result<TopicStats> {
    let last = last_seq(conn, topic).await?;
    let retention = retention(conn, topic)
        .await?
        .map_or_else(Retention::new, |(r, ..)| r);
    let rows = conn
        .query(
            "SELECT COUNT(*) FROM litebus_messages WHERE topic = ?1",
            vec![Value::from(topic)],
        )
        .await?;
    let count = rows.first().map_or(Ok(0), |r| r.uint(0))?;
    let groups = conn
        .query(
            &format!(
                "SELECT grp, start_after, cursor, dead_lettered,
                        holder IS NOT NULL AND lease_until > ?2, ordering = 'per_key', pruned,
                        {GROUP_COLUMNS}, {SETTINGS_COLUMNS}
                 FROM litebus_groups WHERE topic = ?1 ORDER BY grp"
            ),
            vec![Value::from(topic), ts(now)],
        )
        .await?;
    let mut out = Vec::with_capacity(groups.len());
    for g in &groups {
        let (name, start_after, cursor, dead) = (g.text(0)?, g.uint(1)?, g.uint(2)?, g.uint(3)?);
        // An ordered group's delivery is its lease of the group.
        let holds = g.uint(4)?;
        let held = conn
            .query(
                "SELECT COUNT(*), MIN(CASE WHEN redriven = 0 THEN seq END),
                        COUNT(CASE WHEN consumer IS NOT NULL AND lease_until > ?3 THEN 1 END)
                 FROM litebus_handouts WHERE topic = ?1 AND grp = ?2",
                vec![Value::from(topic), Value::from(name), ts(now)],
            )
            .await?;
        // (A shared group's prioritized messages are its handouts.)
        let later = conn
            .query(
                "SELECT COUNT(*), MIN(seq) FROM litebus_messages
                 WHERE topic = ?1 AND seq > ?2 AND (NOT priority > 0 OR ?3 = 0)",
                vec![
                    Value::from(topic),
                    Value::from(cursor),
                    Value::from(u64::from(g.text(7)? == "shared")),
                ],
            )
            .await?;
        let (Some(held), Some(later)) = (held.first(), later.first()) else {
            return Err(Error::Internal("an aggregate returned no row".into()));
        };
        // A per-key group's messages behind their key's head, up to its
        // cursor, are in no handout.
        let waiting = if g.int(5)? != 0 {
            let rows = conn
                .query(
                    waiting_of_keys!("COUNT(*), MIN(m.seq)", "?2", "?3"),
                    vec![Value::from(topic), Value::from(name), Value::from(cursor)],
                )
                .await?;
            match rows.first() {
                Some(r) => (r.uint(0)?, r.opt_uint(1)?),
                None => (0, None),
            }
        } else {
            (0, None)
        };
        let unsettled = held.uint(0)? + later.uint(0)? + waiting.0;
        let in_flight = held.uint(2)? + holds;
        // (A message waiting behind a redriven one may come before every
        // handout the floor counts.)
        let first_unsettled = [held.opt_uint(1)?, later.opt_uint(1)?, waiting.1]
            .into_iter()
            .flatten()
            .min();
        let acked_floor = first_unsettled.map_or(start_after.max(last), |first| first - 1);
        let oldest = match first_unsettled {
            Some(first) => {
                let rows = conn
                    .query(
                        "SELECT CASE WHEN typeof(published_at) = 'integer'
                                THEN published_at ELSE 0 END
                         FROM litebus_messages WHERE seq = ?1",
                        vec![Value::from(first)],
                    )
                    .await?;
                let at = rows.first().map_or(Ok(0), |r| r.int(0))?;
                Some(Timestamp::from_millis(at.max(0).unsigned_abs()))
            }
            None => None,
        };
        out.push(group_stats(
            name.to_owned(),
            unsettled - in_flight,
            in_flight,
            acked_floor,
            [dead, g.uint(6)?],
            lag(oldest, now),
            {
                let mut spec = group_from(g, 7)?.spec;
                settings_from(g, 17, &mut spec)?;
                spec
            },
        ));
    }
    Ok(topic_stats(topic.to_owned(), last, count, out, retention))
}

/// A topic's stored retention, with its message count and payload bytes
/// (kept by the triggers on `litebus_messages`); `None` if it was never set.
async fn retention(conn: &mut dyn Conn, topic: &str) -> Result<Option<(Retention, u64, u64)>> {
    let rows = conn
        .query(
            "SELECT until_consumed, max_age, max_messages, max_bytes, messages, bytes,
                    dedupe_window
             FROM litebus_topics WHERE topic = ?1",
            vec![Value::from(topic)],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let mut r = Retention::new();
    if row.int(0)? != 0 {
        r = r.until_consumed();
    }
    if let Some(ms) = row.opt_uint(1)? {
        r = r.max_age(std::time::Duration::from_millis(ms));
    }
    if let Some(n) = row.opt_uint(2)? {
        r = r.max_messages(n);
    }
    if let Some(n) = row.opt_uint(3)? {
        r = r.max_bytes(n);
    }
    if let Some(ms) = row.opt_uint(6)? {
        r = r.dedupe_window(std::time::Duration::from_millis(ms));
    }
    Ok(Some((r, row.uint(4)?, row.uint(5)?)))
}

/// Whether a retention was ever set for `topic` (one `SELECT`).
pub async fn has_retention(conn: &mut dyn Conn, topic: &str) -> Result<bool> {
    let rows = conn
        .query(
            "SELECT 1 FROM litebus_topics WHERE topic = ?1",
            vec![Value::from(topic)],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// [`Driver::set_retention`](litebus::driver::Driver::set_retention). The
/// topic's row counts its messages and payload bytes from then on (the
/// triggers on `litebus_messages`), starting from one count of what it
/// holds when the row is made.
pub async fn set_retention(conn: &mut dyn Conn, topic: &str, r: Retention) -> Result<()> {
    refuse_deleted(conn, [topic, topic]).await?;
    let opt = |v: Option<u64>| v.map_or(Value::Null, Value::from);
    conn.execute(
        "INSERT INTO litebus_topics (topic, until_consumed, max_age, max_messages, max_bytes,
                                     dedupe_window, messages, bytes)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, COUNT(*),
                COALESCE(SUM(length(CAST(payload AS BLOB))), 0)
         FROM litebus_messages WHERE topic = ?1
         ON CONFLICT (topic) DO UPDATE SET until_consumed = excluded.until_consumed,
             max_age = excluded.max_age, max_messages = excluded.max_messages,
             max_bytes = excluded.max_bytes, dedupe_window = excluded.dedupe_window",
        vec![
            Value::from(topic),
            Value::from(u64::from(r.is_until_consumed())),
            opt(r.max_age_millis()),
            opt(r.get_max_messages()),
            opt(r.get_max_bytes()),
            opt(r.dedupe_window_millis()),
        ],
    )
    .await?;
    Ok(())
}

/// An ordered group's head (in a prune's `UPDATE` of the groups) is among
/// the messages that go, up to seq `?2`: a redriven message (a handout of
/// the group) is not a message of the topic and stays, under the group's
/// cursor (its ack moves the cursor back to it, past nothing the topic
/// still holds).
macro_rules! pruned_head {
    () => {
        "(head_seq <= ?2 AND NOT EXISTS (SELECT 1 FROM litebus_handouts r
            WHERE r.topic = ?1 AND r.grp = litebus_groups.grp AND r.seq = litebus_groups.head_seq))"
    };
}

/// [`Driver::prune`](litebus::driver::Driver::prune): reads the retention
/// (one statement: all when it keeps everything), the oldest `limit`
/// messages and, for `until_consumed`, the groups' lowest floor; then, if
/// any go, counts what each group loses and moves it past them, deletes
/// the messages, and deletes the groups' handouts of them (the per-key
/// trigger brings in each key's next message up to the cursor).
pub async fn prune(conn: &mut dyn Conn, p: Prune<'_>) -> Result<u64> {
    let Some((retention, count, bytes)) = retention(conn, p.topic).await? else {
        return Ok(0);
    };
    let topic = Value::from(p.topic);
    if retention.dedupe_window_millis().is_some() {
        conn.execute(
            "DELETE FROM litebus_dedupe WHERE topic = ?1 AND until <= ?2",
            vec![topic.clone(), ts(p.now)],
        )
        .await?;
    }
    if retention.keeps_everything() {
        return Ok(0);
    }
    let rows = conn
        .query(
            "SELECT seq, CASE WHEN typeof(published_at) = 'integer' THEN published_at ELSE 0 END,
                    length(CAST(payload AS BLOB))
             FROM litebus_messages WHERE topic = ?1 ORDER BY seq LIMIT ?2",
            vec![topic.clone(), Value::from(u64::from(p.limit))],
        )
        .await?;
    let window = rows
        .iter()
        .map(|r| {
            Ok((
                r.uint(0)?,
                Timestamp::from_millis(r.int(1)?.max(0).unsigned_abs()),
                r.uint(2)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let floor = if retention.is_until_consumed() {
        let rows = conn
            .query(
                concat!(
                    // A shared group's cursor stays below the prioritized
                    // messages it settled without taking in: it has
                    // consumed up to its first message of priority 0
                    // after the cursor, if any.
                    "SELECT MIN(MIN(
                        CASE WHEN g.ordering = 'shared' THEN COALESCE(
                            (SELECT MIN(m.seq) - 1 FROM litebus_messages m
                             WHERE m.topic = g.topic AND m.seq > g.cursor AND NOT m.priority > 0),
                            9223372036854775807)
                        ELSE g.cursor END,
                        COALESCE((SELECT MIN(h.seq) - 1 FROM litebus_handouts h
                                  WHERE h.topic = g.topic AND h.grp = g.grp AND h.redriven = 0),
                                 9223372036854775807),
                        COALESCE((",
                    waiting_of_keys!("MIN(m.seq) - 1", "g.grp", "g.cursor"),
                    "), 9223372036854775807)))
                 FROM litebus_groups g WHERE g.topic = ?1"
                ),
                vec![topic.clone()],
            )
            .await?;
        rows.first().map_or(Ok(None), |r| r.opt_uint(0))?
    } else {
        None
    };
    let go = prune_count(&retention, &window, (count, bytes), floor, p.now);
    let Some(&(cut, ..)) = go.checked_sub(1).and_then(|last| window.get(last)) else {
        return Ok(0);
    };
    let cut = Value::from(cut);
    conn.execute(
        concat!(
            "UPDATE litebus_groups SET
            pruned = pruned
                + (SELECT COUNT(*) FROM litebus_messages m
                   WHERE m.topic = ?1 AND m.seq > litebus_groups.cursor AND m.seq <= ?2
                     AND (NOT m.priority > 0 OR litebus_groups.ordering <> 'shared'))
                + (SELECT COUNT(*) FROM litebus_handouts h
                   WHERE h.topic = ?1 AND h.grp = litebus_groups.grp AND h.seq <= ?2
                     AND h.redriven = 0)
                + CASE WHEN ordering = 'per_key' THEN (",
            waiting_of_keys!(
                "COUNT(*)",
                "litebus_groups.grp",
                "MIN(?2, litebus_groups.cursor)"
            ),
            ") ELSE 0 END,
            cursor = MAX(cursor, ?2),
            head_attempt = CASE WHEN ",
            pruned_head!(),
            " THEN 0 ELSE head_attempt END,
            holder = CASE WHEN ",
            pruned_head!(),
            " THEN NULL ELSE holder END,
            lease_until = CASE WHEN ",
            pruned_head!(),
            " THEN NULL ELSE lease_until END,
            ready_at = CASE WHEN ",
            pruned_head!(),
            " THEN 0 ELSE ready_at END,
            head_seq = CASE WHEN ",
            pruned_head!(),
            " THEN NULL ELSE head_seq END
         WHERE topic = ?1"
        ),
        vec![topic.clone(), cut.clone()],
    )
    .await?;
    if let Some(window) = retention.dedupe_window_millis() {
        conn.execute(
            "INSERT INTO litebus_dedupe (topic, id, seq, until)
             SELECT topic, id, seq, COALESCE(published_at, 0) + ?3 FROM litebus_messages
             WHERE topic = ?1 AND seq <= ?2 AND COALESCE(published_at, 0) + ?3 > ?4
               AND typeof(id) = 'text'
             ON CONFLICT (topic, id) DO UPDATE SET seq = excluded.seq, until = excluded.until",
            vec![topic.clone(), cut.clone(), Value::from(window), ts(p.now)],
        )
        .await?;
    }
    let pruned = conn
        .execute(
            "DELETE FROM litebus_messages WHERE topic = ?1 AND seq <= ?2",
            vec![topic.clone(), cut.clone()],
        )
        .await?;
    conn.execute(
        "DELETE FROM litebus_handouts WHERE topic = ?1 AND seq <= ?2 AND redriven = 0",
        vec![topic, cut],
    )
    .await?;
    Ok(pruned)
}
