//! Readiness of the sink from the state of its targets: ready while every target consumes;
//! `/ready` names the targets that do not, and why.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use walcast_telemetry::admin::Health;

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
