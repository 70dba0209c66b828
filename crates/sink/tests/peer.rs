//! `rebuild --from PEER` after the topic's history is gone: the target becomes the peer, row
//! for row (read tables and bookkeeping), and the running sink then carries it on from the
//! copied offsets. And the "rebuilding" marker: while it is there the sink writes no applied
//! LSN for that target.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use walcast_sink::RebuildFrom;

use crate::support::model::{Catalog, Event};
use crate::support::*;

/// Deletes every record of `topic` (DeleteRecords up to the end offsets): what retention does
/// to a week-old history. Returns the new low watermarks.
async fn delete_history(topic: &str, partitions: i32) -> Vec<i64> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::End).unwrap();
    }
    let done = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    for e in done.elements() {
        e.error().unwrap_or_else(|e| panic!("delete records: {e}"));
    }
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (low, high) = probe
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            assert_eq!(low, high, "partition {p} still holds records");
            low
        })
        .collect()
}

/// Everything a target holds, one line per row, table by table (the group column of the
/// bookkeeping left out: it differs by design).
async fn contents(dsn: &str) -> Vec<String> {
    let c = connect(dsn).await;
    let mut out = Vec::new();
    for (table, sql) in [
        ("read", ROWS_SQL),
        (
            "processed",
            "SELECT concat_ws('|', event_id, event_type, processed_at) FROM processed_events ORDER BY 1",
        ),
        (
            "tombstones",
            "SELECT concat_ws('|', table_name, key, version, occurred_at, deleted_at) \
             FROM walcast_tombstones ORDER BY 1",
        ),
        (
            "held",
            "SELECT concat_ws('|', table_name, key, event_id, dead_letter, version, change::text) \
             FROM walcast_held ORDER BY 1",
        ),
        (
            "offsets",
            "SELECT concat_ws('|', topic, partition, next_offset) FROM walcast_offsets ORDER BY 1",
        ),
        (
            "applied",
            "SELECT commit_lsn::text FROM walcast_applied_lsn",
        ),
        (
            "partitions",
            "SELECT concat_ws('|', topic, partitions) FROM walcast_topic_partitions ORDER BY 1",
        ),
        (
            "rebuilding",
            "SELECT consumer_group FROM walcast_rebuilding",
        ),
    ] {
        for r in c.query(sql, &[]).await.unwrap() {
            out.push(format!("{table}: {}", r.get::<_, String>(0)));
        }
    }
    out
}

async fn applied_lsn(dsn: &str) -> Option<String> {
    let c = connect(dsn).await;
    c.query_opt("SELECT commit_lsn::text FROM walcast_applied_lsn", &[])
        .await
        .unwrap()
        .map(|r| r.get(0))
}

fn wave(catalog: &mut Catalog, n: usize, produced: &mut i64) -> Vec<Event> {
    *produced += n as i64;
    (0..n).map(|_| catalog.change()).collect()
}

/// Waits until `dsn`'s applied LSN satisfies `ok` (the figure may trail the offsets by a
/// bookkeeping transaction); returns it.
async fn wait_lsn(dsn: &str, what: &str, ok: impl Fn(&Option<String>) -> bool) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let lsn = applied_lsn(dsn).await;
        if ok(&lsn) {
            return lsn;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {lsn:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_from_a_peer_after_the_history_is_deleted_copies_it_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(3).await;
    let targets = fresh_targets();
    let config = load(&write_config(dir.path(), &topic, &targets, 200));
    let sink = Running::start(config.clone()).await;

    let mut catalog = Catalog::new(12);
    let mut lsn = 0;
    let mut produced = 0;
    let first = wave(&mut catalog, 600, &mut produced);
    produce(&topic, &first, &mut lsn).await;
    wait_caught_up(targets.values(), produced, Duration::from_secs(60)).await;

    // A target marked "rebuilding" gets no applied LSN from the sink, the others do.
    let (peer, replica2, replica3) = (
        &targets["catalog_read"],
        &targets["replica-2"],
        &targets["replica-3"],
    );
    let before = applied_lsn(replica3).await;
    connect(replica3)
        .await
        .execute(
            "INSERT INTO walcast_rebuilding (consumer_group, mode) VALUES ($1, 'topic')",
            &[&config.group("replica-3")],
        )
        .await
        .unwrap();
    let second = wave(&mut catalog, 100, &mut produced);
    produce(&topic, &second, &mut lsn).await;
    wait_caught_up(targets.values(), produced, Duration::from_secs(60)).await;
    wait_lsn(peer, "the peer's LSN moves", |l| *l != before).await;
    assert_eq!(
        applied_lsn(replica3).await,
        before,
        "no applied LSN while the marker is there"
    );
    connect(replica3)
        .await
        .execute("DELETE FROM walcast_rebuilding", &[])
        .await
        .unwrap();

    // replica-2 loses a row and holds a key; then retention takes the whole history.
    connect(replica2)
        .await
        .batch_execute(
            "DELETE FROM catalog_product_read WHERE product_id = \
             (SELECT product_id FROM catalog_product_read ORDER BY product_id LIMIT 1); \
             INSERT INTO walcast_held (table_name, key, event_id, event_type, dead_letter, version) \
             VALUES ('catalog_product_read', 'k', gen_random_uuid(), 'ProductUpdated', true, 1)",
        )
        .await
        .unwrap();
    let lows = delete_history(&topic, 3).await;
    assert_eq!(lows.iter().sum::<i64>(), produced, "{lows:?}");

    let report = walcast_sink::rebuild_from(
        &config,
        "replica-2",
        &RebuildFrom::Peer("catalog_read".into()),
        false,
    )
    .await
    .unwrap();
    // Nothing new was produced: the peer holds still, and replica-2 is its copy.
    let (want, got) = (contents(peer).await, contents(replica2).await);
    assert!(want.iter().any(|l| l.starts_with("applied: ")), "{want:?}");
    if got != want {
        let first = got.iter().zip(&want).position(|(g, w)| g != w);
        panic!(
            "replica-2 ({} lines) differs from the peer ({} lines) at {first:?}: {:?} vs {:?}",
            got.len(),
            want.len(),
            first.and_then(|i| got.get(i)),
            first.and_then(|i| want.get(i)),
        );
    }
    let copied = |table: &str| {
        report
            .copied
            .iter()
            .find(|c| c.table == table)
            .unwrap_or_else(|| panic!("{table} not in {report:?}"))
            .rows
    };
    assert_eq!(copied("processed_events"), produced as u64, "{report:?}");
    assert_eq!(copied("walcast_offsets"), 3, "{report:?}");
    let groups = connect(replica2)
        .await
        .query(
            "SELECT DISTINCT consumer_group FROM walcast_offsets \
             UNION SELECT consumer_group FROM walcast_applied_lsn",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].get::<_, String>(0), config.group("replica-2"));

    // The running sink carries replica-2 on from the copied offsets.
    let third = wave(&mut catalog, 150, &mut produced);
    produce(&topic, &third, &mut lsn).await;
    wait_caught_up(targets.values(), produced, Duration::from_secs(60)).await;
    let expected = catalog.expected();
    for (name, dsn) in &targets {
        assert_rows(name, dsn, &expected).await;
        assert_eq!(
            count(dsn, "SELECT count(*) FROM processed_events").await,
            produced,
            "{name}"
        );
    }
    // Idle now: every target settles on the LSN of the last event.
    let last = Some(walcast_pgoutput::Lsn(lsn).to_string());
    for dsn in [peer, replica2, replica3] {
        wait_lsn(dsn, "the last event's LSN", |l| *l == last).await;
    }
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_from_refuses_itself_and_a_stranger_and_leaves_the_target_alone() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let config = load(&write_config(dir.path(), &topic, &targets, 200));
    let schema = std::fs::read_to_string(repo_root().join("sql/read.sql")).unwrap();
    connect(&targets["replica-1"])
        .await
        .batch_execute(&schema)
        .await
        .unwrap();
    for (peer, says) in [
        ("replica-2", "cannot rebuild replica-2 from itself"),
        (
            "nobody",
            "the peer must be another target of this connector file",
        ),
    ] {
        let err = walcast_sink::rebuild_from(
            &config,
            "replica-2",
            &RebuildFrom::Peer(peer.into()),
            false,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains(says), "{err}");
    }
    // A peer that never consumed anything is no source of truth.
    let err = walcast_sink::rebuild_from(
        &config,
        "replica-2",
        &RebuildFrom::Peer("replica-1".into()),
        false,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("has consumed nothing of topic"), "{err}");
    assert_eq!(
        count(
            &targets["replica-2"],
            "SELECT count(*) FROM walcast_rebuilding"
        )
        .await,
        0,
        "a refusal leaves no marker"
    );
}
