//! Quiet outboxes: the slot keeps advancing while only other tables change, and the optional
//! heartbeat moves it on a database nobody writes to.

use std::time::Duration;

use walcast_source::metrics;

use crate::support::{
    InProcess, TestDb, config_file, load_config, ok, shared_kafka, wait_until_async,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_advances_while_only_another_table_is_written() {
    let kafka = shared_kafka();
    let db = TestDb::new("idle");
    db.prepare().await;
    let dir = ok(tempfile::tempdir());
    let source = InProcess::start(load_config(&config_file(
        dir.path(),
        &db,
        &kafka.bootstrap(),
        "",
        "",
    )));
    assert!(db.streams_within(Duration::from_secs(60)).await);
    let start = db.slot_confirmed().await;
    for round in 0..5 {
        db.exec(&format!(
            "INSERT INTO products (id, sku, name, price, currency) \
             SELECT gen_random_uuid(), 'sku-{round}-' || i, 'p' || i, 9.99, 'EUR' FROM generate_series(1, 500) i"
        ))
        .await;
    }
    let written = db.current_lsn().await;
    let advanced = wait_until_async(
        "the slot confirmed past what was written",
        Duration::from_secs(60),
        || async { db.slot_confirmed().await >= written },
    )
    .await
    .is_ok();
    assert!(
        advanced,
        "confirmed_flush_lsn {} (started at {start}) never reached {written}",
        db.slot_confirmed().await
    );
    assert_eq!(
        source.metric(metrics::EVENTS_PUBLISHED),
        0.0,
        "the outbox was idle"
    );
    ok(source.stop().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_messages_are_written_and_confirmed() {
    let kafka = shared_kafka();
    let db = TestDb::new("heartbeat");
    db.prepare().await;
    let dir = ok(tempfile::tempdir());
    let path = config_file(
        dir.path(),
        &db,
        &kafka.bootstrap(),
        "",
        "[heartbeat]\ninterval_secs = 1\n",
    );
    let source = InProcess::start(load_config(&path));
    assert!(db.streams_within(Duration::from_secs(60)).await);
    let before = db.current_lsn().await;
    let beats = wait_until_async("three heartbeats", Duration::from_secs(30), || async {
        source.metric(metrics::HEARTBEATS) >= 3.0
    })
    .await
    .is_ok();
    assert!(
        beats,
        "heartbeats written: {}",
        source.metric(metrics::HEARTBEATS)
    );
    let advanced = wait_until_async(
        "the slot confirmed past the heartbeats",
        Duration::from_secs(30),
        || async { db.slot_confirmed().await > before },
    )
    .await
    .is_ok();
    assert!(advanced, "slot stayed at {}", db.slot_confirmed().await);
    ok(source.stop().await);
    db.drop_slot().await;
}
