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
//! * **Stalled progress**: the slot's `confirmed_flush_lsn` has not moved for
//!   `stall_after_secs` while WAL was written after it. Whatever the cause (a broker that
//!   acknowledges nothing, a transaction that never completes, a loop that is stuck), the
//!   `walcast_source_progress_stalled_seconds` gauge says how long, `/ready` turns 503 with
//!   the reason, and a warning names the slot lag. Measured here, on its own task and
//!   connection, so it still reports when the streaming loop itself is stuck.
//!
//! Failures here never stop the source: the connection is re-opened on the next tick.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};
use walcast_pgoutput::Lsn;
use walcast_postgres::{Dsn, connect_sql};
use walcast_telemetry::admin::Health;

use crate::metrics::SourceMetrics;
use crate::stopped;

/// The prefix of heartbeat messages.
pub const HEARTBEAT_PREFIX: &str = "walcast.heartbeat";

/// What the monitor does and how often.
#[derive(Debug, Clone)]
pub(crate) struct MonitorConfig {
    pub connect: Dsn,
    pub slot: String,
    pub lag_interval: Duration,
    pub heartbeat_interval: Option<Duration>,
    pub stall_after: Duration,
}

/// Runs until `stop` turns true.
pub(crate) async fn run(
    config: MonitorConfig,
    metrics: SourceMetrics,
    health: Health,
    mut stop: watch::Receiver<bool>,
) {
    let mut watch = StallWatch::new(Instant::now());
    let mut last_warning: Option<Instant> = None;
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
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::float8, \
                        confirmed_flush_lsn::text \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&config.slot],
            )
            .await
            .map(|row| {
                let Some(row) = row else { return };
                let (Some(lag), Some(confirmed)) = (
                    row.get::<_, Option<f64>>(0),
                    row.get::<_, Option<String>>(1)
                        .and_then(|s| s.parse::<Lsn>().ok()),
                ) else {
                    return;
                };
                metrics.slot_lag.set(lag);
                let stalled = watch.observe(confirmed, lag > 0.0, Instant::now());
                metrics.progress_stalled.set(stalled.as_secs() as f64);
                if stalled >= config.stall_after {
                    let reason = stall_reason(stalled, lag);
                    health.set(false, &reason);
                    if last_warning.is_none_or(|t| t.elapsed() >= config.stall_after) {
                        last_warning = Some(Instant::now());
                        warn!(slot = %config.slot, confirmed = %confirmed, slot_lag_bytes = lag, stalled_secs = stalled.as_secs(), "{reason}");
                    }
                } else if last_warning.take().is_some() {
                    info!(slot = %config.slot, confirmed = %confirmed, "the slot's confirmed position moves again");
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

/// The `/ready` reason and warning text of a stall.
pub(crate) fn stall_reason(stalled: Duration, lag: f64) -> String {
    format!(
        "progress stalled: the slot's confirmed position has not moved for {} s while {lag} bytes of WAL were written after it; check that Kafka acknowledges (walcast_source_in_flight_records) and the source's log; the slot keeps that WAL on disk until it moves",
        stalled.as_secs()
    )
}

/// How long the slot's confirmed position has been stuck while WAL was written after it.
/// Sans-IO: fed with each measurement.
#[derive(Debug, Clone)]
pub(crate) struct StallWatch {
    confirmed: Option<Lsn>,
    since: Instant,
}

impl StallWatch {
    pub(crate) fn new(now: Instant) -> StallWatch {
        StallWatch {
            confirmed: None,
            since: now,
        }
    }

    /// One measurement: the slot's confirmed position, and whether WAL was written after it.
    /// Returns how long it has been stuck (zero while it moves or nothing is behind it).
    pub(crate) fn observe(&mut self, confirmed: Lsn, behind: bool, now: Instant) -> Duration {
        if self.confirmed != Some(confirmed) || !behind {
            self.confirmed = Some(confirmed);
            self.since = now;
        }
        now.saturating_duration_since(self.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_that_does_not_move_while_wal_does_is_a_stall() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = StallWatch::new(t0);
        assert_eq!(w.observe(Lsn(100), true, s(0)), Duration::ZERO);
        assert_eq!(w.observe(Lsn(100), true, s(30)), Duration::from_secs(30));
        // It moves: the clock starts again.
        assert_eq!(w.observe(Lsn(200), true, s(40)), Duration::ZERO);
        assert_eq!(w.observe(Lsn(200), true, s(100)), Duration::from_secs(60));
    }

    #[test]
    fn a_caught_up_slot_is_never_stalled() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(t0);
        for secs in [0, 100, 1000] {
            let at = t0 + Duration::from_secs(secs);
            assert_eq!(w.observe(Lsn(100), false, at), Duration::ZERO);
        }
        // WAL is written after it from now on: stuck since it was last seen caught up.
        let later = t0 + Duration::from_secs(1010);
        assert_eq!(w.observe(Lsn(100), true, later), Duration::from_secs(10));
    }
}
