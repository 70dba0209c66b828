//! The catalog app as `walcast app` runs it: the write API and the query API on their own
//! ports, each with `/health`, `/ready` and `/metrics`, and a probe loop that keeps replica
//! health, lag and readiness current.
//!
//! Ready means: the write database answers with the write schema, and at least one replica
//! is eligible. Not ready is not fatal: the app keeps serving what it can (writes while every
//! replica is down, reads while the write database is down) and `/ready` says what is wrong.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::watch;
use walcast_postgres::Dsn;
use walcast_telemetry::admin::{self, Health};
use walcast_telemetry::metrics::Registry;

use crate::error::{Error, Result};
use crate::idempotency::KeyRetention;
use crate::lag::LagPolicy;
use crate::metrics::KeyMetrics;
use crate::pool::PoolOptions;
use crate::problem::Problem;
use crate::query_api::QueryApi;
use crate::replica::ReplicaConfig;
use crate::write_api::WriteApi;

/// Everything the app needs to run.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The write database (`catalog_write` on the leader).
    pub write_dsn: Dsn,
    /// The read replicas, in the order round-robin starts with.
    pub replicas: Vec<ReplicaConfig>,
    pub pool: PoolOptions,
    pub lag: LagPolicy,
    /// How long idempotency keys are kept; older ones are pruned by a task of the app.
    pub idempotency: KeyRetention,
}

/// Serves both APIs on the given listeners until `shutdown` completes, then drains in-flight
/// requests and returns.
pub async fn run(
    config: AppConfig,
    write_listener: TcpListener,
    query_listener: TcpListener,
    registry: Registry,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let write = WriteApi::new(&config.write_dsn, config.pool, &registry)?;
    let key_metrics = KeyMetrics::new(&registry);
    let query = QueryApi::new(&config.replicas, config.lag, config.pool, &registry)?;
    // One probe before serving, so the first query does not find every replica unprobed.
    refresh(&write, &query, &health).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let admin = admin::router(registry, health.clone());
    let write_router = with_fallback(write.router().merge(admin.clone()));
    let query_router = with_fallback(query.router().merge(admin));
    let mut write_server = tokio::spawn(crate::serve(
        write_listener,
        write_router,
        stopped(stop_rx.clone()),
    ));
    let mut query_server = tokio::spawn(crate::serve(
        query_listener,
        query_router,
        stopped(stop_rx.clone()),
    ));
    let pruning = tokio::spawn(prune_loop(
        write.clone(),
        config.idempotency,
        key_metrics,
        stopped(stop_rx.clone()),
    ));
    let probes = tokio::spawn(probe_loop(
        write,
        query,
        health,
        config.lag.probe_interval,
        stopped(stop_rx),
    ));

    let early = tokio::select! {
        () = shutdown => None,
        r = &mut write_server => Some(("write API", r)),
        r = &mut query_server => Some(("query API", r)),
    };
    let _ = stop_tx.send(true);
    let _ = probes.await;
    let _ = pruning.await;
    match early {
        Some((api, result)) => {
            let e = match result {
                Ok(Ok(())) => std::io::Error::other(format!("{api} stopped on its own")),
                Ok(Err(e)) => e,
                Err(join) => std::io::Error::other(format!("{api} panicked: {join}")),
            };
            Err(Error::Io(e))
        }
        None => {
            for server in [write_server, query_server] {
                match server.await {
                    Ok(r) => r?,
                    Err(join) => return Err(Error::Io(std::io::Error::other(join.to_string()))),
                }
            }
            Ok(())
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn with_fallback(router: Router) -> Router {
    router.fallback(|| async {
        Problem::new(
            StatusCode::NOT_FOUND,
            "no-route",
            "No such endpoint",
            "no endpoint at this path; see the API summary in the README",
        )
    })
}

async fn probe_loop(
    write: WriteApi,
    query: QueryApi,
    health: Health,
    interval: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => refresh(&write, &query, &health).await,
        }
    }
}

/// Deletes idempotency keys older than the window every `retention.interval`, off the
/// request path; a failed pass (write database down) is logged and tried again.
async fn prune_loop(
    write: WriteApi,
    retention: KeyRetention,
    metrics: KeyMetrics,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut tick = tokio::time::interval(retention.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => match write.prune_keys(&retention).await {
                Ok(p) => {
                    metrics.pruned.inc_by(p.rows);
                    metrics.rows.set(p.remaining);
                    metrics.oldest.set(p.oldest_secs);
                    if p.rows > 0 {
                        tracing::info!(rows = p.rows, statements = p.statements, window_secs = retention.window.as_secs(), "pruned idempotency keys older than the window");
                    }
                }
                Err(e) => tracing::warn!(error = %e.chain(), "pruning idempotency keys failed; trying again next interval"),
            },
        }
    }
}

/// Probes the write database and every replica and sets readiness with a one-line reason.
async fn refresh(write: &WriteApi, query: &QueryApi, health: &Health) {
    let (write_ok, ()) = tokio::join!(write.check(), query.probe());
    let replicas = query.replicas();
    let eligible = replicas.iter().filter(|r| r.eligible).count();
    let skipped: Vec<String> = replicas
        .iter()
        .filter(|r| !r.eligible)
        .map(|r| format!("{}: {}", r.name, r.reason))
        .collect();
    let mut reason = match &write_ok {
        Ok(()) => "write db ok".to_owned(),
        Err(e) => format!("write db: {}", e.chain()),
    };
    reason.push_str(&format!("; replicas serving {eligible}/{}", replicas.len()));
    if !skipped.is_empty() {
        reason.push_str(&format!(" ({})", skipped.join("; ")));
    }
    health.set(write_ok.is_ok() && eligible > 0, &reason);
}
