//! `walcast_applied_lsn` means "every event with a commit LSN up to this one is applied".

use std::time::Duration;

use crate::support::*;

/// A target's applied LSN never passes an event not applied yet on another partition (the
/// greatest commit LSN over all partitions would claim earlier commits still pending), and
/// idle partitions do not hold it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applied_lsn_never_passes_an_unapplied_event_and_idle_partitions_do_not_hold_it() {
    const BEHIND: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(3).await;
    let targets = fresh_targets();
    let path = write_config(dir.path(), &topic, &targets, 5);
    // Small fetches, so that partition 1's one event arrives among the first batches while
    // partition 0 still has hundreds of older ones pending.
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "\"fetch.wait.max.ms\" = \"500\"",
        "\"fetch.wait.max.ms\" = \"500\"\n\"max.partition.fetch.bytes\" = \"2048\"",
        1,
    );
    std::fs::write(&path, text).unwrap();
    // Partition 0: LSNs 0x100 … BEHIND × 0x100; partition 1: one later commit; partition 2
    // stays empty.
    let mut events: Vec<(i32, u64)> = (1..=BEHIND).map(|i| (0, i * 0x100)).collect();
    events.push((1, (BEHIND + 1) * 0x100));
    produce_at(&topic, &events).await;
    let last = (BEHIND + 1) * 0x100;

    let sink = Running::start(load(&path)).await;
    let clients = {
        let mut c = Vec::new();
        for (name, dsn) in &targets {
            c.push((name.clone(), connect(dsn).await));
        }
        c
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut observed_behind = 0;
    'watch: loop {
        let mut done = 0;
        for (name, c) in &clients {
            // One statement: one snapshot of the figure and partition 0's progress.
            let row = c
                .query_opt(
                    "SELECT (SELECT (commit_lsn - '0/0')::bigint FROM walcast_applied_lsn), \
                     (SELECT next_offset FROM walcast_offsets WHERE partition = 0)",
                    &[],
                )
                .await
                .ok()
                .flatten();
            let Some(row) = row else { continue };
            let (applied, next0): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
            let next0 = next0.unwrap_or(0) as u64;
            if next0 < BEHIND {
                observed_behind += 1;
                // The first event not applied on partition 0 has LSN (next0 + 1) × 0x100.
                assert!(
                    applied.is_none_or(|a| (a as u64) < (next0 + 1) * 0x100),
                    "{name}: applied LSN {:X?} while partition 0's event at {:X} is not applied",
                    applied,
                    (next0 + 1) * 0x100
                );
            } else if applied == Some(last as i64) {
                done += 1;
            }
        }
        if done == clients.len() {
            break 'watch;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the applied LSN did not reach {last:X} on every target (partition 2 is empty, \
             partitions 0 and 1 consumed)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(observed_behind > 0, "the test never saw partition 0 behind");
    for (name, dsn) in &targets {
        assert_eq!(rows(dsn).await.len() as u64, BEHIND + 1, "{name}");
        assert_eq!(
            sink.metric(walcast_sink::metrics::APPLIED_COMMIT_LSN, name),
            last as f64,
            "{name}"
        );
    }
    sink.stop().await;
}
