//! What only a real PostgreSQL server shows: connections killed under the
//! driver (`pg_terminate_backend`), plain SQL and the application's own
//! transactions beside it, a schema from a newer build. Against the server
//! `LITEBUS_PG_URL` names; each test has a schema of its own.

use std::time::Duration;

use litebus::{Bus, BusOptions, GroupOptions, Message, Order};
use litebus_postgres::conformance::url;
use litebus_postgres::{PgDriver, PgOptions};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

const WAIT: Duration = Duration::from_secs(10);

/// The server as the tests share it: the restart test has it alone.
static SERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A fresh schema for `test`.
async fn schema(url: &str, test: &str) -> String {
    let schema = format!("litebus_test_{test}_{}", std::process::id());
    admin(url, &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await;
    schema
}

/// Runs `sql` on a connection of its own.
async fn admin(url: &str, sql: &str) -> u64 {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
    done.rows_affected()
}

/// Drops `schema`, at a test's end (a failed test leaves its schema, to
/// look at).
async fn dropped(url: &str, schema: &str) {
    admin(url, &format!("DROP SCHEMA \"{schema}\" CASCADE")).await;
}

/// Terminates the server connections named `mark` (each test that kills
/// has a mark of its own); how many.
async fn kill(url: &str, mark: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let killed = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = $1 AND pid <> pg_backend_pid()) AS k",
    )
    .bind(mark)
    .fetch_one(&mut conn)
    .await
    .expect("pg_terminate_backend");
    let _ = conn.close().await;
    killed
}

/// A bus on `schema`, its connections named `mark`.
async fn bus(url: &str, schema: &str, mark: &str) -> Bus {
    let connect: PgConnectOptions = url.parse().expect("URL");
    let driver = PgDriver::connect_options(
        connect.application_name(mark),
        PgOptions::new().schema(schema),
    )
    .await
    .expect("open");
    Bus::open(driver, BusOptions::new()).expect("bus")
}

fn text(d: &litebus::Delivery) -> String {
    String::from_utf8_lossy(d.message().payload()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_wakes_after_its_listening_connection_is_killed() {
    let Some(url) = url() else { return };
    let _shared = SERVER.read().await;
    let schema = schema(&url, "listener").await;
    let publisher = bus(&url, &schema, "litebus-test-publisher").await;
    let waiter = bus(&url, &schema, "litebus-test-waiter").await;
    let sub = std::sync::Arc::new(
        waiter
            .subscribe("t", "g", GroupOptions::new())
            .await
            .unwrap(),
    );
    for round in 0..3 {
        let waiting = tokio::spawn({
            let sub = sub.clone();
            async move {
                let d = sub.recv().await.unwrap();
                d.ack().await.unwrap();
                text(&d)
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Every connection of the waiting driver: its listener among them.
        assert!(kill(&url, "litebus-test-waiter").await >= 1);
        let sent = format!("after kill {round}");
        publisher
            .publish("t", Message::new(sent.clone()))
            .await
            .unwrap();
        let got = tokio::time::timeout(WAIT, waiting)
            .await
            .expect("the waiting subscriber was woken")
            .unwrap();
        assert_eq!(got, sent);
    }
    publisher.close().await.unwrap();
    waiter.close().await.unwrap();
    dropped(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_delivery_comes_back_after_its_lease() {
    let Some(url) = url() else { return };
    let _shared = SERVER.read().await;
    let schema = schema(&url, "worker").await;
    let options = GroupOptions::new()
        .order(Order::Shared { max_in_flight: 8 })
        .lease(Duration::from_millis(500));
    let victim = bus(&url, &schema, "litebus-test-victim").await;
    let other = bus(&url, &schema, "litebus-test-other").await;
    for i in 0..4 {
        victim
            .publish(
                "jobs",
                Message::new(format!("job {i}")).with_id(format!("job-{i}")),
            )
            .await
            .unwrap();
    }
    let taken = victim
        .subscribe("jobs", "workers", options.clone())
        .await
        .unwrap()
        .recv()
        .await
        .unwrap();
    assert!(kill(&url, "litebus-test-victim").await >= 1);
    // Its ack on a killed connection either fails (the delivery comes
    // back once its lease ends) or lands on a new connection.
    let acked = taken.ack().await.is_ok();
    let sub = other.subscribe("jobs", "workers", options).await.unwrap();
    let mut got = Vec::new();
    while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(2), sub.recv()).await {
        got.push(text(&d));
        d.ack().await.unwrap();
    }
    got.sort();
    let mut expected: Vec<String> = (0..4).map(|i| format!("job {i}")).collect();
    if acked {
        expected.retain(|j| *j != text(&taken));
    }
    assert_eq!(got, expected, "acked by the killed worker: {acked}");
    victim.close().await.unwrap();
    other.close().await.unwrap();
    dropped(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_by_plain_sql_wakes_subscribers_and_takes_the_next_seq() {
    let Some(url) = url() else { return };
    let _shared = SERVER.read().await;
    let schema = schema(&url, "plain_sql").await;
    let bus = bus(&url, &schema, "litebus-test-plain").await;
    let first = bus.publish("t", Message::new("first")).await.unwrap().seq();
    let sub = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
    sub.recv().await.unwrap().ack().await.unwrap();
    let waiting = tokio::spawn(async move {
        let d = sub.recv().await.unwrap();
        d.ack().await.unwrap();
        (d.seq(), text(&d))
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // An explicit seq is replaced by the store's next.
    let inserted = admin(
        &url,
        &format!(
            "INSERT INTO \"{schema}\".litebus_messages (seq, topic, id, payload)
             VALUES (1, 't', 'from-sql', convert_to('from sql', 'UTF8'))"
        ),
    )
    .await;
    assert_eq!(inserted, 1);
    let (seq, got) = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("woken by the plain INSERT")
        .unwrap();
    assert_eq!(got, "from sql");
    assert!(seq > first, "seq {seq} after {first}");
    bus.close().await.unwrap();
    dropped(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_in_stores_with_the_transaction_or_not_at_all() {
    let Some(url) = url() else { return };
    let _shared = SERVER.read().await;
    let schema = schema(&url, "outbox").await;
    let bus = bus(&url, &schema, "litebus-test-outbox").await;
    let pool = {
        let connect: PgConnectOptions = url.parse().unwrap();
        sqlx::PgPool::connect_with(connect.options([("search_path", schema.as_str())]))
            .await
            .unwrap()
    };
    let mut tx = pool.begin().await.unwrap();
    litebus_postgres::publish_in(&mut tx, "t", Message::new("kept").with_id("kept"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    litebus_postgres::publish_in(&mut tx, "t", Message::new("dropped").with_id("dropped"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let read: Vec<String> = bus
        .read("t", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(r.message().payload()).into_owned())
        .collect();
    assert_eq!(read, ["kept"]);
    pool.close().await;
    bus.close().await.unwrap();
    dropped(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_left_alone() {
    let Some(url) = url() else { return };
    let _shared = SERVER.read().await;
    let schema = schema(&url, "newer").await;
    bus(&url, &schema, "litebus-test-newer")
        .await
        .close()
        .await
        .unwrap();
    let version =
        format!("UPDATE \"{schema}\".litebus_meta SET value = 99 WHERE name = 'schema_version'");
    assert_eq!(admin(&url, &version).await, 1);
    let err = PgDriver::connect_with(&url, PgOptions::new().schema(&schema))
        .await
        .expect_err("a newer schema opened");
    assert!(err.to_string().contains("newer litebus"), "{err}");
    // Left as it was.
    assert_eq!(admin(&url, &version).await, 1);
    dropped(&url, &schema).await;
}

/// The command that restarts the server (`scripts/test` names its own).
const RESTART: &str = "LITEBUS_PG_RESTART";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_under_load_loses_nothing_that_returned() {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(url) = url() else { return };
    let _alone = SERVER.write().await;
    let Ok(restart) = std::env::var(RESTART) else {
        eprintln!("skipped: set {RESTART} to a command that restarts the server");
        return;
    };
    let schema = schema(&url, "restart").await;
    let bus = bus(&url, &schema, "litebus-test-restart").await;
    let options = GroupOptions::new()
        .order(Order::Shared { max_in_flight: 16 })
        .prefetch(4)
        .lease(Duration::from_millis(500));
    let sub = Arc::new(bus.subscribe("jobs", "g", options).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn({
        let (bus, stop) = (bus.clone(), stop.clone());
        async move {
            let (mut stored, mut failed) = (Vec::new(), 0);
            for i in 0.. {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let id = format!("job-{i}");
                let published = bus
                    .publish("jobs", Message::new(id.clone()).with_id(id.clone()))
                    .await;
                if published.is_ok() {
                    stored.push(id);
                } else {
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (stored, failed)
        }
    });
    let consumer = tokio::spawn({
        let (sub, stop) = (sub.clone(), stop.clone());
        async move {
            // Ids whose ack returned Ok, and any delivered again after it.
            let (mut acked, mut again) = (BTreeSet::new(), Vec::new());
            while !stop.load(Ordering::Acquire) {
                let Ok(next) = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await
                else {
                    continue;
                };
                let Ok(d) = next else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let id = d.message().id().to_owned();
                if acked.contains(&id) {
                    again.push(id.clone());
                }
                if d.ack().await.is_ok() {
                    acked.insert(id);
                }
            }
            (acked, again)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = std::process::Command::new("sh")
        .args(["-c", &restart])
        .status()
        .expect("restart command");
    assert!(restarted.success(), "{restart}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Release);
    let (stored, failed) = publisher.await.unwrap();
    let (acked, again) = consumer.await.unwrap();
    eprintln!(
        "restart: {} publishes returned, {failed} failed, {} acked",
        stored.len(),
        acked.len()
    );
    assert!(again.is_empty(), "acked, then delivered again: {again:?}");
    // Everything whose publish returned is there, after the restart too.
    let mut ids = BTreeSet::new();
    let mut from = 0;
    loop {
        let page = bus.read("jobs", from, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq() + 1;
        ids.extend(page.iter().map(|r| r.message().id().to_owned()));
    }
    let lost: Vec<&String> = stored.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "publishes that returned are gone: {lost:?}"
    );
    assert!(!stored.is_empty() && !acked.is_empty());
    // The group goes on: the rest is delivered once the restart is over,
    // and then nothing is left. (An ack that failed as its commit's answer
    // was lost may have landed: such a message is not delivered again.)
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(3), sub.recv()).await {
        let d = next.unwrap();
        let id = d.message().id().to_owned();
        assert!(!acked.contains(&id), "{id} was acked, and came back");
        d.ack().await.unwrap();
    }
    let stats = bus.stats("jobs").await.unwrap();
    let g = stats.groups.iter().find(|g| g.group == "g").unwrap();
    assert_eq!((g.ready, g.in_flight), (0, 0), "{g:?}");
    bus.close().await.unwrap();
    dropped(&url, &schema).await;
}

/// A store made at schema 13 (its message triggers ran per row) opens at
/// the current version: the triggers are replaced, the seqs go on from
/// the last one without a gap, and the topic's count stays right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_13_store_is_brought_up_to_date() {
    let Some(url) = url() else { return };
    let _shared = SERVER.read().await;
    let schema = schema(&url, "schema13").await;
    let bus13 = bus(&url, &schema, "litebus-test-schema13").await;
    let batch = |from: usize| (from..from + 3).map(|i| Message::new(format!("m{i}")));
    bus13.publish_batch("t", batch(0)).await.unwrap();
    bus13.close().await.unwrap();
    // Schema 13's message triggers, as that build made them.
    admin(
        &url,
        &format!(
            "SET search_path TO \"{schema}\";
             DROP TRIGGER litebus_messages_stored ON litebus_messages;
             DROP FUNCTION litebus_messages_stored();
             CREATE OR REPLACE FUNCTION litebus_message_in() RETURNS trigger LANGUAGE plpgsql
             SET search_path FROM CURRENT AS $$
             BEGIN
                IF EXISTS (SELECT 1 FROM litebus_tombstones t WHERE t.topic = NEW.topic) THEN
                    RAISE EXCEPTION 'litebus: the topic was deleted';
                END IF;
                PERFORM pg_advisory_xact_lock(1818386274, hashtext(TG_TABLE_SCHEMA));
                UPDATE litebus_meta SET value = value + 1 WHERE name = 'last_seq'
                RETURNING value INTO NEW.seq;
                RETURN NEW;
             END $$;
             CREATE FUNCTION litebus_message_stored() RETURNS trigger LANGUAGE plpgsql
             SET search_path FROM CURRENT AS $$
             BEGIN
                UPDATE litebus_topics SET messages = messages + 1,
                    bytes = bytes + length(NEW.payload)
                WHERE topic = NEW.topic;
                RETURN NULL;
             END $$;
             CREATE TRIGGER litebus_message_stored AFTER INSERT ON litebus_messages
             FOR EACH ROW EXECUTE FUNCTION litebus_message_stored();
             UPDATE litebus_meta SET value = 13 WHERE name = 'schema_version';
             INSERT INTO litebus_messages (topic, id, payload)
             VALUES ('t', 'a', convert_to('m3', 'UTF8')), ('t', 'b', convert_to('m4', 'UTF8'));"
        ),
    )
    .await;
    let bus = bus(&url, &schema, "litebus-test-schema13").await;
    bus.publish_batch("t", batch(5)).await.unwrap();
    let seqs: Vec<u64> = bus
        .read("t", 0, 100)
        .await
        .unwrap()
        .iter()
        .map(litebus::Record::seq)
        .collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<u64>>());
    assert_eq!(bus.stats("t").await.unwrap().messages, 8);
    let version = format!(
        "UPDATE \"{schema}\".litebus_meta SET value = value WHERE name = 'schema_version'
         AND value = {}",
        litebus_sql::SCHEMA_VERSION
    );
    assert_eq!(admin(&url, &version).await, 1, "not at the current version");
    let old = format!(
        "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = '{schema}' AND p.proname = 'litebus_message_stored'"
    );
    assert_eq!(
        admin(&url, &old).await,
        0,
        "schema 13's trigger function is left"
    );
    bus.close().await.unwrap();
    dropped(&url, &schema).await;
}

/// Waits until a connection named `mark` waits for a lock; false if none
/// does within `WAIT`.
async fn waits_for_a_lock(url: &str, mark: &str) -> bool {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut waiting = false;
    while !waiting && tokio::time::Instant::now() < deadline {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(mark)
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity");
        waiting = n > 0;
        if !waiting {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let _ = conn.close().await;
    waiting
}

/// Two hosts on one per-key group: host B's claim takes in the key's next
/// message (it waits behind the key's head, which host A holds) and, before
/// B commits, A acks the head. The ack alone is one `DELETE` whose trigger
/// hands out the key's next message up to the group's cursor; had it not
/// waited for B's transaction, it would have read the cursor from before
/// B's take-in, and the message would be in no handout, never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_beside_another_hosts_take_in_hands_out_the_keys_next() {
    let Some(url) = url() else { return };
    let _shared = SERVER.read().await;
    let schema = schema(&url, "per_key_hosts").await;
    let options = GroupOptions::new().order(Order::PerKey).prefetch(1);
    let a = bus(&url, &schema, "litebus-test-host-a").await;
    let b = bus(&url, &schema, "litebus-test-host-b").await;
    a.publish("t", Message::new("first").with_key("k"))
        .await
        .unwrap();
    let sub_a = a.subscribe("t", "g", options.clone()).await.unwrap();
    let head = sub_a.recv().await.unwrap();
    assert_eq!(text(&head), "first");
    a.publish("t", Message::new("second").with_key("k"))
        .await
        .unwrap();
    let sub_b = std::sync::Arc::new(b.subscribe("t", "g", options).await.unwrap());

    // The group's row held: B's take-in waits at its cursor's update,
    // after it passed over the key's next message.
    let mut holder = PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT 1 FROM \"{schema}\".litebus_groups WHERE grp = 'g' FOR UPDATE"
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    let receiving = tokio::spawn({
        let sub_b = sub_b.clone();
        async move {
            let d = sub_b.recv().await.unwrap();
            d.ack().await.unwrap();
            text(&d)
        }
    });
    assert!(
        waits_for_a_lock(&url, "litebus-test-host-b").await,
        "B's claim does not take in"
    );
    let acking = tokio::spawn(async move { head.ack().await.unwrap() });
    // The ack waits for B's transaction (or, wrongly, ends at once).
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        while !acking.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    let _ = holder.close().await;
    tokio::time::timeout(WAIT, acking)
        .await
        .expect("the ack ends")
        .unwrap();
    // The key's next message is delivered, to either host.
    let from_a = async {
        let d = sub_a.recv().await.unwrap();
        d.ack().await.unwrap();
        text(&d)
    };
    let got = tokio::select! {
        got = receiving => got.unwrap(),
        got = from_a => got,
        () = tokio::time::sleep(WAIT) => panic!("the key's next message is never delivered"),
    };
    assert_eq!(got, "second");
    a.close().await.unwrap();
    b.close().await.unwrap();
    dropped(&url, &schema).await;
}

/// A consumer (prefetch 1) of shared group `g` of `t` on `bus`, after
/// `n` messages `m1…` were published and it got and acked `m1`: that first
/// claim took every message into the group, so the next claims are
/// claims apart.
async fn taken_in(bus: &Bus, n: usize) -> litebus::Subscription {
    let sub = bus
        .subscribe(
            "t",
            "g",
            GroupOptions::new()
                .order(Order::Shared { max_in_flight: 10 })
                .prefetch(1),
        )
        .await
        .unwrap();
    for i in 1..=n {
        bus.publish("t", Message::new(format!("m{i}")))
            .await
            .unwrap();
    }
    let first = sub.recv().await.unwrap();
    assert_eq!(text(&first), "m1");
    first.ack().await.unwrap();
    sub
}

/// A claim of a shared group passes over a row another transaction holds
/// (`FOR UPDATE SKIP LOCKED`) rather than waiting for it, and the row is
/// claimed once it is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_passes_over_a_row_another_transaction_holds() {
    let Some(url) = url() else { return };
    let _shared = SERVER.read().await;
    let schema = schema(&url, "skip_locked").await;
    let bus = bus(&url, &schema, "litebus-test-skip-locked").await;
    let sub = taken_in(&bus, 4).await;
    let mut holder = PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT 1 FROM \"{schema}\".litebus_handouts WHERE seq = 2 FOR UPDATE"
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    let next = tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("the claim waits for the row held")
        .unwrap();
    assert_eq!(text(&next), "m3");
    next.ack().await.unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    let _ = holder.close().await;
    let mut rest = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(WAIT, sub.recv())
            .await
            .expect("the rest")
            .unwrap();
        rest.push(text(&d));
        d.ack().await.unwrap();
    }
    rest.sort();
    assert_eq!(rest, ["m2", "m4"]);
    bus.close().await.unwrap();
    dropped(&url, &schema).await;
}

/// The payload of the next `litebus` notification of `schema` or a
/// marker (the tests beside this one notify too).
async fn notified(listener: &mut sqlx::postgres::PgListener, schema: &str) -> String {
    loop {
        let payload = tokio::time::timeout(WAIT, listener.recv())
            .await
            .expect("a notification")
            .expect("the listener")
            .payload()
            .to_owned();
        if payload.starts_with("marker") || payload.starts_with(&format!("{schema} ")) {
            return payload;
        }
    }
}

/// A claim apart (a shared group's, leasing what the group has taken in)
/// sends no `NOTIFY`: it wakes nobody, and a notifying commit takes its
/// turn at the database's notification queue. Notifications arrive in
/// commit order, so the marker sent after the claim is the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_apart_notifies_nobody() {
    let Some(url) = url() else { return };
    let _shared = SERVER.read().await;
    let schema = schema(&url, "quiet_claim").await;
    let bus = bus(&url, &schema, "litebus-test-quiet").await;
    let mut listener = sqlx::postgres::PgListener::connect(&url).await.unwrap();
    listener.listen("litebus").await.unwrap();
    // (The take-in is a write transaction, which notifies.)
    let sub = taken_in(&bus, 3).await;
    admin(&url, "NOTIFY litebus, 'marker 1'").await;
    while notified(&mut listener, &schema).await != "marker 1" {}
    let d = sub.recv().await.unwrap();
    assert_eq!(text(&d), "m2");
    admin(&url, "NOTIFY litebus, 'marker 2'").await;
    assert_eq!(notified(&mut listener, &schema).await, "marker 2");
    // An ack frees a place in the group: that notifies.
    d.ack().await.unwrap();
    admin(&url, "NOTIFY litebus, 'marker 3'").await;
    assert_ne!(
        notified(&mut listener, &schema).await,
        "marker 3",
        "the ack notified"
    );
    bus.close().await.unwrap();
    dropped(&url, &schema).await;
}

/// Calls run in call order, claims apart too: an ack of a delivery whose
/// lease ran out, made before another consumer's claim of the group and
/// run in the same batch, lands; the claim does not take the message
/// first (it would have leased it again, and the ack found it gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_made_before_a_claim_lands_before_it() {
    use litebus::driver::{
        Append, Claim, Driver, EnsureGroup, GroupSpec, Settle, Settlement, prepare_message,
    };
    use litebus::{Backoff, Timestamp};
    let Some(url) = url() else { return };
    let _shared = SERVER.read().await;
    let schema = schema(&url, "ack_then_claim").await;
    let driver = PgDriver::connect_with(&url, PgOptions::new().schema(&schema))
        .await
        .unwrap();
    let spec = GroupSpec {
        order: Order::Shared { max_in_flight: 8 },
        max_attempts: 5,
        backoff: Backoff::none(),
        rate_limit: None,
        max_in_flight: None,
        dead_letter: "t.dlq".into(),
    };
    let (topic, group) = ("t", "g");
    driver
        .ensure_group(EnsureGroup {
            topic,
            group,
            spec: &spec,
            start_after: Some(0),
        })
        .await
        .unwrap();
    let message = prepare_message(topic, Message::new("m"), 1 << 20, Timestamp::ZERO)
        .map(std::sync::Arc::new)
        .unwrap();
    driver
        .append(Append {
            topic,
            messages: &[message],
            expected_last: None,
            now: Timestamp::ZERO,
            handoffs: &[],
        })
        .await
        .unwrap();
    let claim = |consumer, now: u64| Claim {
        topic,
        group,
        consumer,
        now: Timestamp::from_millis(now),
        lease_until: Timestamp::from_millis(now + 10),
        max: 4,
        backoff: Backoff::none(),
        rate_limit: None,
    };
    let first = driver.claim(claim("c1", 0)).await.unwrap();
    let d = &first.deliveries[0];
    // Both queued before either runs: one batch, the ack first.
    let ack = driver.settle(Settle {
        topic,
        group,
        seq: d.seq,
        attempt: d.attempt,
        generation: d.generation,
        now: Timestamp::from_millis(20),
        settlement: Settlement::Ack,
        ordered: false,
        next: None,
        backoff: Backoff::none(),
    });
    let later = driver.claim(claim("c2", 20));
    let (acked, claimed) = futures_lite::future::zip(ack, later).await;
    assert!(acked.is_ok(), "the ack made first: {acked:?}");
    assert!(claimed.unwrap().deliveries.is_empty(), "the acked message");
    driver.close().await.unwrap();
    dropped(&url, &schema).await;
}
