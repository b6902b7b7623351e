//! turso runs litebus's hot statements as index lookups and ranges: no full
//! scan of a litebus table, and the duplicate check looks up each id (so
//! neither publishing nor claiming slows down as history grows).

use futures_lite::future::block_on;
use litebus_turso::TursoDriver;

async fn plan(conn: &turso::Connection, sql: &str) -> Vec<String> {
    let params = (1..=9).filter(|i| sql.contains(&format!("?{i}"))).count();
    let values: Vec<turso::Value> = (0..params).map(|_| turso::Value::Integer(1)).collect();
    let mut rows = conn
        .query(format!("EXPLAIN QUERY PLAN {sql}"), values)
        .await
        .unwrap();
    let mut lines = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        lines.push(row.get::<String>(3).unwrap());
    }
    lines
}

#[test]
fn claims_acks_and_duplicate_checks_use_the_indexes() {
    block_on(async {
        let dir = std::env::temp_dir().join(format!("litebus-turso-plans-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bus.db");
        drop(TursoDriver::open(&path).await.unwrap());
        let db = turso::Builder::new_local(path.to_str().unwrap())
            .build()
            .await
            .unwrap();
        let conn = db.connect().unwrap();
        for sql in litebus_sql::hot::ALL {
            let plan = plan(&conn, sql).await;
            assert!(!plan.is_empty(), "no plan for {sql}");
            for line in &plan {
                assert!(
                    !(line.starts_with("SCAN") && line.contains("litebus_")),
                    "a full scan in {sql}:\n{plan:#?}"
                );
            }
        }
        let ack = plan(&conn, litebus_sql::hot::ACK).await;
        assert!(
            ack.iter().any(|l| l.contains("seq=?")),
            "an ack is a primary-key lookup: {ack:#?}"
        );
        let known = plan(&conn, &litebus_sql::hot::known_ids(3)).await;
        assert!(
            known
                .iter()
                .any(|l| l.contains("litebus_messages_by_id (topic=? AND id=?)")),
            "the duplicate check looks up each id: {known:#?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
