//! The broker stops for 30 s in the middle of a load and comes back: every event arrives.

use std::time::Duration;

use walcast_source::metrics;
use walcast_testkit::Kafka;

use crate::support::kafka::TopicReader;
use crate::support::load::{self, Load};
use crate::support::verify;
use crate::support::{InProcess, TestDb, blocking, config_file, load_config, ok, wait_until_async};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_for_30_s_mid_load_loses_nothing() {
    let mut kafka = ok(blocking(Kafka::start).await);
    let brokers = kafka.bootstrap();
    let db = TestDb::new("outage");
    db.prepare().await;
    let dir = ok(tempfile::tempdir());
    let mut config = load_config(&config_file(dir.path(), &db, &brokers, "", ""));
    config.postgres.stall_after_secs = 10;
    let source = InProcess::start(config);
    assert!(db.streams_within(Duration::from_secs(60)).await);

    let load = Load {
        max_txn: 100,
        pause: Some(Duration::from_millis(400)),
        ..Load::new(20_000)
    };
    let writer = {
        let db = db.clone();
        tokio::spawn(async move { load::write(&db, &load).await })
    };
    let flowing = wait_until_async(
        "1,000 events published",
        Duration::from_secs(60),
        || async { source.metric(metrics::EVENTS_PUBLISHED) >= 1_000.0 },
    )
    .await
    .is_ok();
    assert!(flowing, "no events before the outage");

    kafka.kill();
    let before = source.metric(metrics::EVENTS_PUBLISHED);
    let lag_at_kill = source.metric(metrics::SLOT_LAG);
    // The outage itself: a fixed 30 s, as the scenario says.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        !source.is_finished(),
        "the source must wait for the broker, not give up"
    );
    assert!(
        !source.health.is_ready(),
        "not ready while the broker does not acknowledge"
    );
    assert_eq!(
        source.metric(metrics::EVENTS_PUBLISHED),
        before,
        "nothing acknowledged while down"
    );
    let lag = source.metric(metrics::SLOT_LAG);
    assert!(
        lag > lag_at_kill,
        "slot lag grows while the broker is down ({lag_at_kill} -> {lag})"
    );
    assert!(source.metric(metrics::KAFKA_ERRORS) > 0.0);
    let stalled = source.metric(metrics::PROGRESS_STALLED);
    assert!(
        stalled >= 10.0,
        "the slot has not moved for 30 s while WAL grew: progress is stalled ({stalled} s reported)"
    );
    let kafka = ok(blocking(move || kafka.restart().map(|()| kafka)).await);

    ok(writer.await);
    let rows = db.outbox().await;
    let topic = db.topic.clone();
    let records = blocking(move || {
        let mut reader = TopicReader::new(&brokers, &topic);
        let all = reader.until_ids(20_000, Duration::from_secs(180));
        assert!(
            all,
            "only {} records after the outage",
            reader.records.len()
        );
        reader.read_to_end(Duration::from_secs(30));
        reader.records
    })
    .await;
    let report = verify::check(&records, &rows, 3);
    eprintln!(
        "{} records, {} duplicates",
        records.len(),
        report.duplicates
    );
    let ready = wait_until_async("the source ready", Duration::from_secs(30), || async {
        source.health.is_ready()
    })
    .await
    .is_ok();
    assert!(ready, "ready again once the broker acknowledges");
    let unstalled = wait_until_async(
        "progress no longer stalled",
        Duration::from_secs(30),
        || async { source.metric(metrics::PROGRESS_STALLED) == 0.0 },
    )
    .await
    .is_ok();
    assert!(unstalled, "no stall once the slot moves again");
    ok(source.stop().await);
    db.drop_slot().await;
    drop(kafka);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_load_loses_nothing() {
    let kafka = crate::support::shared_kafka();
    let mut pg = ok(blocking(walcast_testkit::Postgres::start).await);
    let db = TestDb::on(&pg, "pgrestart");
    db.prepare().await;
    let dir = ok(tempfile::tempdir());
    let brokers = kafka.bootstrap();
    let source = InProcess::start(load_config(&config_file(dir.path(), &db, &brokers, "", "")));
    assert!(db.streams_within(Duration::from_secs(60)).await);
    let first = Load {
        aggregates: 50,
        ..Load::new(3_000)
    };
    load::write(&db, &first).await;
    let some = wait_until_async(
        "1,000 events published",
        Duration::from_secs(60),
        || async { source.metric(metrics::EVENTS_PUBLISHED) >= 1_000.0 },
    )
    .await
    .is_ok();
    assert!(some);
    pg = ok(blocking(move || pg.restart().map(|()| pg)).await);
    assert!(
        !source.is_finished(),
        "a Postgres restart is not a reason to stop"
    );
    let second = Load {
        seed: 0x5eed_0003,
        aggregates: 50,
        ..Load::new(3_000)
    };
    load::write(&db, &second).await;
    let rows = db.outbox().await;
    assert_eq!(rows.len(), 6_000);
    let topic = db.topic.clone();
    let records = blocking(move || {
        let mut reader = TopicReader::new(&brokers, &topic);
        let all = reader.until_ids(6_000, Duration::from_secs(120));
        assert!(all, "only {} ids after the restart", reader.distinct());
        reader.read_to_end(Duration::from_secs(30));
        reader.records
    })
    .await;
    verify::check(&records, &rows, 3);
    assert!(
        source.metric(metrics::RESTARTS) == 0.0,
        "the replication client reconnected by itself"
    );
    ok(source.stop().await);
    db.drop_slot().await;
    drop(pg);
}
