//! A replica's Postgres stopped for 30 s: the others stay current, it catches up alone.

use std::time::Duration;

use walcast_sink::metrics;
use walcast_testkit::{Postgres, unique_name};

use crate::support::model::{Catalog, Event};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_catches_up_while_the_others_stay_current() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(3).await;
    let mut targets = fresh_targets();
    // replica-2 gets a cluster of its own, since this test stops it.
    let mut own = Postgres::start().unwrap();
    let db = unique_name("read");
    own.create_database(&db).unwrap();
    targets.insert("replica-2".into(), own.dsn(&db));
    let sink = Running::start(load(&write_config(dir.path(), &topic, &targets, 200))).await;

    let mut catalog = Catalog::new(23);
    let mut lsn = 0;
    let before: Vec<Event> = (0..600).map(|_| catalog.change()).collect();
    produce(&topic, &before, &mut lsn).await;
    wait_caught_up(targets.values(), 600, Duration::from_secs(60)).await;

    let stopped_at = tokio::time::Instant::now();
    let mut own = tokio::task::spawn_blocking(move || {
        own.stop();
        own
    })
    .await
    .unwrap();

    // Mid-stream: more events while replica-2 is down, in waves.
    let mut produced = 600;
    for _ in 0..5 {
        let wave: Vec<Event> = (0..200).map(|_| catalog.change()).collect();
        produce(&topic, &wave, &mut lsn).await;
        produced += 200;
    }
    let others: Vec<&String> = targets
        .iter()
        .filter(|(n, _)| *n != "replica-2")
        .map(|(_, d)| d)
        .collect();
    wait_caught_up(others.iter().copied(), produced, Duration::from_secs(25)).await;
    let expected = catalog.expected();
    for (name, dsn) in targets.iter().filter(|(n, _)| *n != "replica-2") {
        assert_rows(name, dsn, &expected).await;
    }
    // While it is down: not ready, named, and lagging.
    let (status, body) = http_get(sink.admin, "/ready").await;
    assert!(
        status.contains("503") && body.contains("replica-2"),
        "{status}: {body}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.metric(metrics::LAG, "replica-2") < 1000.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag of replica-2 not reported"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sink.metric(metrics::TARGET_UP, "replica-2"), 0.0);
    assert_eq!(sink.metric(metrics::TARGET_UP, "replica-1"), 1.0);

    tokio::time::sleep_until(stopped_at + Duration::from_secs(30)).await;
    let own = tokio::task::spawn_blocking(move || {
        own.restart().unwrap();
        own
    })
    .await
    .unwrap();
    wait_caught_up(targets.values(), produced, Duration::from_secs(60)).await;
    for (name, dsn) in &targets {
        assert_rows(name, dsn, &expected).await;
        assert_eq!(
            count(dsn, "SELECT count(*) FROM processed_events").await,
            produced,
            "{name}"
        );
    }
    assert!(sink.metric(metrics::RETRIES, "replica-2") > 0.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !sink.health.is_ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sink.stop().await;
    drop(own);
}
