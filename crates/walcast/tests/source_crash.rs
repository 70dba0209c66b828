//! `kill -9` of `walcast source` at random points during a load: nothing is lost, and only
//! what the slot had not confirmed at the kill is produced again.

use std::time::Duration;

use walcast_pgoutput::Lsn;
use walcast_source::record;

use crate::support::source::kafka::{TopicReader, high_watermarks};
use crate::support::source::load::{self, Load, Rng};
use crate::support::source::verify;
use crate::support::source::{TestDb, config_file, ok, shared_kafka, wait_until_async};
use crate::support::walcast;

/// What was true right after one kill: the slot's position and the end of each partition.
struct Kill {
    confirmed: Lsn,
    ends: Vec<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_during_a_50k_load_loses_nothing() {
    let kafka = shared_kafka();
    let brokers = kafka.bootstrap();
    let db = TestDb::new("crash");
    db.prepare().await;
    let dir = ok(tempfile::tempdir());
    let path = config_file(dir.path(), &db, &brokers, "", "");
    let log_filter =
        std::env::var("WALCAST_TEST_SOURCE_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into());
    let mut child = walcast(
        "source",
        &["source", "--config", path.to_str().unwrap()],
        dir.path(),
    )
    .env("RUST_LOG", log_filter)
    .start()
    .unwrap();
    let streaming = db.streams_within(Duration::from_secs(60)).await;
    assert!(streaming, "source did not start: {}", child.log_tail(4000));

    let load = Load {
        pause: Some(Duration::from_millis(250)),
        ..Load::new(50_000)
    };
    let writer = {
        let db = db.clone();
        tokio::spawn(async move { load::write(&db, &load).await })
    };
    let mut rng = Rng::new(0xdead_beef);
    let mut kills = Vec::new();
    for k in 0..5 {
        // A random moment: what it interrupts (reading, producing, confirming) is up to chance.
        tokio::time::sleep(Duration::from_millis(rng.range(800, 3500) as u64)).await;
        child.kill();
        let released = wait_until_async("the slot released", Duration::from_secs(30), || async {
            !db.slot_active().await
        })
        .await
        .is_ok();
        assert!(released, "kill {k}: the walsender kept the slot");
        let confirmed = db.slot_confirmed().await;
        let (b, t) = (brokers.clone(), db.topic.clone());
        let ends = ok(tokio::task::spawn_blocking(move || stable_ends(&b, &t)).await);
        eprintln!("kill {k}: slot confirmed {confirmed}, partition ends {ends:?}");
        kills.push(Kill { confirmed, ends });
        child.restart().unwrap();
    }
    let txns = ok(writer.await);
    let rows = db.outbox().await;
    assert_eq!(rows.len(), 50_000);

    let (b, t) = (brokers.clone(), db.topic.clone());
    let reader = ok(tokio::task::spawn_blocking(move || {
        let mut reader = TopicReader::new(&b, &t);
        let all = reader.until_ids(50_000, Duration::from_secs(300));
        (reader, all)
    })
    .await);
    let (mut reader, all) = reader;
    if !all {
        let diag = db
            .query_text(
                "SELECT string_agg(format('%s state=%s sent=%s write=%s flush=%s wait=%s/%s', r.application_name, r.state, r.sent_lsn, r.write_lsn, r.flush_lsn, a.wait_event_type, a.wait_event), '; ') \
                 FROM pg_stat_replication r LEFT JOIN pg_stat_activity a ON a.pid = r.pid",
            )
            .await;
        eprintln!("replication: {diag:?}; current {}", db.current_lsn().await);
        let keep = dir.keep();
        eprintln!("log kept in {}", keep.display());
    }
    assert!(
        all,
        "only {} ids arrived; log:\n{}",
        reader.distinct(),
        child.log_tail(4000)
    );

    // Graceful stop: exit 0, everything confirmed.
    let status = tokio::task::block_in_place(|| child.terminate(Duration::from_secs(60)));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}; log:\n{}",
        child.log_tail(4000)
    );
    reader = ok(tokio::task::spawn_blocking(move || {
        reader.read_to_end(Duration::from_secs(60));
        reader
    })
    .await);
    let report = verify::check(&reader.records, &rows, 3);
    assert!(
        db.slot_confirmed().await > report.max_commit_lsn,
        "final confirm"
    );

    // Duplicates only from the tail the slot had not confirmed at each kill: a record written
    // after kill k that repeats an earlier one belongs to a transaction at or after the
    // slot's position at that kill.
    let mut first: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for r in &reader.records {
        let o = first.entry(r.id()).or_insert(r.offset);
        *o = (*o).min(r.offset);
    }
    let mut checked = 0;
    for (k, kill) in kills.iter().enumerate() {
        for r in &reader.records {
            let end = kill.ends[r.partition as usize];
            if r.offset < end || first[r.id()] >= end {
                continue;
            }
            checked += 1;
            let commit_lsn: Lsn = r
                .header(record::COMMIT_LSN)
                .and_then(|s| s.parse().ok())
                .unwrap_or(Lsn::ZERO);
            assert!(
                commit_lsn >= kill.confirmed,
                "kill {k}: event {} (commit {commit_lsn}) was confirmed ({}) yet produced again",
                r.id(),
                kill.confirmed
            );
        }
    }
    eprintln!(
        "{txns} transactions, {} records, {} duplicates (checked {checked} against the kill positions)",
        reader.records.len(),
        report.duplicates
    );
    db.drop_slot().await;
}

/// Partition ends once they stop moving (a killed producer's last request may still land).
pub(crate) fn stable_ends(brokers: &str, topic: &str) -> Vec<i64> {
    let mut last = high_watermarks(brokers, topic, 3);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = high_watermarks(brokers, topic, 3);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}
