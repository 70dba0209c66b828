//! The main path: concurrent writers, transactions of random size, every event exactly once.

use std::time::Duration;

use walcast_source::metrics;

use crate::support::kafka::TopicReader;
use crate::support::load::{self, Load};
use crate::support::verify;
use crate::support::{
    InProcess, TestDb, config_file, load_config, ok, shared_kafka, wait_until_async,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_arrive_exactly_once_in_aggregate_order() {
    let kafka = shared_kafka();
    let db = TestDb::new("delivery");
    db.prepare().await;
    let dir = ok(tempfile::tempdir());
    let config = load_config(&config_file(dir.path(), &db, &kafka.bootstrap(), "", ""));
    let source = InProcess::start(config);

    let load = Load::new(10_000);
    let txns = load::write(&db, &load).await;
    let rows = db.outbox().await;
    assert_eq!(rows.len(), 10_000);

    let topic = db.topic.clone();
    let brokers = kafka.bootstrap();
    let records = tokio::task::spawn_blocking(move || {
        let mut reader = TopicReader::new(&brokers, &topic);
        assert_eq!(
            reader.partitions(),
            3,
            "created with the configured partitions"
        );
        assert!(
            reader.until_ids(10_000, Duration::from_secs(180)),
            "only {} records",
            reader.records.len()
        );
        reader.read_to_end(Duration::from_secs(30));
        reader.records
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let report = verify::check(&records, &rows, 3);
    assert_eq!(report.duplicates, 0, "exactly once ({txns} transactions)");
    assert_eq!(records.len(), 10_000);

    // Everything acknowledged is confirmed: the slot reaches the last commit.
    let confirmed = wait_until_async(
        "the slot confirmed past the last commit",
        Duration::from_secs(30),
        || async { db.slot_confirmed().await > report.max_commit_lsn },
    )
    .await
    .is_ok();
    assert!(
        confirmed,
        "slot at {}, last commit {}",
        db.slot_confirmed().await,
        report.max_commit_lsn
    );
    assert!(source.health.is_ready());
    assert_eq!(source.metric(metrics::EVENTS_PUBLISHED), 10_000.0);
    assert!(source.metric(metrics::BYTES_PUBLISHED) > 1_000_000.0);
    assert!(source.metric(&format!("{}_count", metrics::COMMIT_TO_ACK)) >= 10_000.0);
    assert!(source.metric(metrics::CONFIRMED_LSN) >= report.max_commit_lsn.0 as f64);
    ok(source.stop().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_confirms_everything_and_a_restart_repeats_nothing() {
    let kafka = shared_kafka();
    let db = TestDb::new("graceful");
    db.prepare().await;
    let dir = ok(tempfile::tempdir());
    let path = config_file(dir.path(), &db, &kafka.bootstrap(), "", "");
    let first = InProcess::start(load_config(&path));
    let load = Load {
        aggregates: 20,
        ..Load::new(2_000)
    };
    load::write(&db, &load).await;
    let topic = db.topic.clone();
    let brokers = kafka.bootstrap();
    let mut reader = tokio::task::spawn_blocking(move || {
        let mut reader = TopicReader::new(&brokers, &topic);
        assert!(reader.until_ids(2_000, Duration::from_secs(120)));
        reader
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    ok(first.stop().await);
    let end = db.current_lsn().await;
    assert!(
        !db.slot_active().await
            || wait_until_async("the slot released", Duration::from_secs(10), || async {
                !db.slot_active().await
            })
            .await
            .is_ok()
    );

    // A second run with more events: only the new ones are produced.
    let second = InProcess::start(load_config(&path));
    let more = Load {
        seed: 0x5eed_0002,
        aggregates: 20,
        ..Load::new(500)
    };
    load::write(&db, &more).await;
    reader = tokio::task::spawn_blocking(move || {
        assert!(reader.until_ids(2_500, Duration::from_secs(120)));
        reader.read_to_end(Duration::from_secs(30));
        reader
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        reader.records.len(),
        2_500,
        "no event was produced twice across a graceful restart"
    );
    let report = verify::check(&reader.records, &db.outbox().await, 3);
    assert_eq!(report.duplicates, 0);
    assert!(report.max_commit_lsn > end);
    ok(second.stop().await);
    db.drop_slot().await;
}
