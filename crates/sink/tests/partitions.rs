//! A topic that gains partitions while the sink runs: refused loudly, never reordered.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;

use crate::support::*;
use walcast_testkit::wait_until_async;

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

/// A topic of `from` partitions, one event on each of 0 and 1, then `to` partitions and, once
/// the target refuses them, one event on each of 0, `from` and `to - 1`: `flowing` records
/// are consumed and `/ready` says `refusal`; once the operator records the new count, all are.
async fn grow(from: i32, to: i32, flowing: i64, refusal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(from).await;
    let targets = fresh_targets();
    let sink = Running::start(load(&write_config(dir.path(), &topic, &targets, 100))).await;
    produce_at(&topic, &[(0, 0x100), (1, 0x200)]).await;
    wait_caught_up(targets.values(), 2, Duration::from_secs(60)).await;

    add_partitions(&topic, to as usize).await;
    wait_until_async(
        "/ready naming the refusal and the fix",
        Duration::from_secs(30),
        || async {
            let (status, body) = http_get(sink.admin, "/ready").await;
            status.contains("503")
                && targets
                    .keys()
                    .all(|t| body.contains(&format!("target {t} recorded {from}")))
                && body.contains(refusal)
                && body.contains(&format!("SET partitions = {to}"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Written once the change is seen (events written before that, on partitions the target
    // still consumed, are applied: the detection window of metadata_refresh_secs).
    produce_at(&topic, &[(0, 0x300), (from, 0x400), (to - 1, 0x500)]).await;
    wait_caught_up(targets.values(), flowing, Duration::from_secs(60)).await;
    // The lag shows every event not consumed: it is on the topic, and the target holds it back.
    wait_until_async(
        "the lag of the refused events",
        Duration::from_secs(30),
        || async {
            targets
                .keys()
                .all(|t| sink.metric(walcast_sink::metrics::LAG, t) == (5 - flowing) as f64)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for (name, dsn) in &targets {
        assert_eq!(
            rows(dsn).await.len() as i64,
            flowing,
            "{name}: what the refused partitions hold is not applied"
        );
        assert!(
            sink.metric(walcast_sink::metrics::PARTITIONS_REFUSED, name) > 0.0,
            "{name}"
        );
    }

    // The operator records the new count (the old partitions are drained): all flow.
    for dsn in targets.values() {
        connect(dsn)
            .await
            .execute(
                "UPDATE walcast_topic_partitions SET partitions = $1",
                &[&to],
            )
            .await
            .unwrap();
    }
    wait_caught_up(targets.values(), 5, Duration::from_secs(60)).await;
    wait_until_async("/ready", Duration::from_secs(30), || async {
        http_get(sink.admin, "/ready").await.0.contains("200")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
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

/// Partitions added to a topic are refused until an operator records them: were they assigned
/// as soon as they appear, a key moved by the change could have its later events applied
/// before its earlier ones. Keys only move to new partitions, so the old ones keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_partitions_are_refused_with_the_fix_until_an_operator_records_them() {
    grow(2, 4, 3, "refuses partitions 2..4").await;
}

/// 2 → 3: keys may move between the old partitions too, so nothing is consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_count_that_is_not_a_multiple_stops_the_target_until_recorded() {
    grow(2, 3, 2, "so it consumes nothing").await;
}
