//! What only a SQLite file can show: other connections' commits wake a
//! waiting subscriber, publishing from SQL (the outbox, a trigger), claims
//! that are index ranges, and bad files (random bytes, cut, read-only, a
//! directory, a newer schema) refused with clear errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use litebus::conformance::within;
use litebus::{Bus, BusOptions, Error, GroupOptions, ManualClock, Message, Order, Timestamp};
use litebus_sqlx::{SqlxDriver, publish_in};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("litebus-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_acks_are_index_ranges() {
    let dir = TempDir::new("plans");
    let path = dir.file("bus.db");
    let _driver = SqlxDriver::open(&path).await.unwrap();
    let pool = user_pool(&path).await;
    for sql in litebus_sql::hot::ALL {
        let plan = query_plan(&pool, sql).await;
        assert!(!plan.is_empty(), "no plan for {sql}");
        for line in &plan {
            assert!(
                !(line.starts_with("SCAN") && line.contains("litebus_")),
                "a full scan in {sql}:\n{plan:#?}"
            );
        }
    }
    let known = query_plan(&pool, &litebus_sql::hot::known_ids(3)).await;
    assert!(
        known
            .iter()
            .any(|l| l.contains("litebus_messages_by_id (topic=? AND id=?)")),
        "the duplicate check looks up each id: {known:#?}"
    );
}

async fn query_plan(pool: &sqlx::SqlitePool, sql: &str) -> Vec<String> {
    let params = (1..=9).filter(|i| sql.contains(&format!("?{i}"))).count();
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
    for _ in 0..params {
        query = query.bind(1_i64);
    }
    query
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get::<String, _>(row, 3))
        .collect()
}

async fn open_error(path: &Path) -> Error {
    SqlxDriver::open(path)
        .await
        .expect_err("opening should fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_with_clear_errors() {
    let dir = TempDir::new("bad-files");

    let noise = dir.file("noise.db");
    let bytes: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&noise, &bytes).unwrap();
    let e = open_error(&noise).await;
    assert!(matches!(e, Error::Corrupt(_)), "random bytes: {e}");
    assert_eq!(
        std::fs::read(&noise).unwrap(),
        bytes,
        "random bytes: file unchanged"
    );

    let whole = dir.file("whole.db");
    {
        let driver = SqlxDriver::open(&whole).await.unwrap();
        let bus = Bus::open(driver, BusOptions::new()).unwrap();
        bus.publish_batch(
            "t",
            (0..200).map(|i| Message::new(vec![7u8; 500]).with_id(format!("{i}"))),
        )
        .await
        .unwrap();
        // Checkpointed into the main file by the close.
        bus.close().await.unwrap();
    }
    let bytes = std::fs::read(&whole).unwrap();
    // Cut in half, at a page boundary, and one page short.
    for len in [
        bytes.len() / 2,
        bytes.len() / 4096 / 2 * 4096,
        bytes.len() - 4096,
    ] {
        let cut = dir.file(&format!("cut-{len}.db"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = open_error(&cut).await;
        assert!(matches!(e, Error::Corrupt(_)), "cut to {len}: {e}");
        assert_eq!(
            std::fs::read(&cut).unwrap(),
            &bytes[..len],
            "cut to {len}: unchanged"
        );
    }

    let e = open_error(&dir.0).await;
    assert!(e.to_string().contains("directory"), "directory: {e}");

    let newer = dir.file("newer.db");
    drop(SqlxDriver::open(&newer).await.unwrap());
    let pool = user_pool(&newer).await;
    sqlx::query("UPDATE litebus_meta SET value = 99 WHERE name = 'schema_version'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let e = open_error(&newer).await;
    assert!(
        e.to_string().contains("schema version 99"),
        "newer schema: {e}"
    );
    let pool = user_pool(&newer).await;
    let version: i64 =
        sqlx::query_scalar("SELECT value FROM litebus_meta WHERE name = 'schema_version'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(version, 99, "newer schema: nothing changed");
}

/// Makes `path` unwritable: permissions first; where those do not bind (the
/// superuser), the immutable attribute. `None` when neither is possible here.
fn make_read_only(path: &Path) -> Option<ReadOnly> {
    use std::os::unix::fs::PermissionsExt;
    let writable = || std::fs::OpenOptions::new().append(true).open(path).is_ok();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
    if !writable() {
        return Some(ReadOnly(path.to_owned(), false));
    }
    let immutable = std::process::Command::new("chattr")
        .arg("+i")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    let guard = ReadOnly(path.to_owned(), immutable);
    (immutable && !writable()).then_some(guard)
}

/// Undoes [`make_read_only`].
struct ReadOnly(PathBuf, bool);

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.1 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        }
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o644));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_file_is_refused_and_left_as_it_was() {
    let dir = TempDir::new("read-only");
    let path = dir.file("ro.db");
    {
        let bus = Bus::open(SqlxDriver::open(&path).await.unwrap(), BusOptions::new()).unwrap();
        bus.publish("t", Message::new("kept").with_id("a"))
            .await
            .unwrap();
        // Closing checkpoints the log into the main file.
        bus.close().await.unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let Some(read_only) = make_read_only(&path) else {
        // Neither permissions nor `chattr` can stop this user writing here
        // (a superuser on a filesystem without the immutable attribute).
        eprintln!(
            "skipped: cannot make a read-only file in {}",
            dir.0.display()
        );
        return;
    };

    // Either opening fails, or the first write does; both say why.
    match SqlxDriver::open(&path).await {
        Err(e) => assert!(
            e.to_string().contains("readonly") || e.to_string().contains("read-only"),
            "opening a read-only file: {e}"
        ),
        Ok(driver) => {
            let bus = Bus::open(driver, BusOptions::new()).unwrap();
            let e = bus
                .publish("t", Message::new("lost?").with_id("b"))
                .await
                .expect_err("publishing into a read-only file");
            assert!(
                e.to_string().contains("readonly") || e.to_string().contains("read-only"),
                "publishing into a read-only file: {e}"
            );
            bus.close().await.unwrap();
        }
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "file unchanged");

    // Writable again: the message published before is all there is.
    drop(read_only);
    let bus = Bus::open(SqlxDriver::open(&path).await.unwrap(), BusOptions::new()).unwrap();
    let sub = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
    let d = within(sub.recv()).await.unwrap();
    assert_eq!(d.message().id(), "a");
    d.ack().await.unwrap();
    assert!(sub.try_recv().await.unwrap().is_none(), "nothing else");
    bus.close().await.unwrap();
}
