//! The read replicas: pools, probes and the round-robin choice of the replica for a query.
//!
//! ```text
//!            probe every probe_interval: SELECT max(commit_lsn) FROM walcast_applied_lsn
//!   ┌──────────────┐      ┌───────────┐
//!   │ ReplicaSet   │─────▶│ replica-1 │  healthy, lsn 0/5000, lag 0s       eligible
//!   │  Tracker     │─────▶│ replica-2 │  healthy, lsn 0/4F00, lag 0.3s     eligible
//!   │  (lag.rs)    │─────▶│ replica-3 │  connection refused                skipped
//!   └──────────────┘      └───────────┘
//!   query n -> eligible[n % eligible.len()], then the next eligible one if it fails
//! ```
//!
//! A replica being rebuilt (a `walcast_rebuilding` row, written by `walcast sink rebuild` before
//! it empties the database and deleted once the copy or replay is complete) is not eligible,
//! with the reason `rebuilding (<mode>) since <time>`: a half-built replica never answers.
//!
//! A query that fails on a replica (connection lost, replica down, read schema missing) marks
//! it down at once and moves on to the next eligible replica, so a replica that dies between
//! two probes costs a request nothing but a failover; the next successful probe brings it back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use deadpool_postgres::{Client, Pool};
use walcast_pgoutput::Lsn;
use walcast_postgres::Dsn;
use walcast_telemetry::metrics::Registry;

use crate::error::{Error, Result};
use crate::lag::{LagPolicy, ReplicaStatus, Tracker};
use crate::metrics::ReplicaMetrics;
use crate::pool::{self, PoolOptions};

/// One read replica: a name for headers, logs and metrics, and its `catalog_read` database.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub name: String,
    pub dsn: Dsn,
}

#[derive(Debug)]
struct Replica {
    name: String,
    pool: Pool,
    metrics: ReplicaMetrics,
}

#[derive(Debug, Clone)]
pub(crate) struct ReplicaSet {
    replicas: Arc<[Replica]>,
    tracker: Arc<Mutex<Tracker>>,
    next: Arc<AtomicUsize>,
}

impl ReplicaSet {
    pub(crate) fn new(
        configs: &[ReplicaConfig],
        policy: LagPolicy,
        options: PoolOptions,
        registry: &Registry,
    ) -> Result<ReplicaSet> {
        if configs.is_empty() {
            return Err(Error::Config(
                "no read replica configured; give at least one --read-dsn".into(),
            ));
        }
        let replicas = configs
            .iter()
            .map(|c| {
                Ok(Replica {
                    name: c.name.clone(),
                    pool: pool::build(&c.dsn, options)?,
                    metrics: ReplicaMetrics::new(registry, &c.name),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let names = configs.iter().map(|c| c.name.clone()).collect();
        Ok(ReplicaSet {
            replicas: replicas.into(),
            tracker: Arc::new(Mutex::new(Tracker::new(names, policy))),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Probes every replica once, concurrently, and updates health, lag and metrics.
    pub(crate) async fn probe(&self) {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, r) in self.replicas.iter().enumerate() {
            let pool = r.pool.clone();
            tasks.spawn(async move { (i, applied_lsn(&pool).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((i, result)) = joined else { continue };
            let now = Instant::now();
            match result {
                Ok(Probe::Applied(lsn)) => self.tracker().observe(i, lsn, now),
                // Out of rotation, and out of the lag reference: its LSN means nothing yet.
                Ok(Probe::Rebuilding(why)) => self.tracker().mark_down(i, why),
                Err(e) => self.mark_down(i, &e),
            }
        }
        self.publish_metrics();
    }

    fn publish_metrics(&self) {
        for (r, s) in self.replicas.iter().zip(self.statuses()) {
            r.metrics.eligible.set(if s.eligible { 1.0 } else { 0.0 });
            r.metrics.lag_seconds.set(s.lag.as_secs_f64());
            r.metrics.lag_bytes.set(s.lag_bytes as f64);
        }
    }

    pub(crate) fn statuses(&self) -> Vec<ReplicaStatus> {
        self.tracker().statuses(Instant::now())
    }

    /// The eligible replicas in the order to try them: round-robin over the eligible ones.
    pub(crate) fn candidates(&self) -> Vec<usize> {
        let statuses = self.statuses();
        let eligible: Vec<usize> = (0..statuses.len())
            .filter(|&i| statuses[i].eligible)
            .collect();
        if eligible.is_empty() {
            return eligible;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % eligible.len();
        eligible[start..]
            .iter()
            .chain(&eligible[..start])
            .copied()
            .collect()
    }

    /// Why no replica can serve, one clause per replica.
    pub(crate) fn reasons(&self) -> String {
        self.statuses()
            .iter()
            .map(|s| format!("{}: {}", s.name, s.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(crate) async fn client(&self, i: usize) -> Result<Client> {
        let r = &self.replicas[i];
        r.pool.get().await.map_err(|source| Error::Pool {
            db: r.name.clone(),
            source,
        })
    }

    pub(crate) fn status(&self, i: usize) -> Option<ReplicaStatus> {
        self.tracker().status(i, Instant::now())
    }

    pub(crate) fn served(&self, i: usize) {
        self.replicas[i].metrics.queries.inc();
    }

    /// Takes replica `i` out of rotation after `error`, until a probe succeeds.
    pub(crate) fn mark_down(&self, i: usize, error: &Error) {
        let r = &self.replicas[i];
        let reason = error.chain();
        tracing::warn!(replica = %r.name, error = %reason, "replica out of rotation");
        self.tracker().mark_down(i, reason);
        r.metrics.eligible.set(0.0);
    }

    pub(crate) fn failed_over(&self, i: usize) {
        self.replicas[i].metrics.failovers.inc();
    }
}

/// What a probe found on a replica.
enum Probe {
    /// The commit LSN the sink has applied there (0 before its first event).
    Applied(Lsn),
    /// A rebuild of it is under way: `rebuilding (<mode>) since <time>`.
    Rebuilding(String),
}

/// The commit LSN the sink has applied on this replica, unless a rebuild marks it; also
/// proves the read model is there. A schema older than `walcast_rebuilding` has no marker.
async fn applied_lsn(pool: &Pool) -> Result<Probe> {
    let client = pool.get().await.map_err(|source| Error::Pool {
        db: "replica".into(),
        source,
    })?;
    let row = client
        .query_one(
            "SELECT coalesce((max(commit_lsn) - '0/0'::pg_lsn)::int8, 0), \
             (SELECT count(*) FROM (SELECT 1 FROM catalog_product_read LIMIT 0) AS t), \
             to_regclass('walcast_rebuilding') IS NOT NULL \
             FROM walcast_applied_lsn",
            &[],
        )
        .await
        .map_err(Error::pg(
            "reading walcast_applied_lsn (is the read schema applied?)",
        ))?;
    let lsn: i64 = row
        .try_get(0)
        .map_err(Error::pg("reading the applied LSN"))?;
    let marked: bool = row
        .try_get(2)
        .map_err(Error::pg("looking for walcast_rebuilding"))?;
    if marked {
        let rebuilding = client
            .query_opt(
                "SELECT mode, started_at::text FROM walcast_rebuilding \
                 ORDER BY started_at LIMIT 1",
                &[],
            )
            .await
            .map_err(Error::pg("reading walcast_rebuilding"))?;
        if let Some(r) = rebuilding {
            let mode: String = r
                .try_get(0)
                .map_err(Error::pg("reading the rebuild mode"))?;
            let since: String = r
                .try_get(1)
                .map_err(Error::pg("reading the rebuild start"))?;
            return Ok(Probe::Rebuilding(format!(
                "rebuilding ({mode}) since {since}"
            )));
        }
    }
    Ok(Probe::Applied(Lsn(u64::try_from(lsn).unwrap_or(0))))
}
