//! Feedback and resumption: killed walsenders, restarts, idle slots.

use std::collections::BTreeSet;
use std::time::Duration;

use walcast_replication::{ChangeStream, Event};

use crate::support::{TestDb, collect_txns, next_event, ok, shared_pg, wait_until_async};

/// Ids of the rows inserted by committed transactions, in order.
fn committed_ids(events: &[Event]) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut pending = Vec::new();
    for e in events {
        match e {
            Event::Begin(_) | Event::Interrupted(_) => pending.clear(),
            Event::Change(c) => {
                pending.extend(c.new.as_ref().and_then(|n| n["id"].as_i64()));
            }
            Event::Commit(_) => ids.append(&mut pending),
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_walsender_is_terminated_without_loss_or_repeats() {
    let db = TestDb::new(shared_pg(), "resume");
    db.exec("CREATE TABLE t (id bigint PRIMARY KEY)").await;
    let mut stream = ok(ChangeStream::start(db.stream_config(&["t"])).await);
    let first_pid = stream.backend_pid();
    // 200 one-row transactions, half of them after the walsender is killed.
    db.exec("DO $$ BEGIN FOR i IN 1..100 LOOP INSERT INTO t VALUES (i); COMMIT; END LOOP; END $$")
        .await;
    let mut events = collect_txns(&mut stream, 50).await;
    let confirmed = stream.confirmed();
    db.exec(&format!(
        "SELECT pg_terminate_backend({})",
        first_pid.unwrap_or_default()
    ))
    .await;
    db.exec(
        "DO $$ BEGIN FOR i IN 101..200 LOOP INSERT INTO t VALUES (i); COMMIT; END LOOP; END $$",
    )
    .await;
    events.extend(collect_txns(&mut stream, 150).await);
    assert_ne!(
        stream.backend_pid(),
        first_pid,
        "reconnected to a new walsender"
    );
    let ids = committed_ids(&events);
    assert_eq!(
        ids,
        (1..=200).collect::<Vec<_>>(),
        "every transaction exactly once"
    );
    // No commit repeated past the confirmed LSN.
    let commits: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Commit(c) => Some(c.end_lsn),
            _ => None,
        })
        .collect();
    assert_eq!(commits.iter().collect::<BTreeSet<_>>().len(), 200);
    assert!(commits[50..].iter().all(|l| *l > confirmed));
    ok(stream.close().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_after_the_last_confirmed_transaction() {
    let db = TestDb::new(shared_pg(), "restart");
    db.exec("CREATE TABLE t (id bigint PRIMARY KEY)").await;
    let mut stream = ok(ChangeStream::start(db.stream_config(&["t"])).await);
    db.exec("DO $$ BEGIN FOR i IN 1..10 LOOP INSERT INTO t VALUES (i); COMMIT; END LOOP; END $$")
        .await;
    let events = collect_txns(&mut stream, 4).await;
    assert_eq!(committed_ids(&events), [1, 2, 3, 4]);
    // Read the 5th transaction's first change but do not confirm it.
    let _begin = next_event(&mut stream, Duration::from_secs(10)).await;
    ok(stream.close().await);

    let mut stream = ok(ChangeStream::start(db.stream_config(&["t"])).await);
    let events = collect_txns(&mut stream, 6).await;
    assert_eq!(committed_ids(&events), [5, 6, 7, 8, 9, 10]);
    ok(stream.close().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slot_advances_while_only_another_database_is_written() {
    let pg = shared_pg();
    let quiet = TestDb::new(pg, "quiet");
    let busy = TestDb::new(pg, "busy");
    quiet.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    busy.exec("CREATE TABLE noise (id int, pad text)").await;
    let mut stream = ok(ChangeStream::start(quiet.stream_config(&["t"])).await);
    let start = quiet.slot_confirmed_flush().await;
    // Keep the stream polled (keepalives are answered inside next()).
    let reader = tokio::spawn(async move {
        let ev = stream.next().await;
        (stream, ev)
    });
    busy.exec("INSERT INTO noise SELECT i, repeat('x', 100) FROM generate_series(1, 1000) i")
        .await;
    let written = busy
        .query_one("SELECT pg_current_wal_lsn()::text")
        .await
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let advanced = wait_until_async(
        "the quiet slot confirmed past what was written",
        Duration::from_secs(30),
        || async { quiet.slot_confirmed_flush().await >= written },
    )
    .await
    .is_ok();
    assert!(
        advanced,
        "confirmed_flush_lsn stayed at {} (started at {start}), WAL is at {written}",
        quiet.slot_confirmed_flush().await
    );
    assert!(!reader.is_finished(), "no change was published");
    reader.abort();
    quiet.drop_slot().await;
}
