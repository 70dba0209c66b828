//! "Applied up to LSN X": the figure a target records in `walcast_applied_lsn` (and the query
//! API reads for lag and read-your-writes) means that every event of the topic whose source
//! commit LSN is at most X has been applied to that target.
//!
//! Batches of different partitions commit out of LSN order, so the greatest LSN applied says
//! nothing about the other partitions. What holds instead, per partition `p` with `L(p)` the
//! greatest commit LSN applied from it (the source publishes in commit order, so a partition's
//! records carry rising LSNs; a re-sent tail repeats applied ones):
//!
//! * every record of `p` with an LSN at most `L(p)` is applied, so `min over p of L(p)` is a
//!   true figure ([`Applied::floor`], written with every batch once each partition has one);
//! * a partition consumed to its high watermark has nothing older pending: with watermarks read
//!   *after* the applied state was taken, the least `L(p)` over the partitions that still have
//!   records pending is a true figure, and when none has, the greatest `L(p)` is
//!   ([`Applied::with_watermarks`], computed every half second, so an idle or empty partition
//!   never holds the figure back for long).
//!
//! What it cannot see: a record the source sent before one on another partition but that the
//! broker appended after it (produce retries across partitions); the window is the source's
//! in-flight time. `L(p)` lives in memory: after a restart the stored figure stays as it was
//! until every partition with pending records has applied one again.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use walcast_pgoutput::Lsn;

use crate::projection::Projections;

/// The greatest commit LSN applied per partition, since the task connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    lsns: BTreeMap<i32, Lsn>,
}

impl Applied {
    /// A copy with the commit LSNs of `records` at or above the `stored` next offsets added.
    pub(crate) fn with_records(
        &self,
        projections: &Projections,
        records: &[OwnedMessage],
        stored: &BTreeMap<i32, i64>,
    ) -> Applied {
        let mut out = self.clone();
        for r in records {
            if stored
                .get(&r.partition())
                .is_some_and(|next| r.offset() < *next)
            {
                continue;
            }
            if let Some(lsn) = projections.commit_lsn(r) {
                let e = out.lsns.entry(r.partition()).or_insert(lsn);
                *e = (*e).max(lsn);
            }
        }
        out
    }

    /// The greatest `L(p)`: a true figure only when no partition has records pending.
    pub(crate) fn max(&self) -> Option<Lsn> {
        self.lsns.values().max().copied()
    }

    /// The least `L(p)` over `partitions`; `None` while one of them has none.
    pub(crate) fn floor(&self, partitions: &[i32]) -> Option<Lsn> {
        partitions
            .iter()
            .map(|p| self.lsns.get(p).copied())
            .try_fold(Lsn(u64::MAX), |m, l| l.map(|l| m.min(l)))
            .filter(|_| !partitions.is_empty())
    }

    /// The figure from `(low, high)` watermarks read after `self` and `offsets` (the stored
    /// next offsets) were taken; `None` while a partition with records pending has no `L(p)`,
    /// or when nothing was applied.
    pub(crate) fn with_watermarks(
        &self,
        offsets: &BTreeMap<i32, i64>,
        marks: &BTreeMap<i32, (i64, i64)>,
    ) -> Option<Lsn> {
        let mut pending = marks
            .iter()
            .filter(|(p, (low, high))| offsets.get(p).copied().unwrap_or(*low) < *high)
            .map(|(p, _)| self.lsns.get(p).copied())
            .peekable();
        if pending.peek().is_none() {
            return self.max();
        }
        pending.try_fold(Lsn(u64::MAX), |m, l| l.map(|l| m.min(l)))
    }
}

/// What the consuming task has committed, shared with the lag monitor ([`crate::monitor::run`]).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Bumped on every (re)connect: a figure computed from an older state is not used.
    pub(crate) epoch: u64,
    /// The stored next offsets; `None` until connected.
    pub(crate) offsets: Option<BTreeMap<i32, i64>>,
    pub(crate) applied: Applied,
    /// The applied-up-to LSN from the last watermarks ([`Applied::with_watermarks`]).
    pub(crate) figure: Option<Lsn>,
}

pub(crate) fn lock(p: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn applied(lsns: &[(i32, u64)]) -> Applied {
        Applied {
            lsns: lsns.iter().map(|(p, l)| (*p, Lsn(*l))).collect(),
        }
    }

    #[test]
    fn the_floor_is_the_least_partition_and_unknown_while_one_has_none() {
        let a = applied(&[(0, 0x500), (1, 0x300)]);
        assert_eq!(a.floor(&[0, 1]), Some(Lsn(0x300)));
        assert_eq!(a.floor(&[0, 1, 2]), None);
        assert_eq!(a.floor(&[]), None);
    }

    #[test]
    fn partitions_at_their_high_watermark_do_not_hold_the_figure_back() {
        let a = applied(&[(0, 0x500), (1, 0x300)]);
        let offsets: BTreeMap<i32, i64> = [(0, 10), (1, 4)].into();
        // Partition 1 has records pending: nothing above its 0x300 is known applied.
        let marks = [(0, (0, 10)), (1, (0, 9)), (2, (0, 0))].into();
        assert_eq!(a.with_watermarks(&offsets, &marks), Some(Lsn(0x300)));
        // Everything consumed (partition 2 empty): the greatest.
        let marks = [(0, (0, 10)), (1, (0, 4)), (2, (5, 5))].into();
        assert_eq!(a.with_watermarks(&offsets, &marks), Some(Lsn(0x500)));
        // A partition pending with no LSN known since the start: unknown.
        let marks = [(0, (0, 10)), (1, (0, 4)), (2, (0, 3))].into();
        assert_eq!(a.with_watermarks(&offsets, &marks), None);
        assert_eq!(
            Applied::default().with_watermarks(&offsets, &[(0, (0, 10))].into()),
            None
        );
    }
}
