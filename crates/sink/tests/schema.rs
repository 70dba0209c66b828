//! Re-applying the schema (at start, and after every failed batch) while the query API reads
//! the table: when the schema is already there, no ACCESS EXCLUSIVE lock is asked for, so the
//! reads are never queued behind the sink's DDL.

use std::time::Duration;

use uuid::Uuid;

use crate::support::*;
use crate::versions::created;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplying_the_schema_takes_no_exclusive_lock_on_the_read_table() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let read_sql = std::fs::read_to_string(repo_root().join("sql/read.sql")).unwrap();
    for dsn in targets.values() {
        connect(dsn).await.batch_execute(&read_sql).await.unwrap();
    }
    // A long read on every target, as a slow query-API request holds it.
    let mut readers = Vec::new();
    for dsn in targets.values() {
        let r = connect(dsn).await;
        r.batch_execute("BEGIN; SELECT count(*) FROM catalog_product_read")
            .await
            .unwrap();
        readers.push(r);
    }

    let sink = Running::start(load(&write_config(dir.path(), &topic, &targets, 100))).await;
    let mut lsn = 0;
    produce(
        &topic,
        &[created(Uuid::new_v4(), "SKU-L", "Lock", 1)],
        &mut lsn,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let locks = "SELECT count(*) FROM pg_locks \
                 WHERE relation = 'catalog_product_read'::regclass AND mode = 'AccessExclusiveLock'";
    loop {
        let mut done = true;
        for (name, dsn) in &targets {
            let exclusive = count(dsn, locks).await;
            assert_eq!(
                exclusive, 0,
                "{name}: the sink asked for an ACCESS EXCLUSIVE lock"
            );
            // Another reader is served at once.
            let c = connect(dsn).await;
            c.batch_execute("SET statement_timeout = '2s'")
                .await
                .unwrap();
            c.query_one("SELECT count(*) FROM catalog_product_read", &[])
                .await
                .unwrap_or_else(|e| panic!("{name}: a read was blocked: {e}"));
            done &= progress(dsn).await == Some(1);
        }
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink did not apply the event while the reads were open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in &readers {
        r.batch_execute("COMMIT").await.unwrap();
    }
    sink.stop().await;

    // Run once more in a transaction and look at what it holds: no ALTER ran (each would hold
    // SHARE UPDATE EXCLUSIVE or stronger); CREATE INDEX IF NOT EXISTS holds SHARE, which
    // readers do not conflict with.
    let c = connect(&targets["catalog_read"]).await;
    c.batch_execute(&format!("BEGIN; {read_sql}"))
        .await
        .unwrap();
    let held: Vec<String> = c
        .query(
            "SELECT DISTINCT l.mode FROM pg_locks l JOIN pg_class r ON r.oid = l.relation \
             WHERE l.pid = pg_backend_pid() AND r.relname LIKE 'catalog_product_read%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        held.iter()
            .all(|m| m == "AccessShareLock" || m == "ShareLock"),
        "re-applying the schema took {held:?}"
    );
    c.batch_execute("ROLLBACK").await.unwrap();
}
