//! `kill -9` of `walcast source` in the middle of its initial snapshot, twice: the snapshot
//! resumes from its last stored chunk and completes, every row arrives, and each kill
//! re-emits at most one chunk.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use walcast_kafka::snapshots::Status;

use crate::source_crash::stable_ends;
use crate::support::source::kafka::TopicReader;
use crate::support::source::snapshot::{
    initial_id, prepare_with_products, products_config, progress, wait_final,
};
use crate::support::source::{TestDb, ok, shared_kafka, wait_until_async};
use crate::support::walcast;

const ROWS: usize = 20_000;
const CHUNK: u32 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_snapshot_resumes_and_re_emits_at_most_one_chunk_per_kill() {
    let brokers = shared_kafka().bootstrap();
    let db = TestDb::new("snapcrash");
    prepare_with_products(&db, ROWS).await;
    let dir = ok(tempfile::tempdir());
    // Throttled so that the kills land mid-snapshot: 20,000 rows take about 8 s.
    let path = products_config(dir.path(), &db, &brokers, CHUNK, 2_500);
    let mut child = walcast(
        "source",
        &["source", "--config", path.to_str().unwrap()],
        dir.path(),
    )
    .env("RUST_LOG", "info,librdkafka=warn")
    .start()
    .unwrap();
    let id = initial_id(&db);

    // Kill once 2 chunks are stored, then (after the restart) once 5 are.
    let mut kill_ends = Vec::new();
    for chunks in [2, 5] {
        let running = wait_until_async("snapshot progress", Duration::from_secs(120), || async {
            progress(&brokers, &db).await.get(&id).is_some_and(|s| {
                s.status == Status::Running
                    && s.tables.iter().map(|t| t.chunks).sum::<u64>() >= chunks
            })
        })
        .await
        .is_ok();
        assert!(
            running,
            "no progress to {chunks} chunks; log:\n{}",
            child.log_tail(4000)
        );
        child.kill();
        let released = wait_until_async("the slot released", Duration::from_secs(30), || async {
            !db.slot_active().await
        })
        .await
        .is_ok();
        assert!(released, "the walsender kept the slot");
        let state = progress(&brokers, &db).await.remove(&id);
        assert!(
            state.as_ref().is_some_and(|s| s.status == Status::Running),
            "killed mid-snapshot: {state:?}"
        );
        let (b, t) = (brokers.clone(), db.topic.clone());
        let ends = ok(tokio::task::spawn_blocking(move || stable_ends(&b, &t)).await);
        eprintln!(
            "killed at {:?}; partition ends {ends:?}",
            state.map(|s| s.rows())
        );
        kill_ends.push(ends);
        child.restart().unwrap();
    }

    let state = wait_final(&brokers, &db, &id, Duration::from_secs(180)).await;
    assert_eq!(state.status, Status::Completed, "{state:?}");
    assert_eq!(
        state.rows(),
        ROWS as u64,
        "rows counted once each in the progress"
    );
    let (b, t) = (brokers.clone(), db.topic.clone());
    let records = ok(tokio::task::spawn_blocking(move || {
        let mut reader = TopicReader::new(&b, &t);
        assert!(reader.until_ids(ROWS, Duration::from_secs(120)));
        reader.read_to_end(Duration::from_secs(60));
        reader.records
    })
    .await);
    let keys: HashSet<&str> = records.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(keys.len(), ROWS, "every product arrived");
    let ids: HashSet<&str> = records.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), ROWS, "one id per row state");

    // Re-emitted by kill k: records at or after its partition ends whose id was already
    // written before them.
    let mut first: HashMap<&str, (i32, i64)> = HashMap::new();
    for r in &records {
        first.entry(r.id()).or_insert((r.partition, r.offset));
    }
    for (k, ends) in kill_ends.iter().enumerate() {
        let next = kill_ends.get(k + 1);
        let again = records
            .iter()
            .filter(|r| {
                let p = r.partition as usize;
                r.offset >= ends[p]
                    && next.is_none_or(|n| r.offset < n[p])
                    && first[r.id()].1 < ends[p]
            })
            .count();
        eprintln!("kill {k}: {again} rows emitted again");
        assert!(
            again <= CHUNK as usize,
            "kill {k} re-emitted {again} rows, more than one chunk"
        );
    }
    let duplicates = records.len() - ROWS;
    eprintln!("{} records, {duplicates} duplicates", records.len());
    assert!(duplicates <= 2 * CHUNK as usize);
    let status = tokio::task::block_in_place(|| child.terminate(Duration::from_secs(60)));
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        child.log_tail(4000)
    );
    db.drop_slot().await;
}
