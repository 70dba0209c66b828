//! Sustained load: writers at a fixed rate for a fixed time (5 minutes by default, as in CI;
//! 30 minutes with `WALCAST_SOAK_SECS=1800`, see `docs/operations.md`), printing every
//! interval the throughput, commit→visible-on-all-four-targets latency p50/p95/p99, the
//! slot's lag, the RSS of each component and the rows of the bookkeeping tables; then checks
//! that nothing was lost, every target is exact, memory stayed flat and the bookkeeping stayed
//! bounded by its window.
//!
//! The pruning windows are shortened through the environment (`WALCAST_SOAK_WINDOW_SECS`,
//! 60 s by default; the shipped defaults are days), so that a short run reaches the steady
//! state where pruning removes as many rows as the load adds.
//!
//! ```text
//! WALCAST_SOAK_SECS=1800 WALCAST_SOAK_RATE=1000 \
//!   cargo test --release -p walcast --test main soak:: -- --nocapture
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::stack::load::{self, Counters, LoadSpec};
use crate::support::stack::measure::{self, Sample, Seen, mib};
use crate::support::stack::{ONE_STACK_AT_A_TIME, Stack, StackOptions, env_or, verify};

/// The largest value of `f` over samples whose time lies in `[from, to)` of the run.
fn peak(samples: &[Sample], from: f64, to: f64, f: impl Fn(&Sample) -> Option<u64>) -> u64 {
    let end = samples.last().map(|s| s.at.as_secs_f64()).unwrap_or(0.0);
    samples
        .iter()
        .filter(|s| {
            let t = s.at.as_secs_f64() / end.max(1.0);
            t >= from && t < to
        })
        .filter_map(f)
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sustained_load_keeps_latency_bounded_and_memory_flat() {
    let _alone = ONE_STACK_AT_A_TIME.lock().await;
    let secs: u64 = env_or("WALCAST_SOAK_SECS", 300);
    let rate: f64 = env_or("WALCAST_SOAK_RATE", 200.0);
    let interval = Duration::from_secs(env_or("WALCAST_SOAK_INTERVAL_SECS", 30));
    // Short bookkeeping windows, through the environment as an operator would set them.
    let window: u64 = env_or("WALCAST_SOAK_WINDOW_SECS", 60);
    let prune_every: u64 = 5;
    let env = [
        (
            "sink",
            "WALCAST_PRUNE__PROCESSED_EVENTS_WINDOW_SECS",
            window,
        ),
        ("sink", "WALCAST_PRUNE__TOMBSTONE_WINDOW_SECS", window),
        ("sink", "WALCAST_PRUNE__INTERVAL_SECS", prune_every),
        ("app", "WALCAST_APP_IDEMPOTENCY_WINDOW_SECS", window),
        (
            "app",
            "WALCAST_APP_IDEMPOTENCY_PRUNE_INTERVAL_SECS",
            prune_every,
        ),
    ]
    .map(|(service, k, v)| (service, k.to_owned(), v.to_string()))
    .to_vec();
    let mut stack = Stack::start(StackOptions {
        env,
        ..StackOptions::default()
    })
    .await;
    println!(
        "sustained load: {rate} events/s for {secs} s (SQL transactions of 1-20 events + the write API); \
         bookkeeping windows {window} s, pruned every {prune_every} s"
    );
    let mut seen = Seen::default();
    let counters = Arc::new(Counters::default());
    let spec = LoadSpec {
        events: (rate * secs as f64) as u64,
        sql_writers: 3,
        http_writers: 1,
        rate: Some(rate),
        max_tx: 20,
        seed: 7,
        patience: Duration::from_secs(60),
        existing: Vec::new(),
    };
    let started = tokio::time::Instant::now();
    let loader = tokio::spawn(load::run(
        stack.write_dsn(),
        stack.write_port,
        spec,
        counters.clone(),
    ));
    let mut samples = Vec::new();
    let sample_every = Duration::from_secs(5);
    let mut next_print = interval;
    println!(
        "{:>6} {:>9} {:>9} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "t (s)",
        "written",
        "ev/s",
        "slot lag B",
        "source MiB",
        "sink MiB",
        "app MiB",
        "Kafka MiB",
        "processed",
        "tombstones",
        "idem keys"
    );
    let rows = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    while !loader.is_finished() {
        tokio::time::sleep(sample_every).await;
        let s = Sample::take(
            &stack,
            started.elapsed(),
            counters.committed.load(Ordering::SeqCst),
        )
        .await;
        // Every processed id and its commit time, read before pruning deletes it.
        seen.poll(&stack).await.unwrap();
        if s.at >= next_print {
            let prev = samples
                .iter()
                .rev()
                .find(|p: &&Sample| s.at - p.at >= interval)
                .map(|p| (p.at, p.written))
                .unwrap_or_default();
            let rate = (s.written - prev.1) as f64 / (s.at - prev.0).as_secs_f64();
            println!(
                "{:>6.0} {:>9} {:>9.0} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                s.at.as_secs_f64(),
                s.written,
                rate,
                s.slot_lag
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into()),
                mib(s.rss_source),
                mib(s.rss_sink),
                mib(s.rss_app),
                mib(s.rss_kafka),
                rows(s.rows[0]),
                rows(s.rows[1]),
                rows(s.rows[2])
            );
            next_print += interval;
        }
        let dead = stack.dead_services();
        assert!(dead.is_empty(), "{}", dead.join("\n"));
        samples.push(s);
    }
    let report = loader.await.unwrap();
    println!(
        "written: {} events in {:.0} s = {:.0} events/s ({} failed writes retried)",
        report.committed,
        report.seconds,
        report.committed as f64 / report.seconds,
        report.failures
    );

    let verdict = verify::converge_seen(&mut stack, Duration::from_secs(180), Some(&seen)).await;
    seen.poll(&stack).await.unwrap();
    let (lat, _, pending) = seen.latencies(&stack).await.unwrap();
    let t0 = lat.first().map(|l| l.0).unwrap_or(0.0);
    println!(
        "commit → visible on all four targets, per {} s of commits:",
        interval.as_secs()
    );
    let mut bucket = 0u64;
    loop {
        let (lo, hi) = (
            (bucket * interval.as_secs()) as f64,
            ((bucket + 1) * interval.as_secs()) as f64,
        );
        let ms: Vec<f64> = lat
            .iter()
            .filter(|(at, _)| at - t0 >= lo && at - t0 < hi)
            .map(|l| l.1)
            .collect();
        if ms.is_empty() {
            break;
        }
        println!(
            "  {lo:>5.0}-{hi:<5.0} s  {:>7} events  {}",
            ms.len(),
            measure::summary(ms)
        );
        bucket += 1;
    }
    println!(
        "  whole run  {:>7} events  {}",
        lat.len(),
        measure::summary(lat.iter().map(|l| l.1).collect())
    );
    assert!(verdict.ok(), "after the soak: {verdict:?}");
    assert_eq!(pending, 0, "events not on every target after convergence");

    // The bookkeeping is bounded by its window: never more rows than the load can write in a
    // window plus two pruning passes (with room for bursts), however long the run.
    let bound = (rate * (window + 2 * prune_every) as f64 * 1.5) as i64 + 1000;
    for (i, table) in ["processed_events", "walcast_tombstones", "idempotency_keys"]
        .iter()
        .enumerate()
    {
        let peak = samples.iter().filter_map(|s| s.rows[i]).max().unwrap_or(0);
        println!("{table}: at most {peak} rows (bound {bound})");
        assert!(peak <= bound, "{table} grew to {peak} rows, past {bound}");
    }

    // Memory is flat: the last quarter's peak is within 25% (+16 MiB) of the second quarter's
    // peak (the first quarter is warm-up: pools, caches and queues fill).
    for (name, f) in [
        (
            "source",
            (|s: &Sample| s.rss_source) as fn(&Sample) -> Option<u64>,
        ),
        ("sink", |s: &Sample| s.rss_sink),
        ("app", |s: &Sample| s.rss_app),
    ] {
        let (early, late) = (peak(&samples, 0.25, 0.5, f), peak(&samples, 0.75, 1.01, f));
        println!(
            "{name}: peak RSS {:.1} MiB in the second quarter, {:.1} MiB in the last",
            early as f64 / 1024.0,
            late as f64 / 1024.0
        );
        assert!(
            late <= early + early / 4 + 16 * 1024,
            "{name}: memory grew from {early} KiB to {late} KiB"
        );
    }
}
