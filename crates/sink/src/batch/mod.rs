//! A poll batch, from consumer records to planned work (pure; no I/O).
//!
//! ```text
//! records ─▶ decode ─▶ Batch { changes, rejected, next_offsets, applied_lsn }
//!                          │
//!                          ▼
//!                 Events: one change per event id, the keys it touches per table
//!                          │  (the store records the ids in processed_events and reads the
//!                          │   rows, tombstones and held changes of those keys)
//!                          ▼
//!                 Events::plan(fresh ids, snapshots) ─▶ Planned { statements, counts }
//! ```
//!
//! The store ([`crate::store`]) runs this once for a whole batch (pipelined), or once per
//! event, each in a savepoint (careful, after the database refused a value); the steps and
//! their order are the same, only how the statements are sent differs.

mod writes;

use std::collections::{BTreeMap, HashSet};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use walcast_pgoutput::Lsn;

use crate::error::Result;
use crate::plan::{self, Snapshot, TablePlan};
use crate::projection::{Change, Projections, Rejection};

pub(crate) use writes::{Exec, bookkeeping, decode_held, hold_key};

/// A decoded poll batch.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Decodable events in offset order, with the index of their record.
    pub(crate) changes: Vec<(usize, Change)>,
    /// Poison records (index, why).
    pub(crate) rejected: Vec<(usize, Rejection)>,
    /// Per partition: the offset after the last record of the batch.
    pub(crate) next_offsets: BTreeMap<i32, i64>,
    /// The applied-up-to LSN to record with the batch (the `applied` module).
    pub(crate) applied_lsn: Option<Lsn>,
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
        match projections.decode(r) {
            Ok(c) => batch.changes.push((i, c)),
            Err(why) => batch.rejected.push((i, why)),
        }
    }
    batch
}

/// Counts of one batch.
#[derive(Debug, Default)]
pub(crate) struct ApplyStats {
    /// Events recorded in `processed_events` by this batch (applied or found stale).
    pub(crate) applied: u64,
    /// Events already processed before (redeliveries and replays).
    pub(crate) duplicates: u64,
    /// Events older than the row or tombstone they target.
    pub(crate) stale: u64,
    /// Updates of rows that do not exist, held until the row lands.
    pub(crate) missing_row: u64,
    /// Events newly held (for a missing row, or behind a dead letter of their key).
    pub(crate) held: u64,
    /// Held events applied.
    pub(crate) released: u64,
    /// Events the database refused (record index, why); they go to the DLQ.
    pub(crate) db_rejected: Vec<(usize, Rejection)>,
    pub(crate) dead_lettered: u64,
}

impl ApplyStats {
    pub(crate) fn add(&mut self, o: ApplyStats) {
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.stale += o.stale;
        self.missing_row += o.missing_row;
        self.held += o.held;
        self.released += o.released;
        self.db_rejected.extend(o.db_rejected);
    }

    /// Adds the counts of `plan`.
    fn planned(&mut self, plan: &TablePlan) {
        self.stale += plan.stale;
        self.missing_row += plan.missing_row;
        self.held += plan.held;
        self.released += plan.released;
        // Held events (and redeliveries of held ones) were counted as newly processed.
        self.applied = (self.applied + plan.released).saturating_sub(plan.held + plan.duplicates);
        self.duplicates += plan.duplicates;
    }
}

/// The events of one step (a batch, or one event of it): one change per event id, and the
/// keys they touch per table.
#[derive(Debug)]
pub(crate) struct Events<'c> {
    /// How many changes were given (a redelivered id inside the step counts once).
    given: usize,
    /// Offset order, first occurrence of each id.
    unique: Vec<&'c Change>,
    /// Per table index: the keys to read, sorted and unique.
    keys: BTreeMap<usize, Vec<&'c str>>,
    /// Plan tables whose changes were all processed before (a released hold is settled
    /// with no change of its own).
    settle: bool,
}

impl<'c> Events<'c> {
    /// `changes` in offset order.
    pub(crate) fn new(changes: impl IntoIterator<Item = &'c Change>) -> Events<'c> {
        let changes = changes.into_iter();
        let mut seen = HashSet::with_capacity(changes.size_hint().0);
        let mut given = 0;
        let unique: Vec<&Change> = changes
            .inspect(|_| given += 1)
            .filter(|c| seen.insert(c.event_id))
            .collect();
        let mut keys: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for c in &unique {
            keys.entry(c.table).or_default().push(&c.key);
        }
        for k in keys.values_mut() {
            k.sort_unstable();
            k.dedup();
        }
        Events {
            given,
            unique,
            keys,
            settle: false,
        }
    }

    /// No change: settles what is held for `keys` of `table` (a released hold).
    pub(crate) fn settle(table: usize, mut keys: Vec<&'c str>) -> Events<'c> {
        keys.sort_unstable();
        keys.dedup();
        Events {
            given: 0,
            unique: Vec::new(),
            keys: BTreeMap::from([(table, keys)]),
            settle: true,
        }
    }

    /// The ids and event types to record in `processed_events`.
    pub(crate) fn processed(&self) -> (Vec<uuid::Uuid>, Vec<&'c str>) {
        self.unique
            .iter()
            .map(|c| (c.event_id, c.event_type.as_str()))
            .unzip()
    }

    /// Per table index, the keys whose rows, tombstones and held changes [`Events::plan`]
    /// needs, in this order.
    pub(crate) fn keys(&self) -> &BTreeMap<usize, Vec<&'c str>> {
        &self.keys
    }

    /// Plans the step: `fresh` are the ids `processed_events` did not know yet, `snapshots`
    /// what each table of [`Events::keys`] holds for them (in that order). Changes of other
    /// ids are duplicates; a table with none fresh is left alone.
    pub(crate) fn plan(
        self,
        projections: &Projections,
        fresh: &HashSet<uuid::Uuid>,
        mut snapshots: impl FnMut(usize) -> Result<Snapshot>,
    ) -> Result<Planned> {
        let mut stats = ApplyStats {
            applied: fresh.len() as u64,
            duplicates: (self.given - fresh.len()) as u64,
            ..ApplyStats::default()
        };
        let mut by_table: BTreeMap<usize, Vec<&Change>> = BTreeMap::new();
        for c in self
            .unique
            .into_iter()
            .filter(|c| fresh.contains(&c.event_id))
        {
            by_table.entry(c.table).or_default().push(c);
        }
        let mut execs = Vec::new();
        for ti in self.keys.keys() {
            let snapshot = snapshots(*ti);
            let changes = by_table.get(ti).map(Vec::as_slice).unwrap_or_default();
            if changes.is_empty() && !self.settle {
                continue;
            }
            let table = &projections.tables[*ti];
            let plan = plan::plan(changes.iter().copied(), &snapshot?);
            stats.planned(&plan);
            execs.extend(writes::writes(table, &plan));
        }
        Ok(Planned { execs, stats })
    }
}

/// The statements of a planned step, and its counts.
pub(crate) struct Planned {
    pub(crate) execs: Vec<Exec>,
    pub(crate) stats: ApplyStats,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::plan::Held;
    use crate::plan::tests::pos;
    use crate::projection::tests::{created_v2, product_event, shipped};
    use crate::projection::{Op, RejectKind};

    fn change(id: u128, key: &str, version: i64, op: Op) -> Change {
        Change {
            event_id: uuid::Uuid::from_u128(id),
            ..plan::tests::change(key, version, op)
        }
    }

    fn whole_row(p: &Projections) -> Op {
        Op::Upsert(vec![Some("x".into()); p.tables[0].columns.len()])
    }

    fn whats(execs: &[Exec]) -> Vec<&str> {
        execs.iter().map(|e| e.what.as_str()).collect()
    }

    #[test]
    fn records_below_the_stored_offsets_are_left_out_and_poison_is_set_aside() {
        let p = shipped();
        let records = [
            product_event("ProductCreated", &created_v2(), 0, 5),
            product_event("ProductCreated", &created_v2(), 0, 6),
            product_event("ProductCreated", "{}", 1, 3),
            product_event("ProductCreated", &created_v2(), 0, 7),
        ];
        let batch = decode(&p, &records, &BTreeMap::from([(0, 6)]));
        let decoded: Vec<usize> = batch.changes.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            decoded,
            [1, 3],
            "offset 5 of partition 0 was applied before"
        );
        assert_eq!(batch.rejected.len(), 1);
        assert_eq!(batch.rejected[0].0, 2);
        assert_eq!(batch.rejected[0].1.kind, RejectKind::MissingField);
        assert_eq!(batch.next_offsets, BTreeMap::from([(0, 8), (1, 4)]));
        assert_eq!(batch.applied_lsn, None);
    }

    #[test]
    fn a_redelivered_id_counts_once_and_each_key_is_read_once_per_table() {
        let p = shipped();
        let changes = [
            change(1, "b", 1, whole_row(&p)),
            change(2, "a", 1, whole_row(&p)),
            change(1, "b", 1, whole_row(&p)),
            change(3, "b", 2, Op::Update(vec![(1, Some("y".into()))])),
        ];
        let events = Events::new(&changes);
        let (ids, types) = events.processed();
        assert_eq!(ids, [1, 2, 3].map(uuid::Uuid::from_u128));
        assert_eq!(types, ["T"; 3]);
        assert_eq!(events.keys(), &BTreeMap::from([(0, vec!["a", "b"])]));

        // Event 2 was processed by an earlier batch.
        let fresh = HashSet::from([1, 3].map(uuid::Uuid::from_u128));
        let mut read = 0;
        let planned = events
            .plan(&p, &fresh, |_| {
                read += 1;
                Ok(Snapshot::default())
            })
            .unwrap();
        assert_eq!(read, 1, "one snapshot per table");
        assert_eq!((planned.stats.applied, planned.stats.duplicates), (2, 2));
        assert_eq!(
            whats(&planned.execs),
            ["upserting into catalog_product_read"],
            "b's create and update fold into one upsert; a is left alone"
        );
    }

    #[test]
    fn a_step_whose_events_were_all_processed_writes_nothing() {
        let p = shipped();
        let changes = [change(1, "a", 1, whole_row(&p))];
        let held = HashMap::from([(
            "a".to_owned(),
            vec![Held {
                event_id: uuid::Uuid::from_u128(9),
                event_type: "T".into(),
                pos: pos(3),
                op: Op::Delete,
                stored: true,
            }],
        )]);
        let planned = Events::new(&changes)
            .plan(&p, &HashSet::new(), |_| {
                Ok(Snapshot {
                    held: held.clone(),
                    ..Snapshot::default()
                })
            })
            .unwrap();
        assert!(planned.execs.is_empty());
        assert_eq!((planned.stats.applied, planned.stats.duplicates), (0, 1));
    }

    #[test]
    fn settling_keys_without_changes_applies_what_is_held_for_them() {
        let p = shipped();
        let events = Events::settle(0, vec!["k", "k"]);
        assert!(events.processed().0.is_empty());
        assert_eq!(events.keys(), &BTreeMap::from([(0, vec!["k"])]));
        let snapshot = || Snapshot {
            rows: HashMap::from([("k".to_owned(), pos(1))]),
            held: HashMap::from([(
                "k".to_owned(),
                vec![Held {
                    event_id: uuid::Uuid::from_u128(9),
                    event_type: "T".into(),
                    pos: pos(2),
                    op: Op::Update(vec![(1, Some("y".into()))]),
                    stored: true,
                }],
            )]),
            ..Snapshot::default()
        };
        let planned = events
            .plan(&p, &HashSet::new(), |_| Ok(snapshot()))
            .unwrap();
        assert_eq!(planned.stats.released, 1);
        assert_eq!(
            whats(&planned.execs),
            [
                "updating catalog_product_read",
                "releasing walcast_held",
                "recording released events"
            ]
        );
    }

    #[test]
    fn the_bookkeeping_writes_offsets_and_the_applied_lsn_only_when_there_are_some() {
        let none = bookkeeping("g", "t", &Batch::default());
        assert!(none.is_empty());
        let batch = Batch {
            next_offsets: BTreeMap::from([(0, 8)]),
            applied_lsn: Some(Lsn(0x16_B374_D848)),
            ..Batch::default()
        };
        let both = bookkeeping("g", "t", &batch);
        assert_eq!(
            whats(&both),
            ["writing walcast_offsets", "writing walcast_applied_lsn"]
        );
        assert_eq!(both[1].args.len(), 2);
    }
}
