//! The `litebus` binary as a user runs it: separate processes on one
//! store file, their output and exit codes.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use litebus::{Bus, BusOptions, GroupOptions, Message, NackOptions, Order};
use litebus_sqlx::SqlxDriver;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_litebus");
/// How long a step may take before the test calls it hung.
const PATIENCE: Duration = Duration::from_mins(1);

/// A store file of its own in a fresh directory.
fn store(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("litebus-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("store.db")
}

fn run(db: &PathBuf, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs `litebus --db DB ARGS` and returns what it printed; it must succeed.
fn ok(db: &PathBuf, args: &[&str]) -> String {
    let out = run(db, args, None);
    assert!(
        out.status.success(),
        "litebus {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Like [`ok`], with `--json`, parsed.
fn json(db: &PathBuf, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(db, &all)).unwrap()
}

/// Runs it expecting failure with `code`; returns standard error.
fn fails(db: &PathBuf, args: &[&str], code: i32) -> String {
    let out = run(db, args, None);
    assert_eq!(
        out.status.code(),
        Some(code),
        "litebus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Runs `statements` on the SQLite file at `path` (created if missing), as
/// another program would.
fn sql(path: &std::path::Path, statements: &[&str]) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for statement in statements {
            sqlx::query(sqlx::AssertSqlSafe(*statement))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    });
}

fn group<'a>(stat: &'a Value, topic: &str, group: &str) -> &'a Value {
    stat["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == topic)
        .and_then(|t| {
            t["groups"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["group"] == group)
        })
        .unwrap_or_else(|| panic!("no group {group} of {topic} in {stat}"))
}

#[test]
fn tail_prints_what_another_process_publishes() {
    let db = store("tail");
    ok(&db, &["pub", "orders", "before"]);
    let mut tail = Command::new(BIN)
        .arg("--db")
        .arg(&db)
        .args(["--json", "tail", "orders", "--from", "1", "--count", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = BufReader::new(tail.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let next =
        || -> Value { serde_json::from_str(&lines.recv_timeout(PATIENCE).unwrap()).unwrap() };
    // The stored message first; then, while tail waits, two publishes
    // by other processes, each printed as it lands.
    let first = next();
    assert_eq!(
        (&first["seq"], &first["payload"]),
        (&1.into(), &"before".into())
    );
    for (seq, payload) in [(2, "live-1"), (3, "live-2")] {
        ok(&db, &["pub", "orders", payload, "--key", "k"]);
        let line = next();
        assert_eq!(line["seq"], seq);
        assert_eq!(line["payload"], payload);
        assert_eq!(line["key"], "k");
    }
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = tail.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tail --count 3 did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}

#[test]
fn tail_with_a_group_consumes_what_it_prints() {
    let db = store("consume");
    let out = run(&db, &["pub", "jobs"], Some("a\nb\nc\n"));
    assert!(out.status.success());
    let printed = ok(&db, &["tail", "jobs", "--group", "workers", "--count", "2"]);
    let payloads: Vec<&str> = printed
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap())
        .collect();
    assert_eq!(payloads, ["a", "b"]);
    let stat = json(&db, &["stat", "jobs"]);
    let workers = group(&stat, "jobs", "workers");
    assert_eq!(
        (&workers["behind"], &workers["acked_floor"]),
        (&1.into(), &2.into())
    );
    // The group exists: its stored settings are used, and --from is refused.
    let printed = ok(&db, &["tail", "jobs", "--group", "workers", "--count", "1"]);
    assert!(printed.ends_with("\tc\n"), "{printed}");
    let e = fails(
        &db,
        &["tail", "jobs", "--group", "workers", "--from", "1"],
        2,
    );
    assert!(e.contains("group seek"), "{e}");
}

/// Five dead letters of a shared group, made through the library.
fn dead_letters(db: &PathBuf) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let bus = Bus::open(SqlxDriver::open(db).await.unwrap(), BusOptions::new()).unwrap();
        let options = GroupOptions::new()
            .order(Order::Shared { max_in_flight: 8 })
            .max_attempts(1);
        let sub = bus.subscribe("jobs", "workers", options).await.unwrap();
        for n in 0..5 {
            let m = Message::new(format!("job {n}")).with_id(format!("job-{n}"));
            bus.publish("jobs", m).await.unwrap();
        }
        for _ in 0..5 {
            let d = sub.recv().await.unwrap();
            d.nack(NackOptions::new().with_reason("disk full"))
                .await
                .unwrap();
        }
        bus.close().await.unwrap();
    });
}

#[test]
fn a_redrive_empties_the_dead_letter_list() {
    let db = store("dlq");
    dead_letters(&db);
    let listed = json(&db, &["dlq", "list", "jobs", "workers"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 5);
    assert!(
        listed
            .iter()
            .all(|d| d["error"] == "disk full" && d["attempts"] == 1)
    );
    assert_eq!(listed[0]["id"], "job-0");
    assert_eq!(listed[0]["original_seq"], 1);
    let table = ok(&db, &["dlq", "list", "jobs", "workers"]);
    assert!(
        table.starts_with("SEQ  ORIGINAL  ID     ATTEMPTS  ERROR"),
        "{table}"
    );

    let one = json(&db, &["dlq", "redrive", "jobs", "workers", "--id", "job-3"]);
    assert_eq!(one["redriven"], 1);
    assert_eq!(
        json(&db, &["dlq", "list", "jobs", "workers"])
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        json(&db, &["dlq", "redrive", "jobs", "workers"])["redriven"],
        4
    );
    assert_eq!(
        json(&db, &["dlq", "list", "jobs", "workers"]),
        Value::Array(Vec::new())
    );
    let stat = json(&db, &["stat"]);
    let workers = group(&stat, "jobs", "workers");
    assert_eq!(
        (&workers["ready"], &workers["dead_lettered"]),
        (&5.into(), &5.into())
    );
    // Consumed from the terminal with the group's stored settings.
    let printed = ok(&db, &["tail", "jobs", "--group", "workers", "--count", "5"]);
    assert_eq!(printed.lines().count(), 5);
    assert_eq!(group(&json(&db, &["stat"]), "jobs", "workers")["behind"], 0);
    // Purging needs ids or --all; an unknown group is exit code 4.
    fails(&db, &["dlq", "purge", "jobs", "workers"], 2);
    assert_eq!(
        json(&db, &["dlq", "purge", "jobs", "workers", "--all"])["purged"],
        0
    );
    fails(&db, &["dlq", "list", "jobs", "nobody"], 4);
}

#[test]
fn a_store_it_must_not_touch_is_refused_with_exit_code_3() {
    let missing = store("missing");
    let e = fails(&missing, &["stat"], 3);
    assert!(e.contains("no store at"), "{e}");
    assert!(!missing.exists(), "a read created the store");

    let garbage = store("garbage");
    std::fs::write(&garbage, b"not a database at all").unwrap();
    fails(&garbage, &["peek", "t"], 3);
    assert_eq!(std::fs::read(&garbage).unwrap(), b"not a database at all");

    // Another program's SQLite database, and a store of a newer litebus.
    let other = store("other");
    let newer = store("newer");
    sql(&other, &["CREATE TABLE people (name TEXT)"]);
    sql(
        &newer,
        &[
            "CREATE TABLE litebus_meta (name TEXT PRIMARY KEY, value INTEGER)",
            "INSERT INTO litebus_meta VALUES ('schema_version', 999)",
        ],
    );
    let before = std::fs::read(&other).unwrap();
    let e = fails(&other, &["pub", "t", "x"], 3);
    assert!(e.contains("not a litebus store"), "{e}");
    assert_eq!(
        std::fs::read(&other).unwrap(),
        before,
        "the file was changed"
    );
    let e = fails(&newer, &["stat"], 3);
    assert!(e.contains("schema version 999"), "{e}");
}

#[test]
fn publish_peek_and_manage_from_the_terminal() {
    let db = store("manage");
    let first = json(
        &db,
        &[
            "pub",
            "orders",
            "order one",
            "--id",
            "o-1",
            "--key",
            "alice",
            "--meta",
            "source=web",
            "--priority",
            "3",
        ],
    );
    assert_eq!(
        (&first["seq"], &first["duplicate"]),
        (&1.into(), &false.into())
    );
    let again = ok(&db, &["pub", "orders", "order one", "--id", "o-1"]);
    assert_eq!(again, "duplicate of seq 1\n");
    let lines = run(&db, &["--json", "pub", "orders", "-"], Some("two\nthree\n"));
    let lines: Value = serde_json::from_slice(&lines.stdout).unwrap();
    assert_eq!(
        (&lines["published"], &lines["last_seq"]),
        (&2.into(), &3.into())
    );

    let peeked = json(&db, &["peek", "orders", "-n", "2"]);
    assert_eq!(peeked[0]["id"], "o-1");
    assert_eq!(peeked[0]["key"], "alice");
    assert_eq!(peeked[0]["metadata"]["source"], "web");
    assert_eq!(peeked[0]["priority"], 3);
    assert_eq!(peeked[1]["payload"], "two");
    assert_eq!(peeked.as_array().unwrap().len(), 2);
    // turso reads the same file.
    let by_turso = ok(&db, &["--driver", "turso", "peek", "orders", "--from", "3"]);
    assert!(
        by_turso.lines().nth(1).unwrap().ends_with("three"),
        "{by_turso}"
    );

    let topics = json(&db, &["topic", "list"]);
    assert_eq!(topics[0]["messages"], 3);
    let r = json(
        &db,
        &["retention", "orders", "--max-messages", "1", "--prune"],
    );
    assert_eq!(
        (&r["retention"]["max_messages"], &r["pruned"]),
        (&1.into(), &2.into())
    );
    assert_eq!(
        ok(&db, &["retention", "orders"]),
        "orders: max 1 messages\n"
    );

    ok(
        &db,
        &[
            "tail", "orders", "--group", "audit", "--from", "4", "--count", "0",
        ],
    );
    ok(
        &db,
        &["group", "seek", "orders", "audit", "--to", "beginning"],
    );
    let groups = json(&db, &["group", "list", "orders"]);
    assert_eq!(
        (&groups[0]["group"], &groups[0]["order"]),
        (&"audit".into(), &"ordered".into())
    );
    ok(&db, &["group", "delete", "orders", "audit"]);
    fails(&db, &["group", "delete", "orders", "audit"], 4);
    ok(&db, &["topic", "delete", "orders"]);
    fails(&db, &["topic", "delete", "orders"], 4);
    fails(&db, &["peek", "nothing"], 4);

    // Bad input: exit code 2, nothing stored.
    fails(&db, &["pub", "t", "x", "--meta", "novalue"], 2);
    fails(&db, &["pub", "t", "x", "--delay", "soon"], 2);
    fails(&db, &["pub", "bad topic!", "x"], 2);
    fails(&db, &["group", "seek", "t", "g", "--to", "middle"], 2);
    assert_eq!(json(&db, &["topic", "list"]), Value::Array(Vec::new()));
}

#[test]
fn audit_verify_names_the_row_edited_by_hand() {
    let db = store("audit");
    for payment in ["pay 10", "pay 20", "pay 30"] {
        ok(&db, &["--audit", "payments", "pub", "payments", payment]);
    }
    let report = json(&db, &["audit", "verify", "payments"]);
    assert_eq!(
        (&report["rows"], &report["intact"]),
        (&3.into(), &true.into())
    );
    let said = ok(&db, &["audit", "verify", "payments"]);
    assert!(said.contains("3 rows verified"), "{said}");
    // A publish without --audit is not in the chain (and breaks nothing).
    ok(&db, &["pub", "payments", "pay 40"]);
    assert_eq!(json(&db, &["audit", "verify", "payments"])["rows"], 3);

    let rows = json(&db, &["peek", "litebus.audit.payments"]);
    let seqs: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 3);
    // The second row, edited by hand in SQL: the verify fails there.
    let edit = format!(
        "UPDATE litebus_messages SET payload = \
         CAST(replace(CAST(payload AS TEXT), 'publish', 'ack') AS BLOB) WHERE seq = {}",
        seqs[1]
    );
    sql(&db, &[&edit]);
    let e = fails(&db, &["audit", "verify", "payments"], 5);
    assert!(e.contains(&format!("broken at seq {}", seqs[1])), "{e}");
    assert!(
        e.contains("was changed") && e.contains("(1 rows before it verified)"),
        "{e}"
    );
    let out = run(&db, &["--json", "audit", "verify", "payments"], None);
    assert_eq!(out.status.code(), Some(5));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["broken"]["seq"], seqs[1]);
}
