//! `walcast sink rebuild --target NAME`: empty one target and re-consume it from the earliest
//! retained offset, while the other targets (and the running sink) carry on. Its held changes
//! and dead-letter holds (`walcast_held`) are emptied with it: the replay re-creates them.
//!
//! The rebuild holds the target's rebuild lock (a session advisory lock) for its whole run.
//! A running sink's task for that target finds the lock taken at its next batch, writes
//! nothing, and waits; once the rebuild ends (or its process dies, which frees the lock) the
//! task reads the offsets the rebuild stored and continues from there. Each rebuild batch is
//! an ordinary batch transaction, so a rebuild interrupted half-way leaves a consistent,
//! partially rebuilt target that the sink completes.
//!
//! The rebuild stops at the high watermarks seen when it started; the sink applies the rest.
//!
//! `--from PEER` copies another target instead of reading the topic (`copy.rs`). Either way the
//! target carries the "rebuilding" marker until it is complete (`rebuilding.rs`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;
use walcast_telemetry::admin::Health;
use walcast_telemetry::metrics::Registry;

use crate::batch::ApplyStats;
use crate::config::{SinkConfig, TargetConfig};
use crate::copy::{self, CopiedTable};
use crate::dead_letter::DeadLetters;
use crate::error::{Error, Result};
use crate::kafka::{Consumer, Watermarks};
use crate::metrics::TargetMetrics;
use crate::monitor::Readiness;
use crate::pipeline::{self, Goal, TargetCtx};
use crate::progress;
use crate::projection::Projections;
use crate::runner::schema_files;
use crate::store::Store;
use crate::{rebuilding, sql};

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildReport {
    /// Records consumed (applied, skipped or dead-lettered).
    pub records: u64,
    pub dead_lettered: u64,
    pub elapsed: Duration,
    /// Rows per table copied from a peer (`--from PEER`); empty for a rebuild from the topic.
    pub copied: Vec<CopiedTable>,
}

/// Where a rebuild takes the target's contents from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildFrom {
    /// Re-consume the topic from its earliest retained offset ([`rebuild`]).
    Topic,
    /// Copy another target of this sink at one consistent snapshot (`copy.rs`).
    Peer(String),
}

/// Rebuilds `target` from `from`.
pub async fn rebuild_from(
    config: &SinkConfig,
    target: &str,
    from: &RebuildFrom,
    progress: bool,
) -> Result<RebuildReport> {
    match from {
        RebuildFrom::Topic => rebuild(config, target, progress).await,
        RebuildFrom::Peer(peer) => copy::from_peer(config, target, peer).await,
    }
}

/// The `[targets.NAME]` entry of `target`, or an error listing the names there are.
pub(crate) fn target_config<'c>(config: &'c SinkConfig, target: &str) -> Result<&'c TargetConfig> {
    config.targets.get(target).ok_or_else(|| {
        Error::Config(format!(
            "no target {target:?}; the connector file has: {}",
            config
                .targets
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Rebuilds `target` as described in the module docs: the target loop ([`target::consume`]) on
/// the emptied target, with the rebuild's end offsets as its goal. With `progress`, a progress
/// line with rate and ETA is drawn on stderr.
pub async fn rebuild(config: &SinkConfig, target: &str, progress: bool) -> Result<RebuildReport> {
    let t = target_config(config, target)?;
    let projections = Projections::compile(config)?;
    let schema = schema_files(config)?;
    let group = config.group(target);
    let store = Store::connect(target, &t.dsn, &group, &config.kafka.topic).await?;
    store.apply_schema(&schema).await?;
    let started = Instant::now();

    let pg = |what: &str| Error::pg(target, what.to_owned());
    store
        .client()
        .execute(sql::REBUILD_LOCK_EXCLUSIVE, &[&group])
        .await
        .map_err(pg("taking the rebuild lock"))?;
    rebuilding::mark(store.client(), target, &group, "topic").await?;
    info!(target = %target, "rebuild lock taken; emptying the target");
    store
        .client()
        .batch_execute(&format!(
            "BEGIN; {}; DELETE FROM walcast_offsets WHERE consumer_group = '{g}'; \
             DELETE FROM walcast_applied_lsn WHERE consumer_group = '{g}'; \
             DELETE FROM walcast_topic_partitions WHERE consumer_group = '{g}'; COMMIT",
            sql::truncate_all(&projections.tables),
            g = group.replace('\'', "''"),
        ))
        .await
        .map_err(pg("emptying the target"))?;

    let source = Consumer::new(config, &group)?;
    let marks = Watermarks::new(config)?;
    let ends = marks.fetch(&source.partitions().await?).await?;
    let total: i64 = ends.values().map(|(low, high)| high - low).sum();
    let mut bar = Progress::new(target, total.max(0) as u64, progress);
    let mut report = RebuildReport {
        records: 0,
        dead_lettered: 0,
        elapsed: Duration::ZERO,
        copied: Vec::new(),
    };
    let ctx = TargetCtx {
        name: target.to_owned(),
        group: group.clone(),
        dsn: t.dsn.clone(),
        config: Arc::new(config.clone()),
        projections: Arc::new(projections),
        schema: Arc::new(schema),
        dlq: DeadLetters::new(config)?.for_target(target),
        // The rebuild's process serves no metrics and no readiness.
        metrics: TargetMetrics::new(&Registry::default(), target),
        readiness: Readiness::new(Health::default(), [target.to_owned()]),
    };
    let positions = Mutex::new(progress::Progress::default());
    let (_keep, mut stop) = watch::channel(false);
    let mut committed = |records: usize, stats: &ApplyStats, stored: &BTreeMap<i32, i64>| {
        report.records += records as u64;
        report.dead_lettered += stats.dead_lettered;
        let applied: i64 = (ends.iter())
            .map(|(p, (low, high))| {
                (stored.get(p).copied().unwrap_or(*low).min(*high) - low).max(0)
            })
            .sum();
        bar.update(applied as u64);
    };
    let goal = Goal {
        store: Some(store),
        ends: ends.clone(),
        committed: &mut committed,
    };
    let Some((store, _)) =
        pipeline::consume(&ctx, &source, &positions, &mut stop, Some(goal)).await?
    else {
        return Err(Error::Config(format!(
            "the rebuild of {target} stopped before its end"
        )));
    };
    // Everything below the watermarks read at the start is applied, and an event older than
    // one of them was on the topic before them: the greatest LSN applied is a true figure.
    // It is written with the marker's removal: from here on the target may answer queries.
    let applied = progress::lock(&positions).applied.max();
    rebuilding::finish(store.client(), target, &group, applied).await?;
    let _ = store.client().execute(sql::REBUILD_UNLOCK, &[&group]).await;
    report.elapsed = started.elapsed();
    bar.finish();
    info!(target = %target, records = report.records, seconds = report.elapsed.as_secs_f64(), "rebuild done");
    Ok(report)
}

/// `replica-2 [#########...........] 45.0%  45000/100000  12000 ev/s  ETA 4s` on stderr.
struct Progress {
    target: String,
    total: u64,
    done: u64,
    started: Instant,
    last: Option<Instant>,
    enabled: bool,
    tty: bool,
}

impl Progress {
    fn new(target: &str, total: u64, enabled: bool) -> Progress {
        Progress {
            target: target.to_owned(),
            total,
            done: 0,
            started: Instant::now(),
            last: None,
            enabled,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64) {
        self.done = done;
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        };
        if self.last.is_some_and(|l| l.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        self.draw(false);
    }

    fn finish(&mut self) {
        self.done = self.done.max(self.total);
        self.draw(true);
    }

    fn draw(&self, last: bool) {
        if !self.enabled {
            return;
        }
        let line = render(&self.target, self.done, self.total, self.started.elapsed());
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}{}", if last { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
    }
}

fn render(target: &str, done: u64, total: u64, elapsed: Duration) -> String {
    const WIDTH: u64 = 30;
    let frac = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((frac * WIDTH as f64) as u64).min(WIDTH);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = if done >= total {
        format!("done in {:.1}s", elapsed.as_secs_f64())
    } else if rate > 0.0 {
        format!("ETA {:.0}s", (total - done) as f64 / rate)
    } else {
        "ETA ?".to_owned()
    };
    format!(
        "rebuild {target} [{}{}] {:5.1}%  {done}/{total} events  {rate:.0} ev/s  {eta}",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize),
        frac * 100.0,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_shows_percent_rate_and_eta() {
        let line = render("replica-2", 500, 1000, Duration::from_secs(1));
        assert!(line.contains(" 50.0%"), "{line}");
        assert!(
            line.contains("500 ev/s") && line.contains("ETA 1s"),
            "{line}"
        );
        assert!(render("r", 0, 0, Duration::from_secs(1)).contains("done"));
    }
}
