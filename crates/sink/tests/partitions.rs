//! A topic that gains partitions while the sink runs: refused loudly, never reordered.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;

use crate::support::*;

async fn add_partitions(topic: &str, count: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin
        .create_partitions([&NewPartitions::new(topic, count)], &opts)
        .await
        .unwrap()
    {
        r.unwrap_or_else(|(t, e)| panic!("adding partitions to {t}: {e}"));
    }
}

/// Waits until `check` holds for every target, or panics naming `what`.
async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 10, suspicion B: the sink re-assigned itself new partitions as soon as it saw them,
/// so a key moved by the change could have its later events applied before its earlier ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_partitions_are_refused_with_the_fix_until_an_operator_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(2).await;
    let targets = fresh_targets();
    let sink = Running::start(load(&write_config(dir.path(), &topic, &targets, 100))).await;
    produce_at(&topic, &[(0, 0x100), (1, 0x200)]).await;
    wait_caught_up(targets.values(), 2, Duration::from_secs(60)).await;

    add_partitions(&topic, 4).await;
    produce_at(&topic, &[(0, 0x300), (2, 0x400), (3, 0x500)]).await;
    // The old partitions keep flowing, the target says why it is not ready and how to fix it.
    wait_caught_up(targets.values(), 3, Duration::from_secs(60)).await;
    wait_for(
        "/ready naming the refused partitions",
        Duration::from_secs(30),
        || async {
            let (status, body) = http_get(sink.admin, "/ready").await;
            status.contains("503")
                && targets
                    .keys()
                    .all(|t| body.contains(&format!("target {t} recorded 2")))
                && body.contains("refuses partitions 2..4")
                && body.contains("UPDATE walcast_topic_partitions SET partitions = 4")
        },
    )
    .await;
    for (name, dsn) in &targets {
        assert_eq!(
            rows(dsn).await.len(),
            3,
            "{name}: the new partitions are not consumed"
        );
        assert_eq!(
            sink.metric(walcast_sink::metrics::PARTITIONS_REFUSED, name),
            2.0,
            "{name}"
        );
    }

    // The operator records the new count (the old partitions are drained): all flow.
    for dsn in targets.values() {
        connect(dsn)
            .await
            .execute("UPDATE walcast_topic_partitions SET partitions = 4", &[])
            .await
            .unwrap();
    }
    wait_caught_up(targets.values(), 5, Duration::from_secs(60)).await;
    wait_for("/ready", Duration::from_secs(30), || async {
        http_get(sink.admin, "/ready").await.0.contains("200")
    })
    .await;
    for (name, dsn) in &targets {
        assert_eq!(rows(dsn).await.len(), 5, "{name}");
        assert_eq!(
            sink.metric(walcast_sink::metrics::PARTITIONS_REFUSED, name),
            0.0,
            "{name}"
        );
    }
    sink.stop().await;
}
