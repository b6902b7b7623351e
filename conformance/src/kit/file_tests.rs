//! What every driver of files must do with a file it is given, and with
//! its own statements: damaged and foreign files are refused with a clear
//! error and left as they are, and the hot statements are index lookups.
//! [`file_tests!`](crate::file_tests) expands them into `#[test]`s for one
//! [`FileDriver`].

use std::path::Path;

use litebus::{Bus, BusOptions, Error, GroupOptions, Message};

use super::{FileDriver, TempDir, make_read_only};

/// A store of 200 messages of 500 bytes, closed (so that the main file
/// holds them all).
async fn filled<D: FileDriver>(path: &Path) {
    let bus = Bus::open(D::open(path).await.unwrap(), BusOptions::new()).unwrap();
    bus.publish_batch(
        "t",
        (0..200).map(|i| Message::new(vec![7u8; 500]).with_id(format!("{i}"))),
    )
    .await
    .unwrap();
    bus.close().await.unwrap();
}

async fn open_error<D: FileDriver>(path: &Path) -> Error {
    match D::open(path).await {
        Ok(_) => panic!("opening {} should fail", path.display()),
        Err(e) => e,
    }
}

/// A file of random bytes is `Error::Corrupt` and left as it was.
pub fn random_bytes_are_refused_and_left_alone<D: FileDriver>() {
    D::block_on(async {
        let dir = TempDir::new("noise");
        let noise = dir.file("noise.db");
        let bytes: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&noise, &bytes).unwrap();
        let e = open_error::<D>(&noise).await;
        assert!(matches!(e, Error::Corrupt(_)), "random bytes: {e}");
        assert_eq!(std::fs::read(&noise).unwrap(), bytes, "file unchanged");
    });
}

/// A file cut in half, at a page boundary or one page short is
/// `Error::Corrupt` and left as it was.
pub fn a_cut_file_is_refused_and_left_alone<D: FileDriver>() {
    D::block_on(async {
        let dir = TempDir::new("cut");
        let whole = dir.file("whole.db");
        filled::<D>(&whole).await;
        let bytes = std::fs::read(&whole).unwrap();
        for len in [
            bytes.len() / 2,
            bytes.len() / 4096 / 2 * 4096,
            bytes.len() - 4096,
        ] {
            let cut = dir.file(&format!("cut-{len}.db"));
            std::fs::write(&cut, &bytes[..len]).unwrap();
            let e = open_error::<D>(&cut).await;
            assert!(matches!(e, Error::Corrupt(_)), "cut to {len}: {e}");
            assert_eq!(
                std::fs::read(&cut).unwrap(),
                &bytes[..len],
                "cut to {len}: file unchanged"
            );
        }
    });
}

/// A directory is refused, saying so.
pub fn a_directory_is_refused<D: FileDriver>() {
    D::block_on(async {
        let dir = TempDir::new("dir");
        let e = open_error::<D>(dir.path()).await;
        assert!(e.to_string().contains("directory"), "directory: {e}");
    });
}

/// A database written by a newer litebus is refused, naming its version,
/// and left as it was.
pub fn a_newer_schema_is_refused_and_left_alone<D: FileDriver>() {
    D::block_on(async {
        let dir = TempDir::new("newer");
        let newer = dir.file("newer.db");
        filled::<D>(&newer).await;
        let version = "SELECT value FROM litebus_meta WHERE name = 'schema_version'";
        D::query(
            &newer,
            "UPDATE litebus_meta SET value = 99 WHERE name = 'schema_version'",
            0,
        )
        .await;
        let e = open_error::<D>(&newer).await;
        assert!(
            e.to_string().contains("schema version 99"),
            "newer schema: {e}"
        );
        assert_eq!(
            D::query(&newer, version, 0).await,
            [["99"]],
            "nothing changed"
        );
    });
}

/// A file this process cannot write is refused, by the open or by the first
/// write, saying why; it is left as it was, and holds all it held once
/// writable again.
pub fn a_read_only_file_is_refused_and_left_alone<D: FileDriver>() {
    D::block_on(async {
        let dir = TempDir::new("read-only");
        let path = dir.file("ro.db");
        filled::<D>(&path).await;
        let bytes = std::fs::read(&path).unwrap();
        let Some(read_only) = make_read_only(&path) else {
            // Neither permissions nor `chattr` can stop this user writing
            // here (a superuser on a filesystem without the attribute).
            eprintln!(
                "skipped: cannot make a read-only file in {}",
                dir.path().display()
            );
            return;
        };
        let says_why = |e: &Error| {
            let text = e.to_string().to_lowercase();
            text.contains("readonly") || text.contains("read-only")
        };
        match D::open(&path).await {
            Err(e) => assert!(says_why(&e), "opening a read-only file: {e}"),
            Ok(driver) => {
                let bus = Bus::open(driver, BusOptions::new()).unwrap();
                let e = bus
                    .publish("t", Message::new("lost?").with_id("x"))
                    .await
                    .expect_err("publishing into a read-only file");
                assert!(says_why(&e), "publishing into a read-only file: {e}");
                let _ = bus.close().await;
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "file unchanged");

        // Writable again: the 200 messages are all there is.
        drop(read_only);
        let bus = Bus::open(D::open(&path).await.unwrap(), BusOptions::new()).unwrap();
        assert_eq!(bus.stats("t").await.unwrap().messages, 200);
        let sub = bus.subscribe("t", "g", GroupOptions::new()).await.unwrap();
        let first = sub.try_recv().await.unwrap().expect("a message");
        assert_eq!(first.message().id(), "0");
        bus.close().await.unwrap();
    });
}

/// The plan of `sql` on the file at `path`, one line a step.
async fn plan<D: FileDriver>(path: &Path, sql: &str) -> Vec<String> {
    // Numbered parameters (`?1`…) are bound by number, bare ones in order.
    let numbered = (1..=9).filter(|i| sql.contains(&format!("?{i}"))).count();
    let params = if numbered > 0 {
        numbered
    } else {
        sql.matches('?').count()
    };
    D::query(path, &format!("EXPLAIN QUERY PLAN {sql}"), params)
        .await
        .into_iter()
        // The detail is the last column.
        .filter_map(|row| row.last().cloned())
        .collect()
}

/// The hot statements (claims, acks, the duplicate check) are index
/// lookups and ranges, by `EXPLAIN QUERY PLAN`: no full scan of a litebus
/// table, so neither publishing nor claiming slows down as history grows.
pub fn claims_acks_and_duplicate_checks_use_the_indexes<D: FileDriver>() {
    D::block_on(async {
        let dir = TempDir::new("plans");
        let path = dir.file("bus.db");
        drop(D::open(&path).await.unwrap());
        for sql in litebus_sql::hot::ALL {
            let lines = plan::<D>(&path, sql).await;
            assert!(!lines.is_empty(), "no plan for {sql}");
            for line in &lines {
                assert!(
                    !(line.starts_with("SCAN") && line.contains("litebus_")),
                    "a full scan in {sql}:\n{lines:#?}"
                );
            }
        }
        let ack = plan::<D>(&path, litebus_sql::hot::ACK).await;
        assert!(
            ack.iter().any(|l| l.contains("seq=?")),
            "an ack is a primary-key lookup: {ack:#?}"
        );
        let known = plan::<D>(&path, &litebus_sql::hot::known_ids(3)).await;
        assert!(
            known
                .iter()
                .any(|l| l.contains("litebus_messages_by_id (topic=? AND id=?)")),
            "the duplicate check looks up each id: {known:#?}"
        );
        // A redrive looks up each dead letter by its seq, not along its
        // dead-letter topic.
        let still = plan::<D>(&path, &litebus_sql::hot::still_dead_letters(3)).await;
        assert!(
            still.iter().any(|l| l.contains("INTEGER PRIMARY KEY"))
                && !still
                    .iter()
                    .any(|l| l.contains("litebus_messages_by_topic")),
            "a redrive looks up each dead letter: {still:#?}"
        );
        // A per-key group's candidates and take-in look up each key in
        // the partial indexes on keys, not every earlier row of the group.
        let heads = plan::<D>(&path, litebus_sql::hot::NEXT_PER_KEY).await;
        assert!(
            heads.iter().any(|l| l.contains("litebus_handouts_by_key")),
            "a candidate's key is looked up: {heads:#?}"
        );
        let take_in = plan::<D>(&path, litebus_sql::hot::TAKE_IN_PER_KEY).await;
        for index in ["litebus_handouts_by_key", "litebus_messages_by_key"] {
            assert!(
                take_in.iter().any(|l| l.contains(index)),
                "a take-in looks up each key in {index}: {take_in:#?}"
            );
        }
        let next = plan::<D>(&path, litebus_sql::hot::NEXT_OF_KEY).await;
        assert!(
            next.iter().any(|l| l.contains("litebus_messages_by_key")),
            "the next of a key is looked up by key: {next:#?}"
        );
        // A shared group's prioritized handouts are a range of their
        // partial index in the order it hands them out (no sort of them),
        // and a new group or a seek finds such messages by theirs.
        let shared = plan::<D>(&path, litebus_sql::hot::NEXT_PRIORITIZED).await;
        assert!(
            shared
                .iter()
                .any(|l| l.contains("litebus_handouts_prioritized (topic=? AND grp=?"))
                && !shared.iter().any(|l| l.contains("TEMP B-TREE")),
            "a shared claim ranges over the prioritized handouts: {shared:#?}"
        );
        let prioritized = plan::<D>(&path, litebus_sql::hot::TAKE_IN_PRIORITIZED).await;
        assert!(
            prioritized
                .iter()
                .any(|l| l.contains("litebus_messages_prioritized (topic=? AND seq>?)")),
            "prioritized messages are looked up by their index: {prioritized:#?}"
        );
        let by_key = plan::<D>(&path, litebus_sql::hot::READ_KEY).await;
        assert!(
            by_key
                .iter()
                .any(|l| l.contains("litebus_messages_by_key (topic=? AND msg_key=? AND seq>?)")),
            "a read of one key is a range of the key's index: {by_key:#?}"
        );
    });
}

/// A store of schema version 1, as litebus wrote it before version 2: topic
/// `orders` (10 messages `o1`…`o10`, `o3` and `o4` with key `k`, `o5` with
/// metadata) and five groups, at time `1_700_000_000_010` ms, left as a
/// killed process leaves it (four leases until 60 s later): `ordered`
/// (max 3 attempts) acked `o1`, nacked `o2` once and holds it at attempt 2;
/// `shared` (at most 4 in flight) acked `o1` and holds `o2`; `keys`
/// (per key) acked `o1`, `o2` and holds `o3`; `once` (max 1 attempt)
/// dead-lettered `o1` ("broken") and holds `o2`; `late` (from the end,
/// after `o8`) acked `o9`.
const SCHEMA_V1: &[u8] = include_bytes!("../../fixtures/schema-v1.db");

/// A version-1 store is upgraded when opened, in one step, with nothing
/// lost: every message, group, position, attempt count, lease and dead
/// letter is where it was, and each group goes on from there.
pub fn a_version_1_store_is_upgraded_with_nothing_lost<D: FileDriver>() {
    use litebus::{ManualClock, Order, Retention, Start, Timestamp};
    use std::time::Duration;
    D::block_on(async {
        let dir = TempDir::new("schema-v1");
        let path = dir.file("v1.db");
        std::fs::write(&path, SCHEMA_V1).unwrap();
        let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_010));
        let options = BusOptions::new().clock(clock.clone());
        let bus = Bus::open(D::open(&path).await.unwrap(), options).unwrap();
        let stats = bus.stats("orders").await.unwrap();
        assert_eq!((stats.last_seq, stats.messages), (10, 10));
        let groups: Vec<_> = stats
            .groups
            .iter()
            .map(|g| {
                let counts = (g.ready, g.in_flight, g.acked_floor, g.dead_lettered);
                (g.group.as_str(), counts)
            })
            .collect();
        assert_eq!(
            groups,
            [
                ("keys", (7, 1, 2, 0)),
                ("late", (1, 0, 9, 0)),
                ("once", (8, 1, 1, 1)),
                ("ordered", (8, 1, 1, 0)),
                ("shared", (8, 1, 1, 0)),
            ],
            "the groups as version 1 left them"
        );
        let dlq = bus.stats("orders.dlq").await.unwrap();
        assert_eq!((dlq.last_seq, dlq.messages), (11, 1));

        // The leases run out; each group goes on where it was.
        clock.advance(Duration::from_secs(61));
        let lease = Duration::from_secs(60);
        let take = async |group: &str, options: GroupOptions, n: usize| {
            let sub = bus
                .subscribe("orders", group, options.lease(lease))
                .await
                .unwrap();
            let mut got = Vec::new();
            for _ in 0..n {
                let d = sub.try_recv().await.unwrap().expect("a message");
                got.push((d.message().id().to_owned(), d.attempt()));
                d.ack().await.unwrap();
            }
            assert!(sub.try_recv().await.unwrap().is_none(), "{group}: no more");
            sub.close().await.unwrap();
            got
        };
        let ids = |from: usize, first_attempt: u32| {
            (from..=10)
                .map(|i| (format!("o{i}"), if i == from { first_attempt } else { 1 }))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            take("ordered", GroupOptions::new().max_attempts(3), 9).await,
            ids(2, 3)
        );
        let mut shared = take(
            "shared",
            GroupOptions::new()
                .order(Order::Shared { max_in_flight: 4 })
                .prefetch(2),
            9,
        )
        .await;
        shared.sort_by_key(|(id, _)| id[1..].parse::<u32>().unwrap());
        assert_eq!(shared, ids(2, 2));
        let keys = take(
            "keys",
            GroupOptions::new().order(Order::PerKey).prefetch(1),
            8,
        )
        .await;
        assert_eq!(keys, ids(3, 2));
        // `o2` was held at its final attempt: the claim dead-letters it.
        assert_eq!(
            take("once", GroupOptions::new().max_attempts(1), 8).await,
            ids(3, 1)
        );
        assert_eq!(
            take("late", GroupOptions::new().start(Start::End), 1).await,
            ids(10, 1)
        );
        let letters = bus
            .subscribe("orders.dlq", "audit", GroupOptions::new())
            .await
            .unwrap();
        let mut dead = Vec::new();
        while let Some(d) = letters.try_recv().await.unwrap() {
            let error = d
                .message()
                .metadata()
                .get(litebus::driver::dead_letter_keys::ERROR)
                .cloned();
            dead.push((d.message().id().to_owned(), error));
            d.ack().await.unwrap();
        }
        assert_eq!(
            dead,
            [
                ("orders/once/1".to_owned(), Some("broken".to_owned())),
                (
                    "orders/once/2".to_owned(),
                    Some(litebus::driver::LEASE_EXPIRED.to_owned())
                ),
            ]
        );
        // Retention (version 4) on what version 1 wrote: its rows have no
        // publish time (they count as published at 0 for `max_age`), and
        // the topic's count and bytes start from what it holds.
        let consumed = Retention::new().until_consumed();
        bus.set_retention("orders", consumed).await.unwrap();
        assert_eq!(bus.prune("orders").await.unwrap(), 10);
        let day = Retention::new().max_age(Duration::from_secs(86_400));
        bus.set_retention("orders.dlq", day).await.unwrap();
        // The dead letter version 1 wrote goes; the one written today stays.
        assert_eq!(bus.prune("orders.dlq").await.unwrap(), 1);
        bus.publish("orders", litebus::Message::new("o11"))
            .await
            .unwrap();
        let stats = bus.stats("orders").await.unwrap();
        assert_eq!((stats.messages, stats.retention), (1, consumed));
        bus.close().await.unwrap();
        let version = "SELECT value FROM litebus_meta WHERE name = 'schema_version'";
        assert_eq!(
            D::query(&path, version, 0).await,
            [[litebus_sql::SCHEMA_VERSION.to_string()]]
        );
    });
}

/// An upgrade that fails part way (here: the last version's table is
/// already there, under another shape) changes nothing: the file is still
/// version 1 with all it held, and opens once the obstacle is gone.
pub fn a_failed_upgrade_leaves_version_1_intact<D: FileDriver>() {
    D::block_on(async {
        let dir = TempDir::new("schema-v1-fails");
        let path = dir.file("v1.db");
        std::fs::write(&path, SCHEMA_V1).unwrap();
        D::query(&path, "CREATE TABLE litebus_topics (unrelated TEXT)", 0).await;
        let e = open_error::<D>(&path).await;
        assert!(e.to_string().contains("litebus_topics"), "{e}");
        let version = "SELECT value FROM litebus_meta WHERE name = 'schema_version'";
        assert_eq!(D::query(&path, version, 0).await, [["1"]]);
        let count = "SELECT COUNT(*) FROM litebus_messages";
        assert_eq!(D::query(&path, count, 0).await, [["11"]]);
        let v2_column = "SELECT COUNT(*) FROM pragma_table_info('litebus_groups') \
                         WHERE name = 'head_seq'";
        assert_eq!(D::query(&path, v2_column, 0).await, [["0"]], "v2 undone");
        let handouts = "SELECT COUNT(*) FROM litebus_handouts";
        let before = D::query(&path, handouts, 0).await;

        D::query(&path, "DROP TABLE litebus_topics", 0).await;
        let bus = Bus::open(D::open(&path).await.unwrap(), BusOptions::new()).unwrap();
        assert_eq!(bus.stats("orders").await.unwrap().messages, 10);
        bus.close().await.unwrap();
        assert_eq!(
            D::query(&path, version, 0).await,
            [[litebus_sql::SCHEMA_VERSION.to_string()]]
        );
        assert_ne!(before, [["0"]], "version 1 had handouts");
    });
}

/// A per-key group keeps a handout only for the head of each key: with
/// 1,000 messages on 4 keys, a claim reads 4 rows, not the backlog, and the
/// messages behind each head come in as it is acked, in key order, all of
/// them, with the group's stats counting those waiting.
pub fn a_per_key_group_keeps_one_handout_per_key<D: FileDriver>() {
    use litebus::Order;
    D::block_on(async {
        let dir = TempDir::new("per-key");
        let path = dir.file("keys.db");
        let bus = Bus::open(D::open(&path).await.unwrap(), BusOptions::new()).unwrap();
        let sub = bus
            .subscribe(
                "t",
                "k",
                GroupOptions::new().order(Order::PerKey).prefetch(100),
            )
            .await
            .unwrap();
        bus.publish_batch(
            "t",
            (0..1000).map(|i| Message::new(vec![1u8]).with_key(format!("k{}", i % 4))),
        )
        .await
        .unwrap();
        let handouts = "SELECT COUNT(*) FROM litebus_handouts WHERE grp = 'k'";
        let mut last = std::collections::HashMap::<String, u64>::new();
        let mut acked = 0u64;
        loop {
            let mut batch = Vec::new();
            while let Some(d) = sub.try_recv().await.unwrap() {
                batch.push(d);
            }
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 4, "one per key at a time: {}", batch.len());
            assert_eq!(
                D::query(&path, handouts, 0).await,
                [[batch.len().to_string()]],
                "a handout per key in flight, after {acked} acks"
            );
            let group = bus.stats("t").await.unwrap().groups.remove(0);
            assert_eq!(
                (group.ready, group.in_flight),
                (1000 - acked - batch.len() as u64, batch.len() as u64),
                "after {acked} acks"
            );
            for d in batch {
                let key = d.message().key().unwrap().to_owned();
                let before = last.insert(key.clone(), d.seq()).unwrap_or(0);
                assert!(d.seq() > before, "key {key}: {} after {before}", d.seq());
                d.ack().await.unwrap();
                acked += 1;
            }
        }
        assert_eq!(acked, 1000);
        assert_eq!(D::query(&path, handouts, 0).await, [["0".to_owned()]]);
        bus.close().await.unwrap();
    });
}

/// Publishes `count` messages with ids `<name>-<i>` one call each;
/// any error fails the test, naming it.
async fn publish_each(bus: &Bus, name: &str, count: usize) {
    for i in 0..count {
        let message = Message::new(name.to_owned()).with_id(format!("{name}-{i}"));
        if let Err(e) = bus.publish("t", message).await {
            panic!("publish {name}-{i}: {e}");
        }
    }
}

/// Publishes as [`publish_each`] does, on a thread of its own.
fn publish_on_a_thread(bus: &Bus, name: &'static str, count: usize) -> std::thread::JoinHandle<()> {
    let bus = bus.clone();
    std::thread::spawn(move || futures_lite::future::block_on(publish_each(&bus, name, count)))
}

/// Two drivers on one file in one process, publishing on two threads at
/// once, the second opened while the first writes: no call fails (a busy
/// file is waited for, never reported as locked), and every message is
/// stored once.
pub fn two_drivers_on_one_file_never_see_it_locked<D: FileDriver>() {
    D::block_on(async {
        let dir = TempDir::new("two-drivers");
        let path = dir.file("two.db");
        let first = Bus::open(D::open(&path).await.unwrap(), BusOptions::new()).unwrap();
        let writer = publish_on_a_thread(&first, "early", 200);
        let driver = D::open(&path).await.unwrap_or_else(|e| panic!("open: {e}"));
        let second = Bus::open(driver, BusOptions::new()).unwrap();
        let writers = [
            writer,
            publish_on_a_thread(&first, "a", 300),
            publish_on_a_thread(&second, "b", 300),
        ];
        for writer in writers {
            writer.join().expect("no publish failed");
        }
        assert_eq!(first.stats("t").await.unwrap().messages, 800);
        assert_eq!(second.stats("t").await.unwrap().messages, 800);
        second.close().await.unwrap();
        first.close().await.unwrap();
    });
}

/// Two drivers on one file publishing the same ids at once, on two
/// threads: each id is stored once, one publish of it is `Published` and
/// the other a `Duplicate` naming the same seq, and no call fails.
pub fn two_drivers_publishing_the_same_ids_store_each_once<D: FileDriver>() {
    D::block_on(async {
        let dir = TempDir::new("same-ids");
        let path = dir.file("same.db");
        let buses = [
            Bus::open(D::open(&path).await.unwrap(), BusOptions::new()).unwrap(),
            Bus::open(D::open(&path).await.unwrap(), BusOptions::new()).unwrap(),
        ];
        let count = 300;
        let threads = buses.clone().map(|bus| {
            std::thread::spawn(move || {
                futures_lite::future::block_on(async {
                    let mut outcomes = Vec::new();
                    for i in 0..count {
                        let message = Message::new("same").with_id(format!("same-{i}"));
                        match bus.publish("t", message).await {
                            Ok(outcome) => outcomes.push(outcome),
                            Err(e) => panic!("publish same-{i}: {e}"),
                        }
                    }
                    outcomes
                })
            })
        });
        let [a, b] = threads.map(|t| t.join().expect("no publish failed"));
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert_eq!(a.seq(), b.seq(), "same-{i}: one seq");
            assert!(
                a.is_duplicate() != b.is_duplicate(),
                "same-{i}: one stored, one duplicate: {a:?} {b:?}"
            );
        }
        assert_eq!(buses[0].stats("t").await.unwrap().messages, count as u64);
        for bus in buses {
            bus.close().await.unwrap();
        }
    });
}

/// Expands the kit's file tests into `#[test]`s, in a module named
/// `file_tests`, for one [`FileDriver`]:
/// `litebus_conformance::file_tests!(my_driver::conformance::Files);`.
#[macro_export]
macro_rules! file_tests {
    ($driver:ty) => {
        mod file_tests {
            #[allow(unused_imports)]
            use super::*;
            use $crate::kit::file_tests as t;

            #[test]
            fn random_bytes_are_refused_and_left_alone() {
                t::random_bytes_are_refused_and_left_alone::<$driver>();
            }

            #[test]
            fn a_cut_file_is_refused_and_left_alone() {
                t::a_cut_file_is_refused_and_left_alone::<$driver>();
            }

            #[test]
            fn two_drivers_on_one_file_never_see_it_locked() {
                t::two_drivers_on_one_file_never_see_it_locked::<$driver>();
            }

            #[test]
            fn two_drivers_publishing_the_same_ids_store_each_once() {
                t::two_drivers_publishing_the_same_ids_store_each_once::<$driver>();
            }

            #[test]
            fn a_directory_is_refused() {
                t::a_directory_is_refused::<$driver>();
            }

            #[test]
            fn a_newer_schema_is_refused_and_left_alone() {
                t::a_newer_schema_is_refused_and_left_alone::<$driver>();
            }

            #[test]
            fn a_read_only_file_is_refused_and_left_alone() {
                t::a_read_only_file_is_refused_and_left_alone::<$driver>();
            }

            #[test]
            fn a_failed_upgrade_leaves_version_1_intact() {
                t::a_failed_upgrade_leaves_version_1_intact::<$driver>();
            }

            #[test]
            fn a_version_1_store_is_upgraded_with_nothing_lost() {
                t::a_version_1_store_is_upgraded_with_nothing_lost::<$driver>();
            }

            #[test]
            fn a_per_key_group_keeps_one_handout_per_key() {
                t::a_per_key_group_keeps_one_handout_per_key::<$driver>();
            }

            #[test]
            fn claims_acks_and_duplicate_checks_use_the_indexes() {
                t::claims_acks_and_duplicate_checks_use_the_indexes::<$driver>();
            }
        }
    };
}
