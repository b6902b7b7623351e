//! What only sqlx on a SQLite file shows: other connections' commits wake
//! a waiting subscriber, publishing from SQL (the outbox, a trigger), a row
//! written by hand that does not decode, and closing emptying the log.
//! (Bad files and query plans: `files.rs`, the kit's file tests.)

use std::path::Path;
use std::time::Duration;

use litebus::{Bus, BusOptions, Error, GroupOptions, ManualClock, Message, Order, Timestamp};
use litebus_conformance::kit::TempDir;
use litebus_conformance::within;
use litebus_sqlx::{SqlxDriver, publish_in};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// A bus whose clock never moves: it can only wake on notifications.
async fn still_bus(path: &Path) -> Bus {
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    Bus::open(
        SqlxDriver::open(path).await.unwrap(),
        BusOptions::new().clock(clock),
    )
    .unwrap()
}

async fn user_pool(path: &Path) -> sqlx::SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connections_commit_wakes_a_waiting_subscriber() {
    let dir = TempDir::new("wake");
    let path = dir.file("bus.db");
    let waiting = still_bus(&path).await;
    let other = still_bus(&path).await;
    let sub = waiting
        .subscribe("t", "g", GroupOptions::new())
        .await
        .unwrap();
    let (got, published) = within(futures_lite::future::zip(sub.recv(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        other.publish("t", Message::new("from elsewhere")).await
    }))
    .await;
    published.unwrap();
    assert_eq!(got.unwrap().message().payload(), b"from elsewhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_in_commits_with_the_users_transaction() {
    let dir = TempDir::new("outbox");
    let path = dir.file("app.db");
    let bus = still_bus(&path).await;
    let pool = user_pool(&path).await;
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id, status) VALUES (1, 'new')")
        .execute(&mut *tx)
        .await
        .unwrap();
    publish_in(
        &mut tx,
        "orders",
        Message::new("order 1 created").with_id("o-1"),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        bus.stats("orders").await.unwrap().messages,
        0,
        "rolled back: nothing published"
    );

    let sub = bus
        .subscribe("orders", "billing", GroupOptions::new())
        .await
        .unwrap();
    let (got, committed) = within(futures_lite::future::zip(sub.recv(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO orders (id, status) VALUES (1, 'new')")
            .execute(&mut *tx)
            .await
            .unwrap();
        let outcome = publish_in(
            &mut tx,
            "orders",
            Message::new("order 1 created").with_id("o-1"),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        outcome
    }))
    .await;
    let got = got.unwrap();
    assert_eq!((got.seq(), got.message().id()), (committed.seq(), "o-1"));
    assert!(matches!(
        publish_in(
            &mut pool.acquire().await.unwrap(),
            "bad topic",
            Message::new("x")
        )
        .await,
        Err(Error::InvalidName { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_publishes_and_the_message_is_delivered() {
    let dir = TempDir::new("trigger");
    let path = dir.file("app.db");
    let bus = still_bus(&path).await;
    let pool = user_pool(&path).await;
    // The documented way to publish from SQL (see README).
    for sql in [
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL)",
        "CREATE TRIGGER orders_shipped AFTER UPDATE OF status ON orders
         WHEN NEW.status = 'shipped'
         BEGIN
           INSERT OR IGNORE INTO litebus_messages (topic, id, payload, metadata)
           VALUES ('shipments', 'order-' || NEW.id, CAST('shipped ' || NEW.id AS BLOB),
                   json_object('source', 'trigger'));
         END",
        "INSERT INTO orders (id, status) VALUES (7, 'new')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let sub = bus
        .subscribe("shipments", "mail", GroupOptions::new())
        .await
        .unwrap();
    let (got, ()) = within(futures_lite::future::zip(sub.recv(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        sqlx::query("UPDATE orders SET status = 'shipped' WHERE id = 7")
            .execute(&pool)
            .await
            .unwrap();
        // The same change again publishes nothing new: the id dedupes.
        sqlx::query("UPDATE orders SET status = 'shipped' WHERE id = 7")
            .execute(&pool)
            .await
            .unwrap();
    }))
    .await;
    let got = got.unwrap();
    assert_eq!(got.message().payload(), b"shipped 7");
    assert_eq!(got.message().metadata()["source"], "trigger");
    got.ack().await.unwrap();
    assert_eq!(bus.stats("shipments").await.unwrap().messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_does_not_decode_is_dead_lettered_and_the_group_goes_on() {
    let dir = TempDir::new("corrupt-row");
    let path = dir.file("bus.db");
    let bus = still_bus(&path).await;
    let pool = user_pool(&path).await;
    bus.publish("t", Message::new("before").with_id("a"))
        .await
        .unwrap();
    sqlx::query("INSERT INTO litebus_messages (topic, id, payload, metadata) VALUES ('t', 'bad', x'00', '{not json')")
        .execute(&pool)
        .await
        .unwrap();
    bus.publish("t", Message::new("after").with_id("c"))
        .await
        .unwrap();
    let sub = bus
        .subscribe(
            "t",
            "g",
            GroupOptions::new().order(Order::Shared { max_in_flight: 10 }),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(d) = sub.try_recv().await.unwrap() {
        got.push(d.message().id().to_owned());
        d.ack().await.unwrap();
    }
    assert_eq!(got, ["a", "c"]);
    let dlq = bus
        .subscribe("t.dlq", "ops", GroupOptions::new())
        .await
        .unwrap();
    let dead = dlq
        .try_recv()
        .await
        .unwrap()
        .expect("the bad row is a dead letter");
    assert!(dead.message().metadata()["litebus.dead_letter.error"].contains("undecodable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_leaves_the_store_in_the_main_file() {
    let dir = TempDir::new("checkpoint");
    let path = dir.file("bus.db");
    let bus = still_bus(&path).await;
    let sub = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
    bus.publish_batch(
        "t",
        (0..500).map(|i| Message::new(vec![7u8; 500]).with_id(format!("{i}"))),
    )
    .await
    .unwrap();
    for _ in 0..10 {
        within(sub.recv()).await.unwrap().ack().await.unwrap();
    }
    // A receive waiting (for another process's commit too) keeps the
    // watcher's connection open while the bus closes.
    let late = bus
        .subscribe("t", "late", GroupOptions::new().start(litebus::Start::End))
        .await
        .unwrap();
    let (waited, closed) = within(futures_lite::future::zip(late.recv(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        bus.close().await
    }))
    .await;
    assert!(waited.unwrap_err().is_closed());
    closed.unwrap();
    let wal = std::fs::metadata(dir.file("bus.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the log is emptied on close");
    let bus = still_bus(&path).await;
    assert_eq!(bus.stats("t").await.unwrap().messages, 500);
    bus.close().await.unwrap();
}
