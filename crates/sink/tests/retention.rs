//! Retention never opens a silent gap: with the topic's history deleted (DeleteRecords up to
//! the end offsets, what `retention.ms` does after a week), a target whose stored offset fell
//! below the first retained offset, and a new target on a topic that no longer starts at 0,
//! stop with the fix while the other targets keep flowing; a completed snapshot that covers
//! the deleted history lets the new target start; a plain rebuild refuses before emptying.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use walcast_kafka::snapshots::{self, SnapshotState, Status, TableProgress};
use walcast_sink::SinkConfig;
use walcast_sink::metrics::TARGET_GAP;
use walcast_testkit::wait_until_async;

use crate::support::*;

/// `(low, high)` watermarks of each partition of `topic`.
async fn watermarks(topic: &str, partitions: i32) -> BTreeMap<i32, (i64, i64)> {
    let (bootstrap, topic) = (kafka().bootstrap(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        (0..partitions)
            .map(|p| {
                let w = c
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .unwrap();
                (p, w)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Deletes every record of `topic` up to its end offsets; returns the first retained offset
/// of each partition (now its end offset).
async fn delete_history(topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::End).unwrap();
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let done = admin.delete_records(&tpl, &opts).await.unwrap();
    for e in done.elements() {
        e.error()
            .unwrap_or_else(|e| panic!("deleting records of {topic}: {e}"));
    }
    let marks = watermarks(topic, partitions).await;
    for (p, (low, high)) in &marks {
        assert!(
            low == high && *low > 0,
            "partition {p} emptied: {low}..{high}"
        );
    }
    marks.into_iter().map(|(p, (low, _))| (p, low)).collect()
}

/// `n` ProductCreated events of new products, alternating over partitions 0 and 1.
async fn create(topic: &str, n: u64, lsn: &mut u64) {
    let events: Vec<(i32, u64)> = (0..n)
        .map(|i| {
            *lsn += 0x100;
            ((i % 2) as i32, *lsn)
        })
        .collect();
    produce_at(topic, &events).await;
}

/// Waits until `/ready` answers 503 and names `target` with both fixes.
async fn wait_stopped(sink: &Running, target: &str, why: &str) {
    let last = std::sync::Mutex::new(String::new());
    let r = wait_until_async(
        "/ready naming the stopped target and both fixes",
        Duration::from_secs(30),
        || {
            let last = &last;
            async move {
                let (status, body) = http_get(sink.admin, "/ready").await;
                *last.lock().unwrap() = format!("{status}: {body}");
                status.contains("503")
                    && body.contains(&format!("{target}: "))
                    && body.contains(why)
                    && body.contains(&format!("walcast sink rebuild --target {target} --from"))
                    && body.contains("walcast snapshot start")
            }
        },
    )
    .await;
    r.unwrap_or_else(|e| panic!("{e}; last /ready: {}", last.lock().unwrap()));
}

async fn wait_gauge(sink: &Running, target: &str, value: f64) {
    wait_until_async(
        &format!("{TARGET_GAP} of {target} = {value}"),
        Duration::from_secs(30),
        || async { sink.metric(TARGET_GAP, target) == value },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The dsns of every target but `name`, and `config` without `name`.
fn all_but(
    config: &SinkConfig,
    targets: &BTreeMap<String, String>,
    name: &str,
) -> (Vec<String>, SinkConfig) {
    let others = (targets.iter())
        .filter(|(n, _)| *n != name)
        .map(|(_, d)| d.clone())
        .collect();
    let mut without = config.clone();
    without.targets.remove(name);
    (others, without)
}

/// Runs the sink without `away` while 10 events come (the others reach `consumed`), then
/// deletes the topic's history; returns the first retained offsets.
async fn history_deleted_while_away(
    config: &SinkConfig,
    topic: &str,
    targets: &BTreeMap<String, String>,
    away: &str,
    consumed: i64,
    lsn: &mut u64,
) -> BTreeMap<i32, i64> {
    let (others, without) = all_but(config, targets, away);
    let sink = Running::start(without).await;
    create(topic, 10, lsn).await;
    wait_caught_up(&others, consumed, Duration::from_secs(60)).await;
    sink.stop().await;
    delete_history(topic, 2).await
}

/// Starts the sink with every target on a topic that lost its history: `stopped` stops with
/// `why` and keeps the `kept` records it had, while the others, which consumed `consumed`,
/// apply 6 new events.
async fn start_with_one_stopped(
    config: &SinkConfig,
    topic: &str,
    targets: &BTreeMap<String, String>,
    (stopped, why, kept): (&str, &str, i64),
    consumed: i64,
    lsn: &mut u64,
) -> Running {
    let (others, _) = all_but(config, targets, stopped);
    let sink = Running::start(config.clone()).await;
    wait_stopped(&sink, stopped, why).await;
    wait_gauge(&sink, stopped, 1.0).await;
    create(topic, 6, lsn).await;
    wait_caught_up(&others, consumed + 6, Duration::from_secs(60)).await;
    let dsn = &targets[stopped];
    assert_eq!(progress(dsn).await, Some(kept), "{stopped} skipped nothing");
    assert_eq!(rows(dsn).await.len() as i64, kept, "{stopped}");
    for t in targets.keys().filter(|t| *t != stopped) {
        assert_eq!(sink.metric(TARGET_GAP, t), 0.0, "{t}");
    }
    sink
}

/// Replica-2 is down while events come and go; back after retention deleted them, it stops
/// with the missing range and the fixes (nothing skipped), while the others keep applying new
/// events. A plain rebuild of a healthy target refuses and leaves it as it was. Once something
/// else stores offsets past the gap (what a rebuild from a peer does), the target goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_behind_retention_stops_while_the_others_flow_and_a_plain_rebuild_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(2).await;
    let targets = fresh_targets();
    let config = load(&write_config(dir.path(), &topic, &targets, 100));
    let mut lsn = 0;

    let sink = Running::start(config.clone()).await;
    create(&topic, 10, &mut lsn).await;
    wait_caught_up(targets.values(), 10, Duration::from_secs(60)).await;
    sink.stop().await;

    let lows =
        history_deleted_while_away(&config, &topic, &targets, "replica-2", 20, &mut lsn).await;
    assert_eq!(lows.values().sum::<i64>(), 20);

    let stopped = ("replica-2", "are no longer on the topic", 10);
    let sink = start_with_one_stopped(&config, &topic, &targets, stopped, 20, &mut lsn).await;
    let replica2 = &targets["replica-2"];

    // A plain rebuild cannot bring back what the topic lost: it refuses before emptying.
    let replica1 = &targets["replica-1"];
    let before = rows(replica1).await;
    let err = walcast_sink::rebuild(&config, "replica-1", false)
        .await
        .map(|r| format!("rebuilt replica-1: {} records", r.records))
        .expect_err("a rebuild from a topic that lost its start must refuse")
        .to_string();
    for needle in [
        format!("partition 0 starts at offset {}", lows[&0]),
        format!("partition 1 starts at offset {}", lows[&1]),
        "nothing was emptied".into(),
        "walcast sink rebuild --target replica-1 --from <healthy target>".into(),
        "walcast snapshot start".into(),
    ] {
        assert!(err.contains(&needle), "{needle:?} in {err}");
    }
    assert_eq!(rows(replica1).await, before, "replica-1 left untouched");
    assert_eq!(progress(replica1).await, Some(26));

    // What a rebuild from a peer stores: the peer's offsets (past the gap). The stopped target
    // sees them at its next check and goes on.
    let peer = connect(replica1).await;
    let offsets = peer
        .query("SELECT partition, next_offset FROM walcast_offsets", &[])
        .await
        .unwrap();
    let fix = connect(replica2).await;
    for r in offsets {
        let (p, next): (i32, i64) = (r.get(0), r.get(1));
        fix.execute(
            "UPDATE walcast_offsets SET next_offset = $2 WHERE partition = $1",
            &[&p, &next],
        )
        .await
        .unwrap();
    }
    wait_gauge(&sink, "replica-2", 0.0).await;
    create(&topic, 4, &mut lsn).await;
    wait_caught_up(targets.values(), 30, Duration::from_secs(60)).await;
    assert_eq!(rows(replica2).await.len(), 14, "10 before the gap, 4 after");
    sink.stop().await;
}

/// Replica-3 joins after the topic's start was deleted: with no stored offset and no snapshot
/// it stops (it would silently start at the first retained offset), the others flow; once a
/// completed snapshot whose start offsets cover the first retained offsets is on the progress
/// topic, it starts there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_target_stops_on_a_topic_that_lost_its_start_until_a_snapshot_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(2).await;
    let targets = fresh_targets();
    let config = load(&write_config(dir.path(), &topic, &targets, 100));
    let mut lsn = 0;

    let lows =
        history_deleted_while_away(&config, &topic, &targets, "replica-3", 10, &mut lsn).await;

    let stopped = ("replica-3", "no completed snapshot", 0);
    let sink = start_with_one_stopped(&config, &topic, &targets, stopped, 10, &mut lsn).await;
    let replica3 = &targets["replica-3"];

    // A completed snapshot that began after the deletion: its rows and every later change are
    // at or after its start offsets, so a consumer from the first retained offsets is complete.
    let progress_topic = snapshots::default_topic(&topic);
    kafka().create_topic(&progress_topic, 1).await.unwrap();
    let state = SnapshotState {
        id: "covering".into(),
        topic: topic.clone(),
        status: Status::Completed,
        tables: vec![TableProgress {
            table: "public.products".into(),
            last_key: None,
            rows: 0,
            chunks: 1,
            estimated_rows: Some(0),
            done: true,
        }],
        start_offsets: lows,
        requested_by: "cli".into(),
        requested_at_ms: 1,
        updated_at_ms: 2,
        completed_at_ms: Some(2),
        reason: None,
    };
    produce_raw(
        &progress_topic,
        &[(state.id.clone(), state.encode(), Vec::new())],
    )
    .await;
    wait_gauge(&sink, "replica-3", 0.0).await;
    wait_caught_up(targets.values(), 16, Duration::from_secs(60)).await;
    assert_eq!(
        rows(replica3).await.len(),
        6,
        "everything after the snapshot's start"
    );
    sink.stop().await;
}

/// `n` ProductCreated events of new products on partition 0, each with a description of
/// `bytes` bytes.
async fn create_large(topic: &str, n: usize, bytes: usize, lsn: &mut u64) {
    let description = "x".repeat(bytes);
    let records: Vec<RawRecord> = (0..n)
        .map(|_| {
            *lsn += 0x100;
            let p = uuid::Uuid::new_v4();
            let value = serde_json::json!({"productId": p, "sku": "S", "name": "N",
                "description": description, "price": "1.00", "currency": "EUR",
                "isActive": true, "version": 1});
            let headers = [
                ("id", uuid::Uuid::new_v4().to_string()),
                ("event_type", "ProductCreated".to_owned()),
                ("occurred_at", "2026-05-01T12:00:00Z".to_owned()),
                (
                    "walcast.commit_lsn",
                    walcast_pgoutput::Lsn(*lsn).to_string(),
                ),
            ];
            let headers = headers.map(|(k, v)| (k.to_owned(), v)).to_vec();
            (p.to_string(), value.to_string().into_bytes(), headers)
        })
        .collect();
    produce_raw(topic, &records).await;
}

/// Retention deletes records a running target has not fetched yet (its batch waits on a lock
/// in its database while 12 MB arrive; it prefetches at most about 5 MB). When it fetches
/// again the broker answers out of range: the target stops at what it applied, never jumping
/// to the first retained offset, while the other target flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_out_of_range_at_runtime_stops_the_target_instead_of_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let mut config = load(&write_config(dir.path(), &topic, &targets, 10));
    config
        .targets
        .retain(|t, _| t == "catalog_read" || t == "replica-1");
    let (flowing, blocked) = (&targets["catalog_read"], &targets["replica-1"]);
    let mut lsn = 0;
    let sink = Running::start(config.clone()).await;
    create_large(&topic, 2, 10, &mut lsn).await;
    wait_caught_up([flowing, blocked], 2, Duration::from_secs(60)).await;

    let lock = connect(blocked).await;
    lock.batch_execute("BEGIN; LOCK TABLE catalog_product_read IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    create_large(&topic, 120, 100_000, &mut lsn).await;
    wait_caught_up([flowing], 122, Duration::from_secs(120)).await;
    let lows = delete_history(&topic, 1).await;
    lock.batch_execute("COMMIT").await.unwrap();

    wait_stopped(&sink, "replica-1", "are no longer on the topic").await;
    wait_gauge(&sink, "replica-1", 1.0).await;
    create_large(&topic, 2, 10, &mut lsn).await;
    wait_caught_up([flowing], 124, Duration::from_secs(60)).await;
    let applied = progress(blocked).await.unwrap();
    assert!(
        applied < lows[&0],
        "replica-1 stopped at {applied}, below the first retained offset {}",
        lows[&0]
    );
    assert_eq!(rows(blocked).await.len() as i64, applied, "nothing skipped");
    sink.stop().await;
}
