//! A 100,000-row transaction streams through in flat memory.

use std::time::Duration;

use walcast_replication::{ChangeStream, Event};

use crate::support::{TestDb, next_event, ok, shared_pg};

/// Peak resident set size of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_row_transaction_in_flat_memory() {
    const ROWS: i64 = 100_000;
    let db = TestDb::new(shared_pg(), "large");
    db.exec("CREATE TABLE big (id bigint PRIMARY KEY, pad text)")
        .await;
    let mut stream = ok(ChangeStream::start(db.stream_config(&["big"])).await);
    // ~1 KiB per row: ~100 MiB of row data if anything held the transaction.
    db.exec(&format!(
        "INSERT INTO big SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, {ROWS}) i"
    ))
    .await;
    // Reset the peak-RSS counter (Linux: "5" clears VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss_kib();
    let mut rows = 0i64;
    let mut max_buffered = 0;
    loop {
        let ev = next_event(&mut stream, Duration::from_secs(60)).await;
        max_buffered = max_buffered.max(stream.buffered());
        match ev {
            Event::Begin(_) => {}
            Event::Interrupted(_) => panic!("the connection broke mid-transaction"),
            Event::Change(c) => {
                rows += 1;
                assert_eq!(c.new.as_ref().and_then(|n| n["id"].as_i64()), Some(rows));
            }
            Event::Commit(c) => {
                ok(stream.confirm(c.end_lsn).await);
                break;
            }
        }
    }
    let growth_mib = peak_rss_kib().saturating_sub(before) / 1024;
    assert_eq!(rows, ROWS);
    assert!(max_buffered <= 1, "held {max_buffered} events at once");
    assert!(
        growth_mib < 40,
        "peak RSS grew by {growth_mib} MiB while streaming"
    );
    ok(stream.close().await);
    db.drop_slot().await;
}
