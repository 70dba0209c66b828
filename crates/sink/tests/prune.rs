//! Bookkeeping pruning: `processed_events` and tombstones older than their `[prune]` window
//! are deleted in batches by a task of their own; recent ones stay, and a duplicate inside the
//! window is still skipped (after the window the version guard still stops it).

use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;
use walcast_sink::metrics;

use crate::support::*;
use crate::versions::{T0, created, renamed};
use walcast_testkit::wait_until_async;

/// The shipped config with a one-hour window for both tables, a pass every second and
/// `batch_rows` rows per DELETE.
fn config_with_prune(
    dir: &std::path::Path,
    topic: &str,
    targets: &TargetDsns,
    batch_rows: u32,
) -> PathBuf {
    let path = write_config(dir, topic, targets, 100);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (key, value) in [
        ("processed_events_window_secs", "3600".to_owned()),
        ("tombstone_window_secs", "3600".to_owned()),
        ("interval_secs", "1".to_owned()),
        ("batch_rows", batch_rows.to_string()),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("the shipped [prune] has no {key}"))
            .to_owned();
        text = text.replacen(&line, &format!("{key} = {value}"), 1);
    }
    std::fs::write(&path, text).unwrap();
    path
}

type TargetDsns = std::collections::BTreeMap<String, String>;

/// `name{target="…",table="…"} value` in the Prometheus text.
fn prune_metric(sink: &Running, name: &str, target: &str, table: &str) -> f64 {
    let text = sink.registry.render();
    let prefix = format!("{name}{{target=\"{target}\",table=\"{table}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_older_than_the_window_are_pruned_in_batches_and_recent_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let sink = Running::start(load(&config_with_prune(dir.path(), &topic, &targets, 100))).await;
    let p = Uuid::new_v4();
    let mut lsn = 0;
    produce(
        &topic,
        &[created(p, "SKU-P", "Pot", 1), renamed(p, 2, "Pot 2", 2)],
        &mut lsn,
    )
    .await;
    wait_caught_up(targets.values(), 2, Duration::from_secs(60)).await;

    // 250 processed ids and 250 tombstones from two hours ago, and 5 of each from ten minutes ago.
    let dsn = &targets["catalog_read"];
    let c = connect(dsn).await;
    c.batch_execute(
        "INSERT INTO processed_events (event_id, event_type, processed_at) \
           SELECT gen_random_uuid(), 'Old', now() - interval '2 hours' FROM generate_series(1, 250); \
         INSERT INTO processed_events (event_id, event_type, processed_at) \
           SELECT gen_random_uuid(), 'Recent', now() - interval '10 minutes' FROM generate_series(1, 5); \
         INSERT INTO walcast_tombstones (table_name, key, version, deleted_at) \
           SELECT 'catalog_product_read', 'old-' || i, 1, now() - interval '2 hours' FROM generate_series(1, 250) i; \
         INSERT INTO walcast_tombstones (table_name, key, version, deleted_at) \
           SELECT 'catalog_product_read', 'recent-' || i, 1, now() - interval '10 minutes' FROM generate_series(1, 5) i;",
    )
    .await
    .unwrap();

    wait_until_async("the old rows pruned", Duration::from_secs(60), || async {
        count(
            dsn,
            "SELECT count(*) FROM processed_events WHERE event_type = 'Old'",
        )
        .await
            == 0
            && count(
                dsn,
                "SELECT count(*) FROM walcast_tombstones WHERE key LIKE 'old-%'",
            )
            .await
                == 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        count(dsn, "SELECT count(*) FROM processed_events").await,
        7,
        "the two applied events and the five recent ids are kept"
    );
    assert_eq!(
        count(dsn, "SELECT count(*) FROM walcast_tombstones").await,
        5
    );
    for table in ["processed_events", "walcast_tombstones"] {
        assert_eq!(
            prune_metric(&sink, metrics::PRUNED_ROWS, "catalog_read", table),
            250.0,
            "{table}"
        );
        // 100 + 100 + 50: three statements at least, none larger than batch_rows.
        assert!(
            prune_metric(&sink, metrics::PRUNE_BATCHES, "catalog_read", table) >= 3.0,
            "{table}"
        );
    }
    wait_until_async(
        "the oldest-age gauge to follow",
        Duration::from_secs(10),
        || async {
            let oldest = prune_metric(
                &sink,
                metrics::BOOKKEEPING_OLDEST,
                "catalog_read",
                "processed_events",
            );
            oldest > 0.0 && oldest < 3600.0
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The other targets had nothing old: nothing pruned, the applied events kept.
    for (name, dsn) in targets.iter().filter(|(n, _)| *n != "catalog_read") {
        assert_eq!(
            count(dsn, "SELECT count(*) FROM processed_events").await,
            2,
            "{name}"
        );
        assert_eq!(
            prune_metric(&sink, metrics::PRUNED_ROWS, name, "processed_events"),
            0.0
        );
    }
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_inside_the_window_is_skipped_and_after_it_the_version_guard_holds() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let sink = Running::start(load(&config_with_prune(dir.path(), &topic, &targets, 100))).await;
    let p = Uuid::new_v4();
    let create = created(p, "SKU-Q", "Cup", 1);
    let rename = renamed(p, 2, "Cup 2", 2);
    let mut lsn = 0;
    produce(&topic, &[create.clone(), rename.clone()], &mut lsn).await;
    wait_caught_up(targets.values(), 2, Duration::from_secs(60)).await;
    let passes = |sink: &Running| {
        targets
            .keys()
            .map(|t| prune_metric(sink, metrics::PRUNE_BATCHES, t, "processed_events"))
            .fold(f64::INFINITY, f64::min)
    };
    let before = passes(&sink);
    wait_until_async(
        "a pruning pass on every target",
        Duration::from_secs(30),
        || async { passes(&sink) > before },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Inside the window: the id is still there, the redelivered create is a duplicate.
    produce(&topic, std::slice::from_ref(&create), &mut lsn).await;
    wait_caught_up(targets.values(), 3, Duration::from_secs(60)).await;
    let row = format!("{p}|SKU-Q|Cup 2|d|10.00|EUR|t|sku-q cup 2 d|2|{}|t", T0 + 2);
    for (name, dsn) in &targets {
        assert_eq!(sink.metric(metrics::EVENTS_DUPLICATE, name), 1.0, "{name}");
        assert_eq!(rows(dsn).await, std::slice::from_ref(&row), "{name}");
    }

    // Past the window: the create's id is pruned; redelivered again it is new to
    // processed_events, and the version guard (the row is at version 2) ignores it.
    for dsn in targets.values() {
        connect(dsn)
            .await
            .execute(
                "UPDATE processed_events SET processed_at = now() - interval '2 hours' \
                 WHERE event_id = $1",
                &[&create.id],
            )
            .await
            .unwrap();
    }
    wait_until_async(
        "the aged id pruned everywhere",
        Duration::from_secs(30),
        || async {
            let mut left = 0;
            for dsn in targets.values() {
                left += count(
                    dsn,
                    &format!(
                        "SELECT count(*) FROM processed_events WHERE event_id = '{}'",
                        create.id
                    ),
                )
                .await;
            }
            left == 0
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    produce(&topic, &[create], &mut lsn).await;
    wait_caught_up(targets.values(), 4, Duration::from_secs(60)).await;
    for (name, dsn) in &targets {
        assert_eq!(rows(dsn).await, std::slice::from_ref(&row), "{name}");
        assert_eq!(sink.metric(metrics::EVENTS_STALE, name), 1.0, "{name}");
    }
    sink.stop().await;
}
