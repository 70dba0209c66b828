//! Side work on an ordinary SQL connection: measuring the slot lag, and the optional
//! heartbeat.
//!
//! * **Slot lag** (`pg_current_wal_lsn() - confirmed_flush_lsn`) every `lag_interval_secs`,
//!   into the `walcast_source_slot_lag_bytes` gauge; the pipeline logs it while the broker
//!   does not acknowledge.
//! * **Heartbeat**: with `[heartbeat] interval_secs`, a non-transactional
//!   `pg_logical_emit_message(false, 'walcast.heartbeat', now())`. It reaches the slot like a
//!   transaction with nothing to deliver, so the confirmed position moves even on a
//!   database where nothing at all is written (without it, the slot already advances on
//!   keepalives whenever the server writes WAL for other tables or databases).
//!
//! Failures here never stop the source: the connection is re-opened on the next tick.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};
use walcast_replication::ConnectConfig;
use walcast_replication::management::connect_sql;

use crate::metrics::SourceMetrics;
use crate::stopped;

/// The prefix of heartbeat messages.
pub const HEARTBEAT_PREFIX: &str = "walcast.heartbeat";

/// What the monitor does and how often.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    pub connect: ConnectConfig,
    pub slot: String,
    pub lag_interval: Duration,
    pub heartbeat_interval: Option<Duration>,
}

/// Runs until `stop` turns true.
pub async fn run(config: MonitorConfig, metrics: SourceMetrics, mut stop: watch::Receiver<bool>) {
    let mut lag_tick = tokio::time::interval(config.lag_interval);
    lag_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heartbeat_tick = tokio::time::interval(
        config
            .heartbeat_interval
            .unwrap_or(Duration::from_secs(3600)),
    );
    heartbeat_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut client = None;
    loop {
        let heartbeat = tokio::select! {
            () = stopped(&mut stop) => return,
            _ = lag_tick.tick() => false,
            _ = heartbeat_tick.tick(), if config.heartbeat_interval.is_some() => true,
        };
        if client.is_none() {
            match connect_sql(&config.connect).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    debug!(error = %e, "monitor cannot connect; trying again on the next tick");
                    continue;
                }
            }
        }
        let Some(c) = client.as_ref() else { continue };
        let result = if heartbeat {
            c.execute(
                "SELECT pg_logical_emit_message(false, $1, now()::text)",
                &[&HEARTBEAT_PREFIX],
            )
            .await
            .map(|_| metrics.heartbeats.inc())
        } else {
            c.query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::float8 \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&config.slot],
            )
            .await
            .map(|row| {
                if let Some(lag) = row.and_then(|r| r.get::<_, Option<f64>>(0)) {
                    metrics.slot_lag.set(lag);
                }
            })
        };
        if let Err(e) = result {
            if heartbeat {
                warn!(error = %e, "heartbeat failed");
            } else {
                debug!(error = %e, "slot lag query failed");
            }
            client = None;
        }
    }
}
