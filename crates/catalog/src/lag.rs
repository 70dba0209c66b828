//! Which replicas may serve a query: health and lag, as pure bookkeeping over probe results.
//!
//! Every replica's read database records the source position it has applied in
//! `walcast_applied_lsn` (the sink writes it in the transaction of the rows). The app probes
//! each replica every `probe_interval` and reads that commit LSN. Lag is measured *between
//! replicas*, against the most advanced healthy one:
//!
//! * **lag bytes** = max applied LSN of the healthy replicas − this replica's applied LSN;
//! * **lag time** = 0 when the replica holds that max LSN; otherwise how long ago the app first
//!   saw *any* replica pass this replica's LSN. The app remembers when each new max LSN was
//!   first observed, so a replica that stopped applying keeps falling behind in time even
//!   when no new writes arrive, and one that trails a busy stream by 300 ms shows about
//!   300 ms (to within one probe interval).
//!
//! A replica is **eligible** when its last probe (or query) succeeded, its lag time is at most
//! `max_lag` and its lag bytes at most `max_lag_bytes`. The most advanced healthy replica is
//! always eligible, so while one replica answers, queries are served.
//!
//! What this cannot see: replicas lagging *together* (the sink is down, or Kafka is) look
//! caught up, because there is no fresher replica to compare with; the source's position is
//! not known to the query API. Queries then serve the freshest data there is, and the sink's
//! own lag metrics raise the alarm.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use walcast_pgoutput::Lsn;

/// Observations of new max LSNs kept; older ones are dropped (lag is then underestimated
/// for replicas behind all of them, which are far behind anyway).
const HISTORY: usize = 4096;

/// When a replica is too far behind to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagPolicy {
    /// Skip a replica that has been behind the freshest one for longer than this.
    pub max_lag: Duration,
    /// Skip a replica whose applied LSN is more than this many WAL bytes behind.
    pub max_lag_bytes: u64,
    /// How often every replica is probed.
    pub probe_interval: Duration,
}

impl Default for LagPolicy {
    fn default() -> LagPolicy {
        LagPolicy {
            max_lag: Duration::from_secs(5),
            max_lag_bytes: 16 * 1024 * 1024,
            probe_interval: Duration::from_millis(500),
        }
    }
}

/// A replica as the query API sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub name: String,
    /// The last probe or query succeeded.
    pub healthy: bool,
    /// Healthy and within the lag policy: queries may go here.
    pub eligible: bool,
    /// The applied commit LSN (displays as `0/16B3748`).
    pub applied_lsn: Lsn,
    pub lag: Duration,
    pub lag_bytes: u64,
    /// Why it is not eligible, or `"ok"`.
    pub reason: String,
}

#[derive(Debug, Clone)]
struct State {
    healthy: bool,
    lsn: Lsn,
    problem: String,
}

/// Health and positions of every replica, indexed like the configured replica list.
#[derive(Debug)]
pub(crate) struct Tracker {
    names: Vec<String>,
    states: Vec<State>,
    /// (LSN, first seen): each time a probe saw an LSN above every earlier one.
    history: VecDeque<(Lsn, Instant)>,
    policy: LagPolicy,
}

impl Tracker {
    pub(crate) fn new(names: Vec<String>, policy: LagPolicy) -> Tracker {
        let states = names
            .iter()
            .map(|_| State {
                healthy: false,
                lsn: Lsn::ZERO,
                problem: "not probed yet".into(),
            })
            .collect();
        Tracker {
            names,
            states,
            history: VecDeque::new(),
            policy,
        }
    }

    /// Records a successful probe: the replica answers and has applied up to `lsn`.
    pub(crate) fn observe(&mut self, i: usize, lsn: Lsn, now: Instant) {
        let Some(s) = self.states.get_mut(i) else {
            return;
        };
        *s = State {
            healthy: true,
            lsn,
            problem: String::new(),
        };
        if self.history.back().is_none_or(|&(max, _)| lsn > max) {
            self.history.push_back((lsn, now));
            if self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
    }

    /// Records a failed probe or query; the replica is skipped until a probe succeeds.
    pub(crate) fn mark_down(&mut self, i: usize, problem: String) {
        if let Some(s) = self.states.get_mut(i) {
            s.healthy = false;
            s.problem = problem;
        }
    }

    pub(crate) fn status(&self, i: usize, now: Instant) -> Option<ReplicaStatus> {
        let s = self.states.get(i)?;
        let max = self
            .states
            .iter()
            .filter(|s| s.healthy)
            .map(|s| s.lsn)
            .max()
            .unwrap_or(Lsn::ZERO);
        let lag_bytes = max.as_u64().saturating_sub(s.lsn.as_u64());
        let lag = if lag_bytes == 0 {
            Duration::ZERO
        } else {
            self.history
                .iter()
                .find(|&&(lsn, _)| lsn > s.lsn)
                .map(|&(_, seen)| now.saturating_duration_since(seen))
                .unwrap_or(Duration::ZERO)
        };
        let reason = if !s.healthy {
            s.problem.clone()
        } else if lag > self.policy.max_lag {
            format!(
                "behind the freshest replica for {:.1}s (max {:.1}s)",
                lag.as_secs_f64(),
                self.policy.max_lag.as_secs_f64()
            )
        } else if lag_bytes > self.policy.max_lag_bytes {
            format!(
                "{lag_bytes} WAL bytes behind the freshest replica (max {})",
                self.policy.max_lag_bytes
            )
        } else {
            "ok".to_owned()
        };
        Some(ReplicaStatus {
            name: self.names.get(i).cloned().unwrap_or_default(),
            healthy: s.healthy,
            eligible: reason == "ok",
            applied_lsn: s.lsn,
            lag: if s.healthy { lag } else { Duration::ZERO },
            lag_bytes: if s.healthy { lag_bytes } else { 0 },
            reason,
        })
    }

    pub(crate) fn statuses(&self, now: Instant) -> Vec<ReplicaStatus> {
        (0..self.states.len())
            .filter_map(|i| self.status(i, now))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn tracker(n: usize) -> Tracker {
        let names = (1..=n).map(|i| format!("replica-{i}")).collect();
        Tracker::new(
            names,
            LagPolicy {
                max_lag: Duration::from_secs(5),
                max_lag_bytes: 1000,
                probe_interval: Duration::from_millis(100),
            },
        )
    }

    fn eligible(t: &Tracker, now: Instant) -> Vec<bool> {
        t.statuses(now).into_iter().map(|s| s.eligible).collect()
    }

    #[test]
    fn unprobed_replicas_do_not_serve() {
        let t = tracker(2);
        assert_eq!(eligible(&t, Instant::now()), [false, false]);
        assert_eq!(t.statuses(Instant::now())[0].reason, "not probed yet");
    }

    #[test]
    fn a_replica_stuck_behind_falls_behind_in_time_without_new_writes() {
        let mut t = tracker(3);
        let t0 = Instant::now();
        for i in 0..3 {
            t.observe(i, Lsn(100), t0);
        }
        assert_eq!(eligible(&t, t0), [true, true, true]);
        // replicas 1 and 2 apply one more transaction; replica 3 stops applying.
        let t1 = t0 + Duration::from_secs(1);
        t.observe(0, Lsn(200), t1);
        t.observe(1, Lsn(200), t1);
        t.observe(2, Lsn(100), t1);
        let s = t.status(2, t1 + Duration::from_secs(2)).unwrap();
        assert_eq!(
            (s.lag, s.lag_bytes, s.eligible),
            (Duration::from_secs(2), 100, true)
        );
        let later = t1 + Duration::from_secs(6);
        assert_eq!(eligible(&t, later), [true, true, false]);
        assert!(
            t.statuses(later)[2]
                .reason
                .contains("behind the freshest replica")
        );
        // it catches up
        t.observe(2, Lsn(200), later);
        assert_eq!(eligible(&t, later), [true, true, true]);
    }

    #[test]
    fn too_many_bytes_behind_is_skipped_at_once() {
        let mut t = tracker(2);
        let now = Instant::now();
        t.observe(0, Lsn(5000), now);
        t.observe(1, Lsn(10), now);
        assert_eq!(eligible(&t, now), [true, false]);
        assert_eq!(t.status(1, now).map(|s| s.lag_bytes), Some(4990));
    }

    #[test]
    fn lag_is_measured_against_healthy_replicas_only() {
        let mut t = tracker(2);
        let t0 = Instant::now();
        t.observe(0, Lsn(900), t0);
        t.observe(1, Lsn(500), t0);
        t.mark_down(0, "connection refused".into());
        let s = t.statuses(t0 + Duration::from_secs(60));
        assert_eq!((s[0].healthy, s[0].eligible), (false, false));
        assert_eq!(s[0].reason, "connection refused");
        assert_eq!(
            (s[1].eligible, s[1].lag_bytes, s[1].lag),
            (true, 0, Duration::ZERO)
        );
    }

    #[test]
    fn lsn_text() {
        let mut t = tracker(1);
        t.observe(0, Lsn(0x1_016B_3748), Instant::now());
        let s = t.status(0, Instant::now()).unwrap();
        assert_eq!(s.applied_lsn.to_string(), "1/16B3748");
    }
}
