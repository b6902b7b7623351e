//! The schema, as numbered migrations, and the check that a database is one
//! this build understands.

use litebus::{DriverError, Error, Result};

use crate::{Conn, Dialect, Value};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u64 = 17;

/// Migration `n` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE litebus_meta (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )",
    "CREATE TABLE litebus_messages (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        topic      TEXT NOT NULL,
        id         TEXT NOT NULL,
        payload    BLOB NOT NULL,
        metadata   TEXT NOT NULL DEFAULT '{}',
        msg_key    TEXT,
        deliver_at INTEGER NOT NULL DEFAULT 0
    )",
    "CREATE UNIQUE INDEX litebus_messages_by_id ON litebus_messages (topic, id)",
    "CREATE INDEX litebus_messages_by_topic ON litebus_messages (topic, seq)",
    "CREATE TABLE litebus_groups (
        topic         TEXT NOT NULL,
        grp           TEXT NOT NULL,
        ordering      TEXT NOT NULL,
        max_in_flight INTEGER NOT NULL,
        max_attempts  INTEGER NOT NULL,
        dead_letter   TEXT NOT NULL,
        start_after   INTEGER NOT NULL,
        cursor        INTEGER NOT NULL,
        dead_lettered INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (topic, grp)
    )",
    "CREATE TABLE litebus_handouts (
        topic       TEXT NOT NULL,
        grp         TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        msg_key     TEXT,
        attempt     INTEGER NOT NULL DEFAULT 0,
        ready_at    INTEGER NOT NULL,
        consumer    TEXT,
        lease_until INTEGER,
        PRIMARY KEY (topic, grp, seq)
    )",
    "CREATE INDEX litebus_handouts_by_lease ON litebus_handouts (topic, grp, lease_until)
        WHERE consumer IS NOT NULL",
    "CREATE INDEX litebus_handouts_by_consumer ON litebus_handouts (topic, grp, consumer)
        WHERE consumer IS NOT NULL",
    "CREATE INDEX litebus_handouts_by_key ON litebus_handouts (topic, grp, msg_key, seq)
        WHERE msg_key IS NOT NULL",
    "INSERT INTO litebus_meta (name, value) VALUES ('schema_version', 1)",
], &[
    // Version 2: an ordered group's one delivery lives in its group row (a
    // lease of the group, not of a message), and its cursor is its acked
    // floor; it has no handouts.
    "ALTER TABLE litebus_groups ADD COLUMN head_seq INTEGER",
    "ALTER TABLE litebus_groups ADD COLUMN head_attempt INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE litebus_groups ADD COLUMN holder TEXT",
    "ALTER TABLE litebus_groups ADD COLUMN lease_until INTEGER",
    "ALTER TABLE litebus_groups ADD COLUMN ready_at INTEGER NOT NULL DEFAULT 0",
    // A version-1 ordered group's handouts are its unsettled messages, in a
    // row from its first: the cursor goes to the seq before them, and the
    // first, if it was delivered, becomes the head with its attempts, lease
    // and delay.
    "UPDATE litebus_groups SET cursor = (
        SELECT MIN(h.seq) - 1 FROM litebus_handouts h
        WHERE h.topic = litebus_groups.topic AND h.grp = litebus_groups.grp)
     WHERE ordering = 'ordered' AND EXISTS (
        SELECT 1 FROM litebus_handouts h
        WHERE h.topic = litebus_groups.topic AND h.grp = litebus_groups.grp)",
    "UPDATE litebus_groups SET
        head_seq = cursor + 1,
        head_attempt = (SELECT h.attempt FROM litebus_handouts h WHERE h.topic = litebus_groups.topic
                        AND h.grp = litebus_groups.grp AND h.seq = litebus_groups.cursor + 1),
        holder = (SELECT h.consumer FROM litebus_handouts h WHERE h.topic = litebus_groups.topic
                  AND h.grp = litebus_groups.grp AND h.seq = litebus_groups.cursor + 1),
        lease_until = (SELECT h.lease_until FROM litebus_handouts h WHERE h.topic = litebus_groups.topic
                       AND h.grp = litebus_groups.grp AND h.seq = litebus_groups.cursor + 1),
        ready_at = (SELECT h.ready_at FROM litebus_handouts h WHERE h.topic = litebus_groups.topic
                    AND h.grp = litebus_groups.grp AND h.seq = litebus_groups.cursor + 1)
     WHERE ordering = 'ordered' AND EXISTS (
        SELECT 1 FROM litebus_handouts h WHERE h.topic = litebus_groups.topic
        AND h.grp = litebus_groups.grp AND h.seq = litebus_groups.cursor + 1 AND h.attempt > 0)",
    "DELETE FROM litebus_handouts WHERE EXISTS (
        SELECT 1 FROM litebus_groups g
        WHERE g.topic = litebus_handouts.topic AND g.grp = litebus_handouts.grp
          AND g.ordering = 'ordered')",
], &[
    // Version 3: a per-key group keeps a handout only for the head of each
    // key (its first unsettled message) and for messages without a key; the
    // other messages of a key wait in the messages table, and the head's
    // going (ack, dead letter) brings in the next one up to the cursor. A
    // claim then reads a row per key, not the whole backlog.
    "CREATE INDEX litebus_messages_by_key ON litebus_messages (topic, msg_key, seq)
        WHERE msg_key IS NOT NULL",
    // Only a per-key group's handouts keep their key.
    "UPDATE litebus_handouts SET msg_key = NULL WHERE msg_key IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM litebus_groups g
        WHERE g.topic = litebus_handouts.topic AND g.grp = litebus_handouts.grp
          AND g.ordering = 'per_key')",
    // Handouts behind their key's head were never delivered (attempt 0):
    // they come back from the messages table when the head goes.
    "DELETE FROM litebus_handouts WHERE msg_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM litebus_handouts e
        WHERE e.topic = litebus_handouts.topic AND e.grp = litebus_handouts.grp
          AND e.msg_key = litebus_handouts.msg_key AND e.seq < litebus_handouts.seq)",
    NEXT_OF_KEY_TRIGGER,
], &[
    // Version 4: retention. A topic's row holds its rules and, kept by the
    // triggers below, its message count and payload bytes and the last
    // seq that went (its last seq never goes back); a message
    // keeps its publish time; a group counts what retention took from it.
    "CREATE TABLE litebus_topics (
        topic          TEXT PRIMARY KEY,
        until_consumed INTEGER NOT NULL DEFAULT 0,
        max_age        INTEGER,
        max_messages   INTEGER,
        max_bytes      INTEGER,
        dedupe_window  INTEGER,
        messages       INTEGER NOT NULL DEFAULT 0,
        bytes          INTEGER NOT NULL DEFAULT 0,
        pruned_to      INTEGER NOT NULL DEFAULT 0
    )",
    // The ids of messages retention let go of, within the topic's dedupe
    // window (until `until`, on the bus clock).
    "CREATE TABLE litebus_dedupe (
        topic TEXT NOT NULL,
        id    TEXT NOT NULL,
        seq   INTEGER NOT NULL,
        until INTEGER NOT NULL,
        PRIMARY KEY (topic, id)
    )",
    // A publish that skips the duplicate check (one `INSERT` by itself)
    // is refused whole for a remembered id, as the unique index refuses a
    // kept one, and runs again the way that checks.
    "CREATE TRIGGER litebus_remembered_id BEFORE INSERT ON litebus_messages
     WHEN EXISTS (SELECT 1 FROM litebus_dedupe d
                  WHERE d.topic = new.topic AND d.id = new.id AND d.until > new.published_at)
     BEGIN
        SELECT RAISE(ABORT, 'UNIQUE constraint failed: litebus_dedupe.id');
     END",
    "ALTER TABLE litebus_messages ADD COLUMN published_at INTEGER",
    "ALTER TABLE litebus_groups ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0",
    "CREATE TRIGGER litebus_topic_grows AFTER INSERT ON litebus_messages
     BEGIN
        UPDATE litebus_topics SET messages = messages + 1,
            bytes = bytes + length(CAST(new.payload AS BLOB))
        WHERE topic = new.topic;
     END",
    "CREATE TRIGGER litebus_topic_shrinks AFTER DELETE ON litebus_messages
     BEGIN
        UPDATE litebus_topics SET messages = messages - 1,
            bytes = bytes - length(CAST(old.payload AS BLOB)),
            pruned_to = MAX(pruned_to, old.seq)
        WHERE topic = old.topic;
     END",
], &[
    // Version 5: a group's generation, given at its creation and by each
    // seek from one count of the store (`generations`); a delivery is
    // current only in the generation it was handed out in (attempts start
    // again at 1 after a seek, and a deleted group may be created again,
    // so seq and attempt alone do not tell a delivery from before).
    "ALTER TABLE litebus_groups ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
    "INSERT INTO litebus_meta (name, value) VALUES ('generations', 0)",
], &[
    // Version 6: a group's backoff (`Backoff`): its first and longest
    // wait in milliseconds, its jitter in thousandths and the jitter's
    // seed (its 64 bits as a signed integer). A lease's row keeps, in
    // `ready_at`, when its message is deliverable again should the lease
    // run out (the lease end and the backoff after it); earlier rows have
    // a `ready_at` at or before their lease end, which means no wait.
    "ALTER TABLE litebus_groups ADD COLUMN backoff_base INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE litebus_groups ADD COLUMN backoff_max INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE litebus_groups ADD COLUMN backoff_jitter INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE litebus_groups ADD COLUMN backoff_seed INTEGER NOT NULL DEFAULT 0",
], &[
    // Version 7: a group's rate limit (`RateLimit`: at most `rate_max`
    // deliveries per `rate_period` ms; NULL: none) and its window: when it
    // opened and the deliveries in it.
    "ALTER TABLE litebus_groups ADD COLUMN rate_max INTEGER",
    "ALTER TABLE litebus_groups ADD COLUMN rate_period INTEGER",
    "ALTER TABLE litebus_groups ADD COLUMN rate_start INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE litebus_groups ADD COLUMN rate_count INTEGER NOT NULL DEFAULT 0",
], &[
    // Version 8: deleted topics. A deleted topic's tombstone refuses every
    // `INSERT` of a message of it, plain SQL's included, until the topic is
    // created again; the drivers read the error's text.
    "CREATE TABLE litebus_tombstones (topic TEXT PRIMARY KEY)",
    "CREATE TRIGGER litebus_deleted_topic BEFORE INSERT ON litebus_messages
     WHEN EXISTS (SELECT 1 FROM litebus_tombstones t WHERE t.topic = new.topic)
     BEGIN
        SELECT RAISE(ABORT, 'litebus: the topic was deleted');
     END",
], &[
    // Version 9: the trigger of version 3 again, its statement now saying
    // `msg_key IS NOT NULL` (see `next_of_key!`).
    "DROP TRIGGER litebus_next_of_key",
    NEXT_OF_KEY_TRIGGER,
], &[
    // Version 10: dead letters taken back. A redrive or purge lists the
    // dead letter here (its seq, in its dead-letter topic), so that it is
    // no longer one of its group's dead letters and is taken back once.
    "CREATE TABLE litebus_taken_back (
        seq   INTEGER PRIMARY KEY,
        topic TEXT NOT NULL
    )",
    // ... until the message goes (retention, a deleted topic).
    "CREATE TRIGGER litebus_taken_back_gone AFTER DELETE ON litebus_messages
     BEGIN
        DELETE FROM litebus_taken_back WHERE seq = old.seq;
     END",
    // A redrive sends a message back to one group: its row in
    // `litebus_messages` has a topic of its own (`~redriven/<seq of the
    // dead letter>`, a name no topic can have) and its group's handout
    // says `redriven`. The row goes with the handout.
    "ALTER TABLE litebus_handouts ADD COLUMN redriven INTEGER NOT NULL DEFAULT 0",
    "CREATE TRIGGER litebus_redriven_gone AFTER DELETE ON litebus_handouts
     WHEN old.redriven <> 0
     BEGIN
        DELETE FROM litebus_messages WHERE seq = old.seq;
     END",
], &[
    // Version 11: redrives into ordered groups. An ordered group's only
    // handouts are its redriven messages; settling its head moves its
    // cursor to the head's seq, and when that is a redriven message, its
    // handout (and by `litebus_redriven_gone` its row) goes. (A prune
    // moves the cursor to a seq of the topic, which no handout of an
    // ordered group has.)
    "CREATE TRIGGER litebus_ordered_settled AFTER UPDATE ON litebus_groups
     WHEN new.ordering = 'ordered' AND new.cursor <> old.cursor
     BEGIN
        DELETE FROM litebus_handouts
        WHERE topic = new.topic AND grp = new.grp AND seq = new.cursor;
     END",
], &[
    // Version 12: priorities. A message of a priority above 0 becomes a
    // handout of every shared group of its topic when it is stored (and
    // when such a group is created or seeks), whatever the group's cursor:
    // a claim finds it among its handouts before the backlog it has not
    // taken in, by the partial index, and a take-in passes over it.
    "ALTER TABLE litebus_messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE litebus_handouts ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX litebus_messages_prioritized ON litebus_messages (topic, seq)
     WHERE priority > 0",
    "CREATE INDEX litebus_handouts_prioritized
     ON litebus_handouts (topic, grp, priority DESC, seq) WHERE priority > 0",
    "CREATE TRIGGER litebus_prioritized AFTER INSERT ON litebus_messages
     WHEN new.priority > 0
     BEGIN
        INSERT OR IGNORE INTO litebus_handouts
            (topic, grp, seq, msg_key, attempt, ready_at, priority)
        SELECT new.topic, g.grp, new.seq, NULL, 0,
               CASE WHEN typeof(new.deliver_at) = 'integer' THEN new.deliver_at ELSE 0 END,
               new.priority
        FROM litebus_groups g
        WHERE g.topic = new.topic AND g.ordering = 'shared' AND g.cursor < new.seq;
     END",
], &[
    // Version 13: an ordered group's settled head goes from its handouts
    // also when its cursor does not move: a group that sought past the
    // topic's end and then took a redriven message back holds it at a seq
    // at or below its cursor (settling sets the cursor to the head's seq,
    // which it already was). Before, such a message came back after its
    // ack.
    "DROP TRIGGER litebus_ordered_settled",
    ORDERED_SETTLED_TRIGGER,
], &[
    // Version 14 changes only the PostgreSQL schema (`PG_TO_14`).
], &[
    // Version 15: an ordered group's cursor never goes back when it
    // settles a redriven head behind it (a seek past the topic's end, then
    // a redrive): the messages the seek passed over stayed passed over
    // only until that ack. The settled head's handout goes by the head's
    // seq.
    "DROP TRIGGER litebus_ordered_settled",
    ORDERED_SETTLED_TRIGGER,
], &[
    // Version 16 changes only the PostgreSQL schema (`PG_TO_16`).
], &[
    // Version 17 changes only the PostgreSQL schema (`PG_TO_17`).
]];

/// `litebus_ordered_settled` (version 15): an ordered group's settled head
/// takes its redriven handout with it: the cursor moves (to the handout's
/// seq), or the head goes with the cursor at or past it (a redriven head
/// behind the cursor).
const ORDERED_SETTLED_TRIGGER: &str = "CREATE TRIGGER litebus_ordered_settled
     AFTER UPDATE ON litebus_groups
     WHEN new.ordering = 'ordered' AND (new.cursor <> old.cursor
          OR (old.head_seq <= new.cursor AND new.head_seq IS NOT old.head_seq))
     BEGIN
        DELETE FROM litebus_handouts
        WHERE topic = new.topic AND grp = new.grp
          AND (seq = new.cursor AND new.cursor <> old.cursor
               OR seq = old.head_seq AND old.head_seq <= new.cursor
                  AND new.head_seq IS NOT old.head_seq);
     END";

/// The schema on PostgreSQL, at [`SCHEMA_VERSION`] from the start (there
/// are no earlier PostgreSQL stores): the tables, indexes and triggers of
/// the SQLite schema, in PostgreSQL's words, and the functions that the
/// statements' PostgreSQL form calls (see [`crate::dialect`]). What it
/// adds:
/// - A message's seq is given by the trigger `litebus_message_in`, after
///   it takes the store's write lock (`pg_advisory_xact_lock`, held to the
///   commit): seqs of a store rise in commit order, as a subscriber reading
///   past its cursor needs, for plain SQL's `INSERT`s too. The last seq
///   given is the row `last_seq` of `litebus_meta`, so that an insert
///   rolled back (a refused duplicate) gives its seq back, as SQLite's
///   `AUTOINCREMENT` does, and a seq is never given twice. Every write
///   transaction of the engine takes the same lock first (see
///   [`PG_BEGIN`]).
/// - The trigger functions keep the `search_path` they were made with, so
///   an `INSERT` from a session whose `search_path` names another schema
///   finds the store's tables.
/// - Every statement that changes messages, handouts or groups sends one
///   `NOTIFY litebus` with the schema's name and the writing driver's
///   token (`litebus.origin`, empty for plain SQL); PostgreSQL folds the
///   notifications of one transaction into one.
const PG_SCHEMA: &[&str] = &[
    "CREATE TABLE litebus_meta (
        name  TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    )",
    "CREATE FUNCTION litebus_typeof(BIGINT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS
     $$ SELECT CASE WHEN $1 IS NULL THEN 'null' ELSE 'integer' END $$",
    "CREATE FUNCTION litebus_typeof(INTEGER) RETURNS TEXT LANGUAGE sql IMMUTABLE AS
     $$ SELECT CASE WHEN $1 IS NULL THEN 'null' ELSE 'integer' END $$",
    "CREATE FUNCTION litebus_typeof(TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS
     $$ SELECT CASE WHEN $1 IS NULL THEN 'null' ELSE 'text' END $$",
    "CREATE FUNCTION litebus_typeof(BYTEA) RETURNS TEXT LANGUAGE sql IMMUTABLE AS
     $$ SELECT CASE WHEN $1 IS NULL THEN 'null' ELSE 'blob' END $$",
    "CREATE FUNCTION litebus_blob(BYTEA) RETURNS BYTEA LANGUAGE sql IMMUTABLE AS $$ SELECT $1 $$",
    "CREATE FUNCTION litebus_blob(TEXT) RETURNS BYTEA LANGUAGE sql IMMUTABLE AS
     $$ SELECT convert_to($1, 'UTF8') $$",
    "CREATE TABLE litebus_messages (
        seq          BIGINT PRIMARY KEY,
        topic        TEXT NOT NULL,
        id           TEXT NOT NULL,
        payload      BYTEA NOT NULL,
        metadata     TEXT NOT NULL DEFAULT '{}',
        msg_key      TEXT,
        deliver_at   BIGINT NOT NULL DEFAULT 0,
        published_at BIGINT,
        priority     BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE UNIQUE INDEX litebus_messages_by_id ON litebus_messages (topic, id)",
    "CREATE INDEX litebus_messages_by_topic ON litebus_messages (topic, seq)",
    "CREATE INDEX litebus_messages_by_key ON litebus_messages (topic, msg_key, seq)
        WHERE msg_key IS NOT NULL",
    "CREATE INDEX litebus_messages_prioritized ON litebus_messages (topic, seq)
        WHERE priority > 0",
    "CREATE TABLE litebus_groups (
        topic          TEXT NOT NULL,
        grp            TEXT NOT NULL,
        ordering       TEXT NOT NULL,
        max_in_flight  BIGINT NOT NULL,
        max_attempts   BIGINT NOT NULL,
        dead_letter    TEXT NOT NULL,
        start_after    BIGINT NOT NULL,
        cursor         BIGINT NOT NULL,
        dead_lettered  BIGINT NOT NULL DEFAULT 0,
        head_seq       BIGINT,
        head_attempt   BIGINT NOT NULL DEFAULT 0,
        holder         TEXT,
        lease_until    BIGINT,
        ready_at       BIGINT NOT NULL DEFAULT 0,
        pruned         BIGINT NOT NULL DEFAULT 0,
        generation     BIGINT NOT NULL DEFAULT 0,
        backoff_base   BIGINT NOT NULL DEFAULT 0,
        backoff_max    BIGINT NOT NULL DEFAULT 0,
        backoff_jitter BIGINT NOT NULL DEFAULT 0,
        backoff_seed   BIGINT NOT NULL DEFAULT 0,
        rate_max       BIGINT,
        rate_period    BIGINT,
        rate_start     BIGINT NOT NULL DEFAULT 0,
        rate_count     BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (topic, grp)
    )",
    "CREATE TABLE litebus_handouts (
        topic       TEXT NOT NULL,
        grp         TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        msg_key     TEXT,
        attempt     BIGINT NOT NULL DEFAULT 0,
        ready_at    BIGINT NOT NULL,
        consumer    TEXT,
        lease_until BIGINT,
        redriven    BIGINT NOT NULL DEFAULT 0,
        priority    BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (topic, grp, seq)
    )",
    "CREATE INDEX litebus_handouts_by_lease ON litebus_handouts (topic, grp, lease_until)
        WHERE consumer IS NOT NULL",
    "CREATE INDEX litebus_handouts_by_consumer ON litebus_handouts (topic, grp, consumer)
        WHERE consumer IS NOT NULL",
    "CREATE INDEX litebus_handouts_by_key ON litebus_handouts (topic, grp, msg_key, seq)
        WHERE msg_key IS NOT NULL",
    "CREATE INDEX litebus_handouts_prioritized
     ON litebus_handouts (topic, grp, priority DESC, seq) WHERE priority > 0",
    "CREATE TABLE litebus_topics (
        topic          TEXT PRIMARY KEY,
        until_consumed BIGINT NOT NULL DEFAULT 0,
        max_age        BIGINT,
        max_messages   BIGINT,
        max_bytes      BIGINT,
        dedupe_window  BIGINT,
        messages       BIGINT NOT NULL DEFAULT 0,
        bytes          BIGINT NOT NULL DEFAULT 0,
        pruned_to      BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE TABLE litebus_dedupe (
        topic TEXT NOT NULL,
        id    TEXT NOT NULL,
        seq   BIGINT NOT NULL,
        until BIGINT NOT NULL,
        PRIMARY KEY (topic, id)
    )",
    "CREATE TABLE litebus_tombstones (topic TEXT PRIMARY KEY)",
    "CREATE TABLE litebus_taken_back (
        seq   BIGINT PRIMARY KEY,
        topic TEXT NOT NULL
    )",
    PG_MESSAGE_IN,
    "CREATE TRIGGER litebus_message_in BEFORE INSERT ON litebus_messages
     FOR EACH ROW EXECUTE FUNCTION litebus_message_in()",
    PG_MESSAGES_STORED,
    PG_MESSAGES_STORED_TRIGGER,
    // `litebus_topic_shrinks` and `litebus_taken_back_gone`.
    "CREATE FUNCTION litebus_message_gone() RETURNS trigger LANGUAGE plpgsql
     SET search_path FROM CURRENT AS $$
     BEGIN
        UPDATE litebus_topics SET messages = messages - 1, bytes = bytes - length(OLD.payload),
            pruned_to = GREATEST(pruned_to, OLD.seq)
        WHERE topic = OLD.topic;
        DELETE FROM litebus_taken_back WHERE seq = OLD.seq;
        RETURN NULL;
     END $$",
    "CREATE TRIGGER litebus_message_gone AFTER DELETE ON litebus_messages
     FOR EACH ROW EXECUTE FUNCTION litebus_message_gone()",
    PG_HANDOUT_GONE,
    "CREATE TRIGGER litebus_handout_gone AFTER DELETE ON litebus_handouts
     FOR EACH ROW EXECUTE FUNCTION litebus_handout_gone()",
    PG_ORDERED_SETTLED,
    PG_ORDERED_SETTLED_TRIGGER,
    PG_NOTIFY,
    "CREATE TRIGGER litebus_messages_notify AFTER INSERT OR UPDATE OR DELETE ON litebus_messages
     FOR EACH STATEMENT EXECUTE FUNCTION litebus_notify()",
    "CREATE TRIGGER litebus_handouts_notify AFTER INSERT OR UPDATE OR DELETE ON litebus_handouts
     FOR EACH STATEMENT EXECUTE FUNCTION litebus_notify()",
    "CREATE TRIGGER litebus_groups_notify AFTER INSERT OR UPDATE OR DELETE ON litebus_groups
     FOR EACH STATEMENT EXECUTE FUNCTION litebus_notify()",
    "INSERT INTO litebus_meta (name, value)
     VALUES ('schema_version', 17), ('generations', 0), ('last_seq', 0)",
];

/// `litebus_ordered_settled` ([`ORDERED_SETTLED_TRIGGER`]) on PostgreSQL.
const PG_ORDERED_SETTLED: &str = "CREATE OR REPLACE FUNCTION litebus_ordered_settled()
     RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
     BEGIN
        DELETE FROM litebus_handouts
        WHERE topic = NEW.topic AND grp = NEW.grp
          AND (seq = NEW.cursor AND NEW.cursor <> OLD.cursor
               OR seq = OLD.head_seq AND OLD.head_seq <= NEW.cursor
                  AND NEW.head_seq IS DISTINCT FROM OLD.head_seq);
        RETURN NULL;
     END $$";

/// [`PG_ORDERED_SETTLED`]'s trigger.
const PG_ORDERED_SETTLED_TRIGGER: &str = "CREATE TRIGGER litebus_ordered_settled
     AFTER UPDATE ON litebus_groups
     FOR EACH ROW WHEN (NEW.ordering = 'ordered' AND (NEW.cursor <> OLD.cursor
          OR (OLD.head_seq <= NEW.cursor AND NEW.head_seq IS DISTINCT FROM OLD.head_seq)))
     EXECUTE FUNCTION litebus_ordered_settled()";

/// A PostgreSQL store of version 14 to 15: `litebus_ordered_settled` as on
/// SQLite (migration 15).
const PG_TO_15: &[&str] = &[
    "DROP TRIGGER litebus_ordered_settled ON litebus_groups",
    PG_ORDERED_SETTLED,
    PG_ORDERED_SETTLED_TRIGGER,
];

/// `litebus_next_of_key` and `litebus_redriven_gone` on PostgreSQL. A
/// per-key group's head that goes hands out its key's next message up to
/// the group's cursor, under the store's write lock (version 16): an ack
/// is one `DELETE` outside the engine's transactions, and without the lock
/// its trigger read the cursor from before another host's take-in still
/// in progress, which in turn passed over the key's next message (its
/// head was there): the message was in no handout, never delivered. With
/// the lock the trigger's `INSERT` (a statement of its own, so it reads
/// what committed while it waited) sees that take-in's cursor.
const PG_HANDOUT_GONE: &str = concat!(
    "CREATE OR REPLACE FUNCTION litebus_handout_gone() RETURNS trigger LANGUAGE plpgsql
     SET search_path FROM CURRENT AS $$
     BEGIN
        IF OLD.msg_key IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(1818386274, hashtext(TG_TABLE_SCHEMA));
            INSERT INTO litebus_handouts (topic, grp, seq, msg_key, attempt, ready_at) ",
    next_of_key!(
        "m.topic, OLD.grp, m.seq, m.msg_key, 0, m.deliver_at",
        "OLD.topic",
        "OLD.grp",
        "OLD.msg_key",
        "OLD.seq"
    ),
    "
            ON CONFLICT DO NOTHING;
        END IF;
        IF OLD.redriven <> 0 THEN
            DELETE FROM litebus_messages WHERE seq = OLD.seq;
        END IF;
        RETURN NULL;
     END $$"
);

/// A PostgreSQL store of version 15 to 16: [`PG_HANDOUT_GONE`].
const PG_TO_16: &[&str] = &[PG_HANDOUT_GONE];

/// `litebus_notify`: one `NOTIFY litebus` per transaction that changes
/// messages, handouts or groups (PostgreSQL folds a transaction's equal
/// notifications into one), with the schema and the writing driver's
/// token, unless the transaction says it wakes nobody (`litebus.quiet`,
/// version 17): a claim apart only takes work. A notifying commit holds
/// the database's notification queue lock from its commit's start to its
/// end, so such commits of every host take turns; claims apart stay out of
/// that line.
const PG_NOTIFY: &str = "CREATE OR REPLACE FUNCTION litebus_notify() RETURNS trigger
     LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
     BEGIN
        IF COALESCE(current_setting('litebus.quiet', true), '') <> 'on' THEN
            PERFORM pg_notify('litebus',
                TG_TABLE_SCHEMA || ' ' || COALESCE(current_setting('litebus.origin', true), ''));
        END IF;
        RETURN NULL;
     END $$";

/// A PostgreSQL store of version 16 to 17: [`PG_NOTIFY`].
const PG_TO_17: &[&str] = &[PG_NOTIFY];

/// The seq of a message `INSERT`ed into a PostgreSQL store, under the
/// store's write lock: the first row of a transaction reads the last seq
/// from `litebus_meta` and each row counts on from there in a setting of
/// the transaction (`litebus.seq_<md5 of the schema>`, rolled back with
/// it or with its savepoint); `litebus_messages_stored` writes the count
/// back once per statement. (An `UPDATE` of `litebus_meta` per row made a
/// multi-row `INSERT` of 100 messages cost about 2 ms on the server: each
/// update of a row that the transaction already updated walks every
/// version it made.)
const PG_MESSAGE_IN: &str = "CREATE OR REPLACE FUNCTION litebus_message_in() RETURNS trigger
     LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
     DECLARE
        setting TEXT := 'litebus.seq_' || md5(TG_TABLE_SCHEMA);
        high BIGINT := NULLIF(current_setting(setting, true), '')::BIGINT;
     BEGIN
        IF high IS NULL THEN
            PERFORM pg_advisory_xact_lock(1818386274, hashtext(TG_TABLE_SCHEMA));
            SELECT m.value INTO high FROM litebus_meta m WHERE m.name = 'last_seq';
        END IF;
        NEW.seq := high + 1;
        PERFORM set_config(setting, NEW.seq::TEXT, true);
        RETURN NEW;
     END $$";

/// What an `INSERT` into `litebus_messages` does once per statement, over
/// the rows it stored: SQLite's `litebus_deleted_topic` and
/// `litebus_remembered_id` (the statement fails whole),
/// `litebus_topic_grows` and `litebus_prioritized`, and the last seq
/// `litebus_message_in` counted.
const PG_MESSAGES_STORED: &str = "CREATE OR REPLACE FUNCTION litebus_messages_stored()
     RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
     DECLARE
        high BIGINT := NULLIF(current_setting('litebus.seq_' || md5(TG_TABLE_SCHEMA), true), '')::BIGINT;
     BEGIN
        IF EXISTS (SELECT 1 FROM litebus_stored n JOIN litebus_tombstones t ON t.topic = n.topic) THEN
            RAISE EXCEPTION 'litebus: the topic was deleted';
        END IF;
        IF EXISTS (SELECT 1 FROM litebus_stored n JOIN litebus_dedupe d
                   ON d.topic = n.topic AND d.id = n.id AND d.until > n.published_at) THEN
            RAISE EXCEPTION 'UNIQUE constraint failed: litebus_dedupe.id'
                USING ERRCODE = 'unique_violation';
        END IF;
        IF high IS NOT NULL THEN
            UPDATE litebus_meta m SET value = high WHERE m.name = 'last_seq' AND m.value < high;
        END IF;
        UPDATE litebus_topics t SET messages = t.messages + n.count, bytes = t.bytes + n.bytes
        FROM (SELECT topic, COUNT(*) AS count, SUM(length(payload)) AS bytes
              FROM litebus_stored GROUP BY topic) n
        WHERE t.topic = n.topic;
        INSERT INTO litebus_handouts (topic, grp, seq, msg_key, attempt, ready_at, priority)
        SELECT n.topic, g.grp, n.seq, NULL, 0, n.deliver_at, n.priority
        FROM litebus_stored n JOIN litebus_groups g
          ON g.topic = n.topic AND g.ordering = 'shared' AND g.cursor < n.seq
        WHERE n.priority > 0
        ON CONFLICT DO NOTHING;
        RETURN NULL;
     END $$";

/// [`PG_MESSAGES_STORED`]'s trigger.
const PG_MESSAGES_STORED_TRIGGER: &str = "CREATE TRIGGER litebus_messages_stored
     AFTER INSERT ON litebus_messages REFERENCING NEW TABLE AS litebus_stored
     FOR EACH STATEMENT EXECUTE FUNCTION litebus_messages_stored()";

/// A PostgreSQL store of version 13 to 14: the message triggers that ran
/// per row run per statement where they can.
const PG_TO_14: &[&str] = &[
    "DROP TRIGGER litebus_message_stored ON litebus_messages",
    "DROP FUNCTION litebus_message_stored()",
    PG_MESSAGE_IN,
    PG_MESSAGES_STORED,
    PG_MESSAGES_STORED_TRIGGER,
];

/// How the engine begins a write transaction on PostgreSQL: it takes the
/// store's write lock (the one `litebus_message_in` takes), so the
/// transactions of every driver on a store, on any host, run one at a
/// time, as SQLite's `BEGIN IMMEDIATE` makes them.
pub const PG_BEGIN: &str =
    "BEGIN; SELECT pg_advisory_xact_lock(1818386274, hashtext(current_schema()))";

/// `hot::NEXT_OF_KEY`, for the row that went.
const NEXT_OF_KEY_TRIGGER: &str = concat!(
    "CREATE TRIGGER litebus_next_of_key AFTER DELETE ON litebus_handouts
     WHEN old.msg_key IS NOT NULL
     BEGIN
        INSERT OR IGNORE INTO litebus_handouts (topic, grp, seq, msg_key, attempt, ready_at) ",
    next_of_key!(
        "m.topic, old.grp, m.seq, m.msg_key, 0,
         CASE WHEN typeof(m.deliver_at) = 'integer' THEN m.deliver_at ELSE 0 END",
        "old.topic",
        "old.grp",
        "old.msg_key",
        "old.seq"
    ),
    ";
     END"
);

/// Brings a database to [`SCHEMA_VERSION`], inside the driver's write
/// transaction. A database written by a newer litebus is refused with an
/// error before anything is changed.
pub async fn migrate(conn: &mut dyn Conn) -> Result<()> {
    let postgres = conn.dialect() == Dialect::Postgres;
    let has_meta = !conn
        .query(
            if postgres {
                "SELECT 1 FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = 'litebus_meta'"
            } else {
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'litebus_meta'"
            },
            Vec::new(),
        )
        .await?
        .is_empty();
    let version = if has_meta {
        let rows = conn
            .query(
                "SELECT value FROM litebus_meta WHERE name = 'schema_version'",
                Vec::new(),
            )
            .await?;
        match rows.first() {
            Some(row) => row.uint(0)?,
            None => return Err(Error::Corrupt("litebus_meta has no schema_version".into())),
        }
    } else {
        0
    };
    if version > SCHEMA_VERSION {
        return Err(DriverError::fatal(format!(
            "the database has litebus schema version {version}; this build knows up to \
             {SCHEMA_VERSION}: open it with a newer litebus"
        ))
        .into());
    }
    if postgres {
        // The first PostgreSQL stores were made at version 13.
        let steps: &[&[&str]] = match version {
            0 => &[PG_SCHEMA],
            13 => &[PG_TO_14, PG_TO_15, PG_TO_16, PG_TO_17],
            14 => &[PG_TO_15, PG_TO_16, PG_TO_17],
            15 => &[PG_TO_16, PG_TO_17],
            16 => &[PG_TO_17],
            _ => &[],
        };
        for statements in steps {
            for sql in *statements {
                conn.execute(sql, Vec::new()).await?;
            }
        }
        if (13..SCHEMA_VERSION).contains(&version) {
            conn.execute(
                "UPDATE litebus_meta SET value = ?1 WHERE name = 'schema_version'",
                vec![Value::from(SCHEMA_VERSION)],
            )
            .await?;
        }
        return Ok(());
    }
    for (from, statements) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        for sql in *statements {
            conn.execute(sql, Vec::new()).await?;
        }
        if from > 0 {
            conn.execute(
                "UPDATE litebus_meta SET value = ?1 WHERE name = 'schema_version'",
                vec![Value::from(from as u64 + 1)],
            )
            .await?;
        }
    }
    // Earlier builds copied a `deliver_at` that plain SQL wrote as text into
    // the handout's ready time, where it never compared as due: such a
    // message was never claimed nor dead-lettered. Due now, it is claimed
    // and dead-lettered as undecodable. (Handouts hold only live work, so
    // this look is short.)
    conn.execute(
        "UPDATE litebus_handouts SET ready_at = 0 WHERE typeof(ready_at) <> 'integer'",
        Vec::new(),
    )
    .await?;
    Ok(())
}
