//! `rebuild --target` empties one target and reproduces it exactly, while the sink keeps
//! running for all four.

use std::time::Duration;

use crate::support::model::{Catalog, Event};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_reproduces_an_identical_target_while_the_others_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(3).await;
    let targets = fresh_targets();
    let config = load(&write_config(dir.path(), &topic, &targets, 300));
    let sink = Running::start(config.clone()).await;

    let mut catalog = Catalog::new(5);
    let mut lsn = 0;
    let first: Vec<Event> = (0..3000).map(|_| catalog.change()).collect();
    produce(&topic, &first, &mut lsn).await;
    wait_caught_up(targets.values(), 3000, Duration::from_secs(90)).await;

    // Damage replica-2 the way an operator would want to repair: a lost and a changed row.
    let replica2 = &targets["replica-2"];
    let damage = connect(replica2).await;
    damage
        .batch_execute(
            "DELETE FROM catalog_product_read WHERE product_id = (SELECT product_id FROM catalog_product_read ORDER BY product_id LIMIT 1); \
             UPDATE catalog_product_read SET name = 'CORRUPT' WHERE product_id = (SELECT product_id FROM catalog_product_read ORDER BY product_id DESC LIMIT 1)",
        )
        .await
        .unwrap();
    // And a key held behind a dead letter that a rebuild must forget with the rest.
    damage
        .batch_execute(
            "INSERT INTO walcast_held (table_name, key, event_id, event_type, dead_letter, version) \
             SELECT 'catalog_product_read', product_id::text, gen_random_uuid(), 'ProductUpdated', \
             true, version + 1 FROM catalog_product_read ORDER BY product_id LIMIT 1 OFFSET 1",
        )
        .await
        .unwrap();

    // Rebuild while more events flow to every target.
    let rebuild = tokio::spawn({
        let config = config.clone();
        async move { walcast_sink::rebuild(&config, "replica-2", true).await }
    });
    let mut produced = 3000;
    for _ in 0..4 {
        let wave: Vec<Event> = (0..250).map(|_| catalog.change()).collect();
        produce(&topic, &wave, &mut lsn).await;
        produced += 250;
        let others: Vec<&String> = targets
            .iter()
            .filter(|(n, _)| *n != "replica-2")
            .map(|(_, d)| d)
            .collect();
        wait_caught_up(others.iter().copied(), produced, Duration::from_secs(30)).await;
    }
    let report = tokio::time::timeout(Duration::from_secs(120), rebuild)
        .await
        .expect("rebuild within 120 s")
        .unwrap()
        .unwrap();
    assert!(
        report.records >= 3000,
        "the rebuild re-consumed from the start: {report:?}"
    );

    wait_caught_up(targets.values(), produced, Duration::from_secs(60)).await;
    let expected = catalog.expected();
    for (name, dsn) in &targets {
        assert_rows(name, dsn, &expected).await;
        assert_eq!(
            count(dsn, "SELECT count(*) FROM processed_events").await,
            produced,
            "{name}"
        );
        assert_eq!(
            count(dsn, "SELECT count(*) FROM walcast_held").await,
            0,
            "{name}: nothing held, the damage's hold emptied by the rebuild"
        );
    }
    let tombstones = |dsn: String| async move {
        let c = connect(&dsn).await;
        c.query("SELECT table_name, key, version, occurred_at::text FROM walcast_tombstones ORDER BY 1, 2", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{}|{}|{}|{}", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i32>(2), r.get::<_, String>(3)))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tombstones(replica2.clone()).await,
        tombstones(targets["replica-1"].clone()).await,
        "the tombstones are rebuilt too"
    );
    // The rebuild's marker went with its final applied LSN.
    let lsn = |dsn: String| async move {
        let c = connect(&dsn).await;
        let marked: i64 = c
            .query_one("SELECT count(*) FROM walcast_rebuilding", &[])
            .await
            .unwrap()
            .get(0);
        let lsn: String = c
            .query_one("SELECT commit_lsn::text FROM walcast_applied_lsn", &[])
            .await
            .unwrap()
            .get(0);
        (marked, lsn)
    };
    // (Equal once both wrote the figure of the last batch; bookkeeping may trail the offsets.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (rebuilt, other) = (
            lsn(replica2.clone()).await,
            lsn(targets["replica-1"].clone()).await,
        );
        if rebuilt == other {
            assert_eq!(rebuilt.0, 0, "no marker left");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica-2 {rebuilt:?}, replica-1 {other:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sink.stop().await;
}
