//! One target's task: connect, read the stored offsets, seek, then batch → apply → repeat.
//!
//! ```text
//!             ┌──────────── error / diverged / rebuild running: back off, reconnect ───┐
//!             ▼                                                                      │
//!  connect + schema ─▶ load walcast_offsets ─▶ assign & seek ─▶ poll batch ─▶ apply in one tx
//!                                                                   ▲                │
//!                                                                   └── committed ───┘
//! ```
//!
//! Before it seeks, the task checks that the topic still holds every record from its stored
//! offsets on (the `retention` module); if not, that target stops (consumes nothing, named on
//! `/ready`, `walcast_sink_target_gap` = 1) and is checked again every
//! `metadata_refresh_secs`, while the others run on.
//!
//! A target whose database is down only stalls its own task; its records stay in Kafka, and on
//! reconnect the task seeks to what its database says it has and catches up. Nothing is kept
//! in memory across a failure: the database is the only record of progress.
//!
//! `walcast sink rebuild` runs this same loop with a [`Goal`]: on its one connection (which
//! holds the rebuild lock), without reconnecting, until the end offsets read at its start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};
use walcast_config::Backoff;
use walcast_pgoutput::Lsn;

use crate::batch::{self, ApplyStats};
use crate::config::SinkConfig;
use crate::dead_letter::DeadLetters;
use crate::error::{Error, Result};
use crate::kafka::{self, Consumer};
use crate::metrics::TargetMetrics;
use crate::monitor::Readiness;
use crate::monitor::{self, HELD_REFRESH};
use crate::partitions::{self, Decision};
use crate::progress::{Applied, Progress, lock};
use crate::projection::Projections;
use crate::retention::{self, Verdict};
use crate::sleep_or_stop;
use crate::store::{Outcome, Store};

/// Everything a target task needs.
#[derive(Debug, Clone)]
pub(crate) struct TargetCtx {
    pub(crate) name: String,
    pub(crate) group: String,
    pub(crate) dsn: walcast_postgres::Dsn,
    pub(crate) config: Arc<SinkConfig>,
    pub(crate) projections: Arc<Projections>,
    pub(crate) schema: Arc<Vec<(String, String)>>,
    pub(crate) dlq: DeadLetters,
    pub(crate) metrics: TargetMetrics,
    pub(crate) readiness: Readiness,
}

/// The delay before restart number `attempt` (0-based, then counted).
fn next_delay(backoff: &Backoff, attempt: &mut u32) -> Duration {
    let d = backoff.delay(*attempt).unwrap_or(backoff.max);
    *attempt = attempt.saturating_add(1);
    d
}

/// A connected target: its store, the topic's partitions, the stored offsets, and why some
/// partitions are refused (the `partitions` module).
struct Synced {
    store: Store,
    partitions: Vec<i32>,
    stored: BTreeMap<i32, i64>,
    refused: Option<(usize, String)>,
}

/// Connects, applies the schema (when asked: after an error the database may be a new one;
/// the schema files alter only what is missing, so re-applying them locks out no reader),
/// reads the stored offsets, checks the partition count and retention (the `retention`
/// module: [`Error::Gap`] when the topic lost records the target needs) and seeks.
/// With `given`, uses that connection, prepared by its owner (a rebuild's).
async fn sync(
    ctx: &TargetCtx,
    source: &Consumer,
    schema: bool,
    given: Option<Store>,
) -> Result<Synced> {
    let store = match given {
        Some(store) => store,
        None => Store::connect(&ctx.name, &ctx.dsn, &ctx.group, source.topic()).await?,
    };
    if schema {
        store.apply_schema(&ctx.schema).await?;
    }
    let stored = store.load_offsets().await?;
    let partitions = source.partitions().await?;
    let now = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
    let decision =
        partitions::check(store.client(), &ctx.name, &ctx.group, source.topic(), now).await?;
    let refusal = partitions::refusal(&ctx.name, &ctx.group, source.topic(), &decision);
    let (assigned, refused) = match (decision, refusal) {
        (Decision::Pinned { recorded, now }, Some(why)) => (
            partitions
                .iter()
                .copied()
                .filter(|p| *p < recorded)
                .collect(),
            Some(((now - recorded) as usize, why)),
        ),
        (Decision::Stopped { .. }, Some(why)) => {
            ctx.metrics.partitions_refused.set(partitions.len() as f64);
            return Err(Error::PartitionsChanged(why));
        }
        _ => (partitions.clone(), None),
    };
    // Read after the stored offsets: a stored offset is never past a watermark read later.
    let marks = source.watermarks(&assigned).await?;
    let starts = match retention::check(&ctx.config, &marks, &stored).await? {
        Verdict::Consume(starts) => starts,
        Verdict::Gaps(gaps) => {
            source.unassign()?;
            return Err(Error::Gap(retention::stop_message(
                &ctx.config,
                &ctx.name,
                &gaps,
            )));
        }
    };
    source.assign(&assigned, &starts)?;
    Ok(Synced {
        store,
        partitions,
        stored,
        refused,
    })
}

/// Runs one target until `stop` turns true. A target that cannot be used (down, or
/// misconfigured: wrong credentials, missing database) is retried while the others run, so
/// one bad target never stops the read DB and the other replicas.
pub(crate) async fn run(ctx: TargetCtx, mut stop: watch::Receiver<bool>) -> Result<()> {
    let source = Consumer::new(&ctx.config, &ctx.group)?;
    let positions: Arc<Mutex<Progress>> = Arc::default();
    let lag_task = tokio::spawn(monitor::run(
        ctx.config.clone(),
        ctx.metrics.clone(),
        positions.clone(),
        stop.clone(),
    ));
    let result = consume(&ctx, &source, &positions, &mut stop, None).await;
    lag_task.abort();
    ctx.metrics.up.set(0.0);
    result.map(drop)
}

/// Where a target loop ends besides shutdown: at the end offsets of a rebuild.
pub(crate) struct Goal<'a> {
    /// The connection to consume on, prepared by the rebuild (its lock taken, the target
    /// emptied). The loop never reconnects, as both belong to this connection: any error,
    /// and any move of the stored offsets by someone else, ends it.
    pub(crate) store: Option<Store>,
    /// Per partition, the `(low, high)` watermarks read at the start: the loop ends once
    /// every partition's stored offset reached `high` (or it was empty).
    pub(crate) ends: BTreeMap<i32, (i64, i64)>,
    /// Called after each committed batch: the records it consumed, its counts, the stored
    /// offsets.
    pub(crate) committed: &'a mut Committed<'a>,
}

/// What a [`Goal`] is told of each committed batch.
pub(crate) type Committed<'a> = dyn FnMut(usize, &ApplyStats, &BTreeMap<i32, i64>) + Send + 'a;

impl Goal<'_> {
    fn reached(&self, stored: &BTreeMap<i32, i64>) -> bool {
        (self.ends.iter())
            .all(|(p, (low, high))| high <= low || stored.get(p).is_some_and(|n| n >= high))
    }
}

/// How long a rebuild waits for records below its end offsets before it finishes anyway.
const GOAL_IDLE: Duration = Duration::from_secs(15);

/// The target loop (module docs). With a `goal`, it ends there and returns its connection and
/// the stored offsets; an error or a move of the offsets by someone else ends it too.
pub(crate) async fn consume(
    ctx: &TargetCtx,
    source: &Consumer,
    positions: &Mutex<Progress>,
    stop: &mut watch::Receiver<bool>,
    mut goal: Option<Goal<'_>>,
) -> Result<Option<(Store, BTreeMap<i32, i64>)>> {
    let config = &ctx.config;
    let backoff = config.backoff();
    // Restarts in a row since the last good connection.
    let mut attempt = 0u32;
    // After an error the database may be a new one (restored, re-created): apply the schema.
    // A rebuild's connection comes with its schema applied.
    let mut need_schema = goal.is_none();
    let refresh = Duration::from_secs(config.kafka.metadata_refresh_secs.max(1));
    let limits = kafka::Limits::of(config);
    'connect: while !*stop.borrow() {
        let Synced {
            mut store,
            partitions,
            mut stored,
            refused,
        } = match sync(
            ctx,
            source,
            need_schema,
            goal.as_mut().and_then(|g| g.store.take()),
        )
        .await
        {
            Ok(s) => s,
            Err(e) if goal.is_some() => return Err(e),
            // The topic lost records this target needs: it consumes nothing and is checked
            // again (a rebuild by another process stores offsets past the gap); the others
            // run on. Never reset or skipped here.
            Err(Error::Gap(why)) => {
                error!(target = %ctx.name, topic = %config.kafka.topic, "{why}");
                ctx.readiness.down(&ctx.name, &why);
                ctx.metrics.up.set(0.0);
                ctx.metrics.gap.set(1.0);
                if sleep_or_stop(refresh, stop).await {
                    break;
                }
                continue;
            }
            // Needs an operator (wrong credentials, missing database): named in the log, on
            // /ready and by walcast_sink_target_up, retried slowly; the other targets run on.
            Err(e) if !e.is_retryable() => {
                error!(target = %ctx.name, error = %e, "target needs an operator; retrying slowly");
                ctx.readiness.down(&ctx.name, &e.to_string());
                ctx.metrics.up.set(0.0);
                ctx.metrics.retries.inc();
                if sleep_or_stop(Duration::from_millis(config.retry.max_backoff_ms), stop).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                warn!(target = %ctx.name, error = %e, retryable = e.is_retryable(), "target not available; retrying");
                ctx.readiness.down(&ctx.name, &e.to_string());
                ctx.metrics.up.set(0.0);
                ctx.metrics.retries.inc();
                if sleep_or_stop(next_delay(&backoff, &mut attempt), stop).await {
                    break;
                }
                continue;
            }
        };
        need_schema = false;
        attempt = 0;
        ctx.metrics.gap.set(0.0);
        info!(target = %ctx.name, group = %ctx.group, partitions = partitions.len(), ?stored, "target consuming");
        ctx.metrics.up.set(1.0);
        ctx.metrics
            .partitions_refused
            .set(refused.as_ref().map_or(0.0, |r| r.0 as f64));
        match &refused {
            None => ctx.readiness.up(&ctx.name),
            Some((_, why)) => {
                error!(target = %ctx.name, "{why}");
                ctx.readiness.down(&ctx.name, why);
            }
        }
        {
            let mut p = lock(positions);
            p.epoch += 1;
            p.offsets = Some(stored.clone());
            p.applied = Applied::default();
            p.figure = None;
        }
        // The applied-up-to LSN last written on this connection (see the `applied` module);
        // the stored figure only grows, and after a rebuild it may be lower than any before.
        let mut written = Lsn::ZERO;
        let mut next_refresh = Instant::now() + refresh;
        let mut next_held = Instant::now();
        let mut idle_since = Instant::now();

        loop {
            if goal.as_ref().is_some_and(|g| g.reached(&stored)) {
                return Ok(Some((store, stored)));
            }
            let records = tokio::select! {
                r = source.next_batch(limits, config.linger(), Duration::from_millis(500)) => r,
                _ = stop.wait_for(|s| *s) => break 'connect,
            };
            let records = match records {
                Ok(records) => records,
                // An offset out of range: check retention again, from the stored offsets
                // (the records of the lost batch were not stored; they are read again).
                Err(Error::Gap(why)) if goal.is_none() => {
                    warn!(target = %ctx.name, "{why}; checking retention");
                    if sleep_or_stop(next_delay(&backoff, &mut attempt), stop).await {
                        break 'connect;
                    }
                    continue 'connect;
                }
                Err(e) => return Err(e),
            };
            if goal.is_some() {
                if !records.is_empty() {
                    idle_since = Instant::now();
                } else if idle_since.elapsed() > GOAL_IDLE {
                    info!(target = %ctx.name, "no records below the start watermarks for 15 s; finishing");
                    return Ok(Some((store, stored)));
                }
            }
            // A rebuild consumes the partitions it found at its start.
            if goal.is_none() && Instant::now() >= next_refresh {
                next_refresh = Instant::now() + refresh;
                match source.partitions().await {
                    // Partitions added, or refused ones that an operator may have accepted:
                    // sync again (it checks the count). Records of this poll are dropped; the
                    // new assignment re-reads them.
                    Ok(now) if now != partitions || refused.is_some() => {
                        info!(target = %ctx.name, old = ?partitions, new = ?now, "checking the partitions again");
                        continue 'connect;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(target = %ctx.name, error = %e, "could not refresh partitions"),
                }
            }
            if Instant::now() >= next_held {
                next_held = Instant::now() + HELD_REFRESH;
                monitor::held_gauges(&ctx.name, &ctx.metrics, &store).await;
            }
            let (applied, figure) = {
                let p = lock(positions);
                let applied = p.applied.with_records(&ctx.projections, &records, &stored);
                let figure = applied.floor(&partitions).max(p.figure);
                (applied, figure)
            };
            let figure = figure.filter(|f| *f > written);
            if records.is_empty() && figure.is_none() {
                continue;
            }
            // Without records, a transaction of the bookkeeping alone records a figure that
            // moved because the partitions behind reached their high watermarks.
            let mut batch = batch::decode(&ctx.projections, &records, &stored);
            batch.applied_lsn = figure;
            let started = std::time::Instant::now();
            let dlq = ctx.dlq.clone();
            match store
                .apply(&ctx.projections, &mut batch, &records, &stored, &dlq)
                .await
            {
                Ok(Outcome::Committed(stats)) => {
                    stored.extend(batch.next_offsets.iter().map(|(p, o)| (*p, *o)));
                    {
                        let mut p = lock(positions);
                        p.offsets = Some(stored.clone());
                        p.applied = applied;
                    }
                    if let Some(g) = &mut goal {
                        (g.committed)(records.len(), &stats, &stored);
                    }
                    let m = &ctx.metrics;
                    if let Some(lsn) = figure {
                        written = lsn;
                        m.applied_commit_lsn.set(lsn.as_u64());
                    }
                    if records.is_empty() {
                        continue;
                    }
                    m.apply_seconds.observe(started.elapsed().as_secs_f64());
                    m.batches.inc();
                    m.applied.inc_by(stats.applied);
                    m.duplicates.inc_by(stats.duplicates);
                    m.stale.inc_by(stats.stale);
                    m.missing_row.inc_by(stats.missing_row);
                    m.held.inc_by(stats.held);
                    m.released.inc_by(stats.released);
                    if stats.held + stats.released + stats.dead_lettered > 0 {
                        next_held = next_held.min(Instant::now() + Duration::from_secs(1));
                    }
                    m.dlq.inc_by(stats.dead_lettered);
                    if stats.dead_lettered > 0 {
                        warn!(target = %ctx.name, count = stats.dead_lettered, topic = %config.dlq_topic(), "poison events dead-lettered");
                    }
                }
                Ok(Outcome::RebuildRunning | Outcome::Diverged) if goal.is_some() => {
                    return Err(Error::Config(format!(
                        "the offsets of {} moved during its rebuild: is another rebuild of it \
                         running? Let it finish, then run this rebuild again",
                        ctx.name
                    )));
                }
                Ok(Outcome::RebuildRunning) => {
                    info!(target = %ctx.name, "a rebuild of this target is running; waiting for it to finish");
                    ctx.readiness.down(&ctx.name, "rebuild running");
                    ctx.metrics.up.set(0.0);
                    if sleep_or_stop(Duration::from_secs(1), stop).await {
                        break 'connect;
                    }
                    continue 'connect;
                }
                Ok(Outcome::Diverged) => {
                    // Someone else moved the offsets (a rebuild just ended, or a second sink on
                    // this target): re-read them, after a pause so two sinks cannot spin.
                    if sleep_or_stop(next_delay(&backoff, &mut attempt), stop).await {
                        break 'connect;
                    }
                    continue 'connect;
                }
                Err(e) if goal.is_some() => return Err(e),
                Err(e) => {
                    if e.is_retryable() {
                        warn!(target = %ctx.name, error = %e, "batch failed; reconnecting");
                    } else {
                        error!(target = %ctx.name, error = %e, "batch failed and needs an operator; retrying slowly");
                    }
                    ctx.readiness.down(&ctx.name, &e.to_string());
                    ctx.metrics.up.set(0.0);
                    ctx.metrics.retries.inc();
                    need_schema = true;
                    let d = if e.is_retryable() {
                        next_delay(&backoff, &mut attempt)
                    } else {
                        Duration::from_millis(config.retry.max_backoff_ms)
                    };
                    if sleep_or_stop(d, stop).await {
                        break 'connect;
                    }
                    continue 'connect;
                }
            }
        }
    }
    Ok(None)
}
