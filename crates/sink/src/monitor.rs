//! What the sink reports about its targets: readiness (ready while every target consumes;
//! `/ready` names the targets that do not, and why), the lag gauge and the applied-up-to
//! figure of partitions consumed to their high watermarks (a task per target), and the
//! held-change gauges (read every few seconds by the target loop, never once per batch).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;
use walcast_telemetry::admin::Health;

use crate::config::SinkConfig;
use crate::kafka::Watermarks;
use crate::metrics::TargetMetrics;
use crate::progress::{Progress, lock};
use crate::sleep_or_stop;
use crate::store::Store;

/// Longest reason `/ready` gives for a target.
const WHY_BYTES: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) struct Readiness {
    health: Health,
    /// Target → `None` when consuming, else why not.
    states: Arc<Mutex<BTreeMap<String, Option<String>>>>,
}

impl Readiness {
    pub(crate) fn new(health: Health, targets: impl IntoIterator<Item = String>) -> Readiness {
        let states = targets
            .into_iter()
            .map(|t| (t, Some("starting".to_owned())))
            .collect();
        let r = Readiness {
            health,
            states: Arc::new(Mutex::new(states)),
        };
        r.publish();
        r
    }

    pub(crate) fn up(&self, target: &str) {
        self.set(target, None);
    }

    /// `why` is cut at [`WHY_BYTES`]: `/ready` shows one line per target, whatever the error.
    pub(crate) fn down(&self, target: &str, why: &str) {
        self.set(
            target,
            Some(crate::text::truncate(why, WHY_BYTES).into_owned()),
        );
    }

    fn set(&self, target: &str, state: Option<String>) {
        let changed = {
            let mut s = self.states.lock().unwrap_or_else(|p| p.into_inner());
            s.insert(target.to_owned(), state.clone()) != Some(state)
        };
        if changed {
            self.publish();
        }
    }

    fn publish(&self) {
        let s = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let down: Vec<String> = s
            .iter()
            .filter_map(|(t, why)| why.as_ref().map(|w| format!("{t}: {w}")))
            .collect();
        if down.is_empty() {
            self.health
                .set(true, &format!("all {} targets consuming", s.len()));
        } else {
            self.health.set(false, &down.join("; "));
        }
    }
}

/// How often the held-change gauges are read from the target (and after a batch that held or
/// released anything): one small query, never one per batch.
pub(crate) const HELD_REFRESH: Duration = Duration::from_secs(5);

pub(crate) async fn held_gauges(target: &str, metrics: &TargetMetrics, store: &Store) {
    match store.held_stats().await {
        Ok((changes, keys, oldest)) => {
            metrics.held_changes.set(changes as f64);
            metrics.held_keys.set(keys as f64);
            metrics.held_oldest.set(oldest);
        }
        Err(e) => warn!(target = %target, error = %e, "could not read walcast_held"),
    }
}

/// Keeps the lag gauge current (high watermarks minus what the target has stored) and the
/// applied-up-to figure of partitions consumed to their high watermarks
/// ([`Applied::with_watermarks`]): the watermarks are read after the state they are
/// compared with.
pub(crate) async fn run(
    config: Arc<SinkConfig>,
    metrics: TargetMetrics,
    positions: Arc<Mutex<Progress>>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(marks) = Watermarks::new(&config) else {
        return;
    };
    loop {
        let (epoch, stored, applied) = {
            let p = lock(&positions);
            (p.epoch, p.offsets.clone(), p.applied.clone())
        };
        if let Some(stored) = stored
            && let Ok(parts) = marks.partitions().await
            && let Ok(w) = marks.fetch(&parts).await
        {
            metrics.lag.set(crate::kafka::lag(&w, &stored) as f64);
            let figure = applied.with_watermarks(&stored, &w);
            let mut p = lock(&positions);
            if p.epoch == epoch {
                p.figure = p.figure.max(figure);
            }
        }
        if sleep_or_stop(Duration::from_millis(500), &mut stop).await {
            return;
        }
    }
}
