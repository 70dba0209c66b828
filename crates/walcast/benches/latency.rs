//! End-to-end latency: commit on the leader → visible on all four targets, at fixed rates.
//!
//! ```text
//! cargo bench -p walcast --bench latency                     # 1,000 and 5,000 events/s, 30 s each
//! WALCAST_LATENCY_RATES=1000 WALCAST_LATENCY_SECS=60 cargo bench -p walcast --bench latency
//! ```
//!
//! The whole pipeline runs on real parts (Postgres leader + three replica clusters, Apache
//! Kafka, the release `walcast` binary as source and sink). Four SQL writers commit
//! transactions of 1–10 outbox events at the fixed rate. Latency is exact, from Postgres
//! commit timestamps (see `tests/support/stack/measure.rs`): the commit of the sink transaction on the
//! last of the four targets minus the commit of the write transaction on the leader. The first
//! 3 s of each rate are left out, and before the first rate the system runs
//! `WALCAST_LATENCY_WARMUP_SECS` (default 60) at 500 events/s unmeasured: a freshly started
//! broker JVM spends most of a core on JIT compilation once load arrives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/stack/mod.rs"]
mod stack;

use std::sync::Arc;
use std::time::Duration;

use stack::load::{self, Counters, LoadSpec};
use stack::measure::{self, Sample, mib};
use stack::{Stack, StackOptions, verify};

fn main() {
    let rates: Vec<f64> = std::env::var("WALCAST_LATENCY_RATES")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs: u64 = std::env::var("WALCAST_LATENCY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let warmup: u64 = std::env::var("WALCAST_LATENCY_WARMUP_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut stack = Stack::start(StackOptions {
            app: false,
            batch: 1000,
            ..StackOptions::default()
        })
        .await;
        if warmup > 0 {
            // A broker that just started spends most of a core compiling (the JVM's C2) once
            // load arrives; production brokers are warm. Load first, measure after.
            let spec = LoadSpec {
                events: 500 * warmup,
                sql_writers: 4,
                http_writers: 0,
                rate: Some(500.0),
                max_tx: 10,
                seed: 99,
                patience: Duration::from_secs(30),
                existing: Vec::new(),
            };
            let counters = Arc::new(Counters::default());
            load::run(stack.write_dsn(), stack.write_port, spec, counters).await;
            let verdict = verify::converge(&mut stack, Duration::from_secs(300)).await;
            assert!(verdict.ok(), "{verdict:?}");
            eprintln!("warm-up: {warmup} s at 500 events/s done");
        }
        println!("walcast end-to-end latency: commit on the leader → visible on all four targets");
        println!("| target rate | achieved | events | p50 | p95 | p99 | max | source RSS | sink RSS |");
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut breakdown = Vec::new();
        for (i, rate) in rates.iter().enumerate() {
            let phase_start = wall_clock();
            let cpu_before = measure::cpu_seconds(&stack);
            let ack_before = measure::histogram_totals(stack.source_admin, SOURCE_ACK);
            let apply_before = measure::histogram_totals(stack.sink_admin, SINK_APPLY);
            let counters = Arc::new(Counters::default());
            let spec = LoadSpec {
                events: (rate * secs as f64) as u64,
                sql_writers: 4,
                http_writers: 0,
                rate: Some(*rate),
                max_tx: 10,
                seed: 100 + i as u64,
                patience: Duration::from_secs(30),
                existing: Vec::new(),
            };
            let report = load::run(stack.write_dsn(), stack.write_port, spec, counters).await;
            let verdict = verify::converge(&mut stack, Duration::from_secs(300)).await;
            assert!(verdict.ok(), "{verdict:?}");
            let wall = wall_clock() - phase_start;
            breakdown.push(where_it_went(&stack, *rate, wall, &cpu_before, ack_before, apply_before));
            let sample = Sample::take(&stack, Duration::ZERO, 0).await;
            let (lat, per_target, pending) = measure::latencies_by_target(&stack).await.unwrap();
            let since = phase_start + 3.0;
            let targets: Vec<String> = per_target
                .into_iter()
                .map(|(name, l)| {
                    let mut ms: Vec<f64> =
                        l.iter().filter(|(at, _)| *at >= since).map(|l| l.1).collect();
                    ms.sort_by(f64::total_cmp);
                    format!(
                        "{name} p50 {:.0} / p99 {:.0} ms",
                        stack::percentile(&ms, 50.0),
                        stack::percentile(&ms, 99.0)
                    )
                })
                .collect();
            breakdown.push(format!("  per target: {}", targets.join(", ")));
            assert_eq!(pending, 0);
            let ms: Vec<f64> = lat
                .iter()
                .filter(|(at, _)| *at >= phase_start + 3.0)
                .map(|l| l.1)
                .collect();
            let n = ms.len();
            let mut sorted = ms;
            sorted.sort_by(f64::total_cmp);
            println!(
                "| {rate:.0}/s | {:.0}/s | {n} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} MiB | {} MiB |",
                report.committed as f64 / report.seconds,
                stack::percentile(&sorted, 50.0),
                stack::percentile(&sorted, 95.0),
                stack::percentile(&sorted, 99.0),
                sorted.last().copied().unwrap_or(f64::NAN),
                mib(sample.rss_source),
                mib(sample.rss_sink),
            );
        }
        println!();
        println!("where the time and the CPU went (from the start of the load until all four targets had every event):");
        for line in breakdown {
            println!("{line}");
        }
    });
}

const SOURCE_ACK: &str = "walcast_source_commit_to_ack_seconds";
const SINK_APPLY: &str = "walcast_sink_apply_seconds";

/// One line per rate: mean commit → broker ack (source), mean batch apply time and events per
/// batch (sink, all targets), and the cores each part of the system used.
fn where_it_went(
    stack: &Stack,
    rate: f64,
    wall: f64,
    cpu_before: &[(&'static str, f64)],
    ack_before: (f64, f64),
    apply_before: (f64, f64),
) -> String {
    let ack = measure::histogram_totals(stack.source_admin, SOURCE_ACK);
    let apply = measure::histogram_totals(stack.sink_admin, SINK_APPLY);
    let mean_ms = |now: (f64, f64), before: (f64, f64)| {
        1000.0 * (now.0 - before.0) / (now.1 - before.1).max(1.0)
    };
    let cpu: Vec<String> = measure::cpu_seconds(stack)
        .iter()
        .zip(cpu_before)
        .map(|((name, now), (_, before))| format!("{name} {:.2}", (now - before) / wall))
        .collect();
    format!(
        "{rate:.0}/s over {wall:.0} s: source commit→ack mean {:.1} ms; sink {:.0} batches, mean {:.1} ms per batch; cores used: {}",
        mean_ms(ack, ack_before),
        apply.1 - apply_before.1,
        mean_ms(apply, apply_before),
        cpu.join(", ")
    )
}

fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
