//! `wal tail` with a change limit: prints N changes, confirms them, and the
//! next run continues after them.

use walcast_replication::{Lsn, tail};

use crate::support::{TestDb, ok, shared_pg};

async fn run(db: &TestDb, max: u64) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let n = ok(tail(
        db.stream_config(&["t"]),
        Some(max),
        &mut out,
        std::future::pending(),
    )
    .await);
    assert_eq!(n, max);
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| ok(serde_json::from_str(l)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_changes_confirms_and_the_next_run_continues() {
    let db = TestDb::new(shared_pg(), "tail");
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    // Creates publication and slot, sees nothing yet.
    let mut out = Vec::new();
    ok(tail(
        db.stream_config(&["t"]),
        Some(0),
        &mut out,
        std::future::pending(),
    )
    .await);
    db.each(&[
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t VALUES (2)",
        "BEGIN; INSERT INTO t VALUES (3); INSERT INTO t VALUES (4); COMMIT;",
    ])
    .await;

    let lines = run(&db, 2).await;
    let ids: Vec<_> = lines.iter().map(|l| l["new"]["id"].clone()).collect();
    assert_eq!(ids, [1, 2]);
    let commit: Lsn = ok(lines[1]["commit_lsn"].as_str().unwrap_or("").parse());
    assert!(
        db.slot_confirmed_flush().await > commit,
        "slot at or past the last printed commit"
    );

    // Stops inside the two-row transaction: it is sent again in full.
    let lines = run(&db, 1).await;
    assert_eq!(lines[0]["new"]["id"], 3);
    let commit: Lsn = ok(lines[0]["commit_lsn"].as_str().unwrap_or("").parse());
    assert!(db.slot_confirmed_flush().await >= commit);
    let lines = run(&db, 2).await;
    let ids: Vec<_> = lines.iter().map(|l| l["new"]["id"].clone()).collect();
    assert_eq!(ids, [3, 4]);
    db.drop_slot().await;
}
