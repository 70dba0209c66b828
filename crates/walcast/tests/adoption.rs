//! Adopting walcast on a database that already holds data, on the whole pipeline: a write database that already holds products
//! adopts walcast with `[snapshot] initial = true` (the shipped source file), while the write
//! API changes and deletes those products, and the source is killed with SIGKILL in the middle
//! of the snapshot. Every target must end equal to the write database, each kill may re-emit at
//! most one chunk, no snapshot read may hold a transaction open for long, and a second snapshot
//! of the now current system must not rewrite a single row.
//!
//! The CI form seeds 20,000 products; the full proof is
//! `WALCAST_SNAPSHOT_ROWS=100000 cargo test -p walcast --test main adoption:: -- --nocapture`
//! (docs/operations.md, "Snapshots").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use walcast_config::KafkaProperties;
use walcast_kafka::ClientSettings;
use walcast_kafka::snapshots::{self, SnapshotState, Status};

use crate::support::stack::load::{self, Counters, LoadSpec};
use crate::support::stack::verify::{self, topic_headers};
use crate::support::stack::{self, Rng, Stack, StackOptions, connect, env_or};

/// The header naming the snapshot a record belongs to.
const SNAPSHOT_HEADER: &str = "walcast.snapshot";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn existing_rows_reach_every_target_through_the_initial_snapshot() {
    let _one = stack::ONE_STACK_AT_A_TIME.lock().await;
    let rows: u64 = env_or("WALCAST_SNAPSHOT_ROWS", 20_000);
    let chunk: u64 = env_or("WALCAST_SNAPSHOT_CHUNK", 1_000);
    // Slow enough that the kills and the live writes land while the snapshot runs.
    let rows_per_sec: u64 = env_or("WALCAST_SNAPSHOT_RATE", 2_000);
    let kills: usize = env_or("WALCAST_SNAPSHOT_KILLS", 3);
    let seed: u64 = env_or("WALCAST_SNAPSHOT_SEED", 20261130);
    println!(
        "snapshot proof: {rows} existing products, chunks of {chunk}, {rows_per_sec} rows/s, {kills} kills, seed {seed}"
    );

    let mut stack = Stack::start(StackOptions {
        existing_products: rows,
        env: vec![
            (
                "source",
                "WALCAST_SNAPSHOT__CHUNK_SIZE".into(),
                chunk.to_string(),
            ),
            (
                "source",
                "WALCAST_SNAPSHOT__MAX_ROWS_PER_SEC".into(),
                rows_per_sec.to_string(),
            ),
        ],
        ..StackOptions::default()
    })
    .await;
    let initial = format!("initial-{}", stack.slot);
    let progress = snapshots::default_topic(&stack.topic);

    // How long snapshot reads keep a transaction open, sampled all along.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_snapshot_transactions(
        stack.write_dsn(),
        sampling.clone(),
    ));

    // Live writes through the write API at about 200/s, on the existing products too: price
    // changes, renames, (de)activations and deletes, and new products.
    let write = connect(&stack.write_dsn()).await.unwrap();
    let existing: Vec<uuid::Uuid> = write
        .query("SELECT id FROM products ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(existing.len() as u64, rows);
    let secs = rows / rows_per_sec.max(1) + 10;
    let spec = LoadSpec {
        events: 200 * secs,
        sql_writers: 0,
        http_writers: 4,
        rate: Some(200.0),
        max_tx: 1,
        seed,
        patience: Duration::from_secs(60),
        existing,
    };
    let loader = tokio::spawn(load::run(
        stack.write_dsn(),
        stack.write_port,
        spec,
        Arc::new(Counters::default()),
    ));

    // SIGKILL the source at random moments of the snapshot.
    let mut rng = Rng::new(seed);
    let mut killed_mid_snapshot = 0;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.between(800, 2500))).await;
        let state = state_of(&stack, &progress, &initial).await;
        if state.as_ref().is_some_and(|s| s.status.is_final()) {
            break;
        }
        stack.source.kill();
        stack
            .source
            .restart()
            .unwrap_or_else(|e| panic!("restarting the source: {e}"));
        killed_mid_snapshot += 1;
        stack.wait_ready(Duration::from_secs(60)).await;
    }
    println!("killed the source {killed_mid_snapshot} times mid-snapshot");

    let report = loader.await.unwrap();
    println!(
        "live writes: {} committed in {:.1} s",
        report.committed, report.seconds
    );
    let done = wait_for_final(&stack, &progress, &initial, Duration::from_secs(300)).await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    sampling.store(false, Ordering::SeqCst);
    let (longest, seen) = sampler.await.unwrap();

    let wrong = converge_rows(&stack, Duration::from_secs(240)).await;
    assert!(
        wrong.values().all(|n| *n == 0),
        "targets differ from the write database (rows missing, extra or different): {wrong:?}"
    );

    // Each kill re-emits at most one chunk: duplicate ids among the initial snapshot's records.
    let records = snapshot_record_ids(&stack, &initial).await;
    let distinct: BTreeSet<&String> = records.iter().collect();
    let duplicates = records.len() - distinct.len();
    println!(
        "initial snapshot: {} records, {} distinct, {duplicates} re-emitted; longest snapshot transaction {longest:.3} s over {seen} samples",
        records.len(),
        distinct.len()
    );
    assert!(
        duplicates as u64 <= killed_mid_snapshot as u64 * chunk,
        "{duplicates} records re-emitted after {killed_mid_snapshot} kills with chunks of {chunk}"
    );
    assert!(
        seen > 0,
        "no snapshot connection (application_name walcast-snapshot) was ever seen in pg_stat_activity"
    );
    assert!(
        longest < 5.0,
        "a snapshot read kept a transaction open for {longest:.1} s"
    );

    // A second snapshot of the now current system rewrites nothing: every row keeps its xmin.
    let before = row_xmins(&stack).await;
    write
        .execute(
            "INSERT INTO walcast_signal (id, type, data) VALUES ($1, 'execute-snapshot', \
             '{\"data-collections\": [\"public.products\"], \"type\": \"incremental\"}')",
            &[&"again-1"],
        )
        .await
        .unwrap();
    let again = wait_for_final(&stack, &progress, "again-1", Duration::from_secs(300)).await;
    assert_eq!(again.status, Status::Completed, "{again:?}");
    wait_consumed(&stack, Duration::from_secs(120)).await;
    let after = row_xmins(&stack).await;
    for (target, rows) in &before {
        let changed = rows
            .iter()
            .filter(|(id, xmin)| after[target].get(*id) != Some(*xmin))
            .count();
        assert_eq!(
            changed, 0,
            "the second snapshot rewrote {changed} rows on {target}"
        );
    }
    let wrong = verify::wrong_rows(&stack).await.unwrap();
    assert!(wrong.values().all(|n| *n == 0), "{wrong:?}");
}

/// The longest time (s) a `walcast-snapshot` connection was seen inside one transaction, and
/// how many samples saw that connection at all.
async fn sample_snapshot_transactions(dsn: String, running: Arc<AtomicBool>) -> (f64, u64) {
    let c = connect(&dsn).await.unwrap();
    let (mut longest, mut seen) = (0.0f64, 0u64);
    while running.load(Ordering::SeqCst) {
        let row = c
            .query_one(
                "SELECT count(*), coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)) \
                 FILTER (WHERE xact_start IS NOT NULL), 0)::float8 \
                 FROM pg_stat_activity WHERE application_name = 'walcast-snapshot'",
                &[],
            )
            .await
            .unwrap();
        let (n, age): (i64, f64) = (row.get(0), row.get(1));
        seen += u64::from(n > 0);
        longest = longest.max(age);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (longest, seen)
}

async fn state_of(stack: &Stack, progress: &str, id: &str) -> Option<SnapshotState> {
    let (brokers, properties) = (stack.kafka.bootstrap(), KafkaProperties::default());
    let settings = ClientSettings::new(&brokers, &properties);
    snapshots::read_all(settings, progress, Duration::from_secs(10))
        .await
        .ok()?
        .remove(id)
}

async fn wait_for_final(
    stack: &Stack,
    progress: &str,
    id: &str,
    within: Duration,
) -> SnapshotState {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(s) = state_of(stack, progress, id).await
            && s.status.is_final()
        {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "snapshot {id} not final within {within:?}; last state {:?}; source log:\n{}",
            state_of(stack, progress, id).await,
            stack.source.log_tail(4000)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until every target equals the write database; the last differences otherwise.
async fn converge_rows(stack: &Stack, within: Duration) -> BTreeMap<String, usize> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let wrong = verify::wrong_rows(stack).await.unwrap();
        if wrong.values().all(|n| *n == 0) || tokio::time::Instant::now() >= deadline {
            return wrong;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The event id of every record of snapshot `id` on the topic.
async fn snapshot_record_ids(stack: &Stack, id: &str) -> Vec<String> {
    let (bootstrap, topic, id) = (stack.kafka.bootstrap(), stack.topic.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || {
        topic_headers(&bootstrap, &topic, &["id", SNAPSHOT_HEADER])
            .unwrap()
            .into_iter()
            .filter(|h| h[1].as_deref() == Some(id.as_str()))
            .filter_map(|mut h| h[0].take())
            .collect()
    })
    .await
    .unwrap()
}

/// Per target: product id → the row version's `xmin` (changes with any write of the row).
async fn row_xmins(stack: &Stack) -> BTreeMap<String, HashMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, dsn) in stack.targets() {
        let c = connect(&dsn).await.unwrap();
        let rows = c
            .query(
                "SELECT product_id::text, xmin::text FROM catalog_product_read",
                &[],
            )
            .await
            .unwrap();
        out.insert(
            name.to_owned(),
            rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        );
    }
    out
}

/// Waits until every target has stored offsets at the topic's end offsets.
async fn wait_consumed(stack: &Stack, within: Duration) {
    let (bootstrap, topic) = (stack.kafka.bootstrap(), stack.topic.clone());
    let ends: BTreeMap<i32, i64> = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let timeout = Duration::from_secs(10);
        let meta = consumer.fetch_metadata(Some(&topic), timeout).unwrap();
        meta.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (_, high) = consumer.fetch_watermarks(&topic, p.id(), timeout).unwrap();
                (p.id(), high)
            })
            .collect()
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + within;
    for (name, dsn) in stack.targets() {
        let c = connect(&dsn).await.unwrap();
        loop {
            let stored: BTreeMap<i32, i64> = c
                .query(
                    "SELECT partition, next_offset FROM walcast_offsets WHERE topic = $1",
                    &[&stack.topic],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            if ends
                .iter()
                .all(|(p, end)| stored.get(p).is_some_and(|o| o >= end))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not consume to {ends:?} within {within:?}: at {stored:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
