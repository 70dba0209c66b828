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
//! It first refuses, before emptying anything, when the topic no longer starts at offset 0
//! and no completed snapshot covers what was deleted (the `retention` module).
//!
//! `--from PEER` copies another target instead of reading the topic (`copy.rs`). Either way the
//! target carries the "rebuilding" marker until it is complete (`rebuilding.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;
use walcast_telemetry::admin::Health;
use walcast_telemetry::metrics::Registry;
use walcast_telemetry::progress::{EVENTS, Progress};

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
use crate::{rebuilding, retention, sql};

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
    retention::refuse_rebuild(config, target).await?;
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
    let mut bar = Progress::new(
        &format!("rebuild {target}"),
        EVENTS,
        total.max(0) as u64,
        progress,
    );
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
