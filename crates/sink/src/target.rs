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
//! A target whose database is down only stalls its own task; its records stay in Kafka, and on
//! reconnect the task seeks to what its database says it has and catches up. Nothing is kept
//! in memory across a failure: the database is the only record of progress.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::SinkConfig;
use crate::consumer::{self, Source, Watermarks};
use crate::dlq::Dlq;
use crate::error::Result;
use crate::health::Readiness;
use crate::metrics::TargetMetrics;
use crate::projection::Projections;
use crate::store::{Batch, Outcome, Store};

/// Everything a target task needs.
#[derive(Debug, Clone)]
pub(crate) struct TargetCtx {
    pub(crate) name: String,
    pub(crate) group: String,
    pub(crate) dsn: walcast_config::Dsn,
    pub(crate) config: Arc<SinkConfig>,
    pub(crate) projections: Arc<Projections>,
    pub(crate) schema: Arc<Vec<(String, String)>>,
    pub(crate) dlq: Dlq,
    pub(crate) metrics: TargetMetrics,
    pub(crate) readiness: Readiness,
}

/// Decodes records into a batch; records below the stored offsets (already applied) are left out.
pub(crate) fn decode(
    projections: &Projections,
    records: &[OwnedMessage],
    stored: &BTreeMap<i32, i64>,
) -> Batch {
    let mut batch = Batch::default();
    for (i, r) in records.iter().enumerate() {
        let (p, o) = (r.partition(), r.offset());
        if stored.get(&p).is_some_and(|next| o < *next) {
            continue;
        }
        let next = batch.next_offsets.entry(p).or_insert(o + 1);
        *next = (*next).max(o + 1);
        if let Some(lsn) = projections.commit_lsn(r) {
            batch.max_commit_lsn = batch.max_commit_lsn.max(Some(lsn));
        }
        match projections.decode(r) {
            Ok(c) => batch.changes.push((i, c)),
            Err(why) => batch.rejected.push((i, why)),
        }
    }
    batch
}

struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    fn new(config: &SinkConfig) -> Backoff {
        let initial = Duration::from_millis(config.retry.initial_backoff_ms);
        Backoff {
            next: initial,
            initial,
            max: Duration::from_millis(config.retry.max_backoff_ms),
        }
    }

    fn take(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Sleeps `d` unless shutdown comes first; true on shutdown.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// Connects, applies the schema (when asked: after an error the database may be a new one;
/// the schema files alter only what is missing, so re-applying them locks out no reader),
/// reads the stored offsets and seeks.
async fn sync(
    ctx: &TargetCtx,
    source: &Source,
    schema: bool,
) -> Result<(Store, Vec<i32>, BTreeMap<i32, i64>)> {
    let store = Store::connect(&ctx.name, ctx.dsn.expose(), &ctx.group, source.topic()).await?;
    if schema {
        store.apply_schema(&ctx.schema).await?;
    }
    let stored = store.load_offsets().await?;
    let partitions = source.partitions().await?;
    source.assign(&partitions, &stored)?;
    Ok((store, partitions, stored))
}

/// Runs one target until `stop` turns true. A target that cannot be used (down, or
/// misconfigured: wrong credentials, missing database) is retried while the others run, so
/// one bad target never stops the read DB and the other replicas.
pub(crate) async fn run(ctx: TargetCtx, mut stop: watch::Receiver<bool>) -> Result<()> {
    let source = Source::new(&ctx.config, &ctx.group)?;
    let positions: Arc<Mutex<Option<BTreeMap<i32, i64>>>> = Arc::default();
    let lag_task = tokio::spawn(lag_loop(ctx.clone(), positions.clone(), stop.clone()));
    let result = consume(&ctx, &source, &positions, &mut stop).await;
    lag_task.abort();
    ctx.metrics.up.set(0.0);
    result
}

async fn consume(
    ctx: &TargetCtx,
    source: &Source,
    positions: &Mutex<Option<BTreeMap<i32, i64>>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let config = &ctx.config;
    let mut backoff = Backoff::new(config);
    // After an error the database may be a new one (restored, re-created): apply the schema.
    let mut need_schema = true;
    // Batches of different partitions commit out of LSN order; the gauge shows the highest.
    let mut max_lsn = 0u64;
    let refresh = Duration::from_secs(config.kafka.metadata_refresh_secs.max(1));
    'connect: while !*stop.borrow() {
        let (mut store, mut partitions, mut stored) = match sync(ctx, source, need_schema).await {
            Ok(s) => s,
            // Needs an operator (wrong credentials, missing database): named in the log, on
            // /ready and by walcast_sink_target_up, retried slowly; the other targets run on.
            Err(e) if !e.is_retryable() => {
                error!(target = %ctx.name, error = %e, "target needs an operator; retrying slowly");
                ctx.readiness.down(&ctx.name, &e.to_string());
                ctx.metrics.retries.inc();
                if sleep_or_stop(Duration::from_millis(config.retry.max_backoff_ms), stop).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                warn!(target = %ctx.name, error = %e, retryable = e.is_retryable(), "target not available; retrying");
                ctx.readiness.down(&ctx.name, &e.to_string());
                ctx.metrics.retries.inc();
                if sleep_or_stop(backoff.take(), stop).await {
                    break;
                }
                continue;
            }
        };
        need_schema = false;
        backoff.reset();
        info!(target = %ctx.name, group = %ctx.group, partitions = partitions.len(), ?stored, "target consuming");
        ctx.metrics.up.set(1.0);
        ctx.readiness.up(&ctx.name);
        *positions.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored.clone());
        let mut next_refresh = Instant::now() + refresh;

        loop {
            let records = tokio::select! {
                r = source.next_batch(config.batch.max_events, config.linger(), Duration::from_millis(500)) => r?,
                _ = stop.wait_for(|s| *s) => break 'connect,
            };
            if Instant::now() >= next_refresh {
                next_refresh = Instant::now() + refresh;
                match source.partitions().await {
                    Ok(now) if now != partitions => {
                        info!(target = %ctx.name, old = ?partitions, new = ?now, "partitions changed; re-assigning");
                        // Records of this poll are dropped; the new assignment re-reads them.
                        source.assign(&now, &stored)?;
                        partitions = now;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(target = %ctx.name, error = %e, "could not refresh partitions"),
                }
            }
            if records.is_empty() {
                continue;
            }
            let batch = decode(&ctx.projections, &records, &stored);
            let started = std::time::Instant::now();
            let dlq = ctx.dlq.clone();
            match store
                .apply(&ctx.projections, &batch, &records, &stored, &dlq)
                .await
            {
                Ok(Outcome::Committed(stats)) => {
                    stored.extend(batch.next_offsets.iter().map(|(p, o)| (*p, *o)));
                    *positions.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored.clone());
                    let m = &ctx.metrics;
                    m.apply_seconds.observe(started.elapsed().as_secs_f64());
                    m.batches.inc();
                    m.applied.inc_by(stats.applied);
                    m.duplicates.inc_by(stats.duplicates);
                    m.stale.inc_by(stats.stale);
                    m.missing_row.inc_by(stats.missing_row);
                    m.dlq.inc_by(stats.dead_lettered);
                    if let Some(lsn) = batch.max_commit_lsn
                        && lsn > max_lsn
                    {
                        max_lsn = lsn;
                        m.applied_commit_lsn.set(lsn as f64);
                    }
                    if stats.dead_lettered > 0 {
                        warn!(target = %ctx.name, count = stats.dead_lettered, topic = %config.dlq_topic(), "poison events dead-lettered");
                    }
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
                    if sleep_or_stop(backoff.take(), stop).await {
                        break 'connect;
                    }
                    continue 'connect;
                }
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
                        backoff.take()
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
    Ok(())
}

/// Keeps the lag gauge current: high watermarks minus what the target has stored.
async fn lag_loop(
    ctx: TargetCtx,
    positions: Arc<Mutex<Option<BTreeMap<i32, i64>>>>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(marks) = Watermarks::new(&ctx.config) else {
        return;
    };
    loop {
        let stored = positions.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(stored) = stored
            && let Ok(parts) = marks.partitions().await
            && let Ok(w) = marks.fetch(&parts).await
        {
            ctx.metrics.lag.set(consumer::lag(&w, &stored) as f64);
        }
        if sleep_or_stop(Duration::from_secs(2), &mut stop).await {
            return;
        }
    }
}
