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
//! commit timestamps (see `tests/e2e/measure.rs`): the commit of the sink transaction on the
//! last of the four targets minus the commit of the write transaction on the leader. The first
//! 3 s of each rate are warm-up and left out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/e2e/mod.rs"]
mod e2e;

use std::sync::Arc;
use std::time::Duration;

use e2e::load::{self, Counters, LoadSpec};
use e2e::measure::{self, Sample, mib};
use e2e::{Stack, StackOptions, verify};

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut stack = Stack::start(StackOptions {
            app: false,
            batch: 1000,
        })
        .await;
        println!("walcast end-to-end latency: commit on the leader → visible on all four targets");
        println!("| target rate | achieved | events | p50 | p95 | p99 | max | source RSS | sink RSS |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for (i, rate) in rates.iter().enumerate() {
            let phase_start = wall_clock();
            let counters = Arc::new(Counters::default());
            let spec = LoadSpec {
                events: (rate * secs as f64) as u64,
                sql_writers: 4,
                http_writers: 0,
                rate: Some(*rate),
                max_tx: 10,
                seed: 100 + i as u64,
                patience: Duration::from_secs(30),
            };
            let report = load::run(stack.write_dsn(), stack.write_port, spec, counters).await;
            let verdict = verify::converge(&mut stack, Duration::from_secs(300)).await;
            assert!(verdict.ok(), "{verdict:?}");
            let sample = Sample::take(&stack, Duration::ZERO, 0).await;
            let (lat, pending) = measure::latencies(&stack).await.unwrap();
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
                e2e::percentile(&sorted, 50.0),
                e2e::percentile(&sorted, 95.0),
                e2e::percentile(&sorted, 99.0),
                sorted.last().copied().unwrap_or(f64::NAN),
                mib(sample.rss_source),
                mib(sample.rss_sink),
            );
        }
    });
}

fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
