//! Folding a batch of changes into one write per row (pure; no I/O).
//!
//! A multi-row `INSERT … ON CONFLICT` may touch a row once, yet a batch often holds several
//! events of one product (created, then repriced, then renamed). So the batch is folded per
//! key, in offset order, starting from what the table holds (the [`Snapshot`], read under
//! `FOR UPDATE`):
//!
//! * a change applies only if its [`Position`] is newer than the row's *and* its tombstone's;
//! * an update of a row that does not exist (never created, or deleted) is dropped;
//! * upsert + later updates become one upsert; updates merge into one update; a delete wins
//!   over what came before it and leaves a tombstone.
//!
//! The statements keep the same guard in SQL, so even a plan built from a stale snapshot can
//! never make a row older.

use std::collections::{BTreeMap, HashMap};

use crate::projection::{Change, Op, Position};

/// What a table holds for the keys of a batch.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) rows: HashMap<String, Position>,
    pub(crate) tombstones: HashMap<String, Position>,
}

/// A whole row to insert or replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowWrite {
    pub(crate) key: String,
    pub(crate) pos: Position,
    pub(crate) values: Vec<Option<String>>,
}

/// Some columns of an existing row; `values` follow the column set the write is filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatchWrite {
    pub(crate) key: String,
    pub(crate) pos: Position,
    pub(crate) values: Vec<Option<String>>,
}

/// The writes of one table for one batch.
#[derive(Debug, Default)]
pub(crate) struct TablePlan {
    pub(crate) upserts: Vec<RowWrite>,
    /// Sorted data-column indexes → the rows that set exactly those columns.
    pub(crate) updates: BTreeMap<Vec<usize>, Vec<PatchWrite>>,
    pub(crate) deletes: Vec<(String, Position)>,
    /// Changes older than the row or tombstone they target.
    pub(crate) stale: u64,
    /// Updates of rows that do not exist.
    pub(crate) missing_row: u64,
}

enum Pending {
    Upsert(Vec<Option<String>>),
    Update(BTreeMap<usize, Option<String>>),
    Delete,
}

struct KeyState {
    exists: bool,
    pos: Option<Position>,
    pending: Option<Pending>,
}

/// Folds `changes` (one table, offset order) against `snapshot`.
pub(crate) fn plan<'c>(
    changes: impl IntoIterator<Item = &'c Change>,
    snapshot: &Snapshot,
) -> TablePlan {
    let mut out = TablePlan::default();
    let mut keys: BTreeMap<&str, KeyState> = BTreeMap::new();
    for c in changes {
        let state = keys.entry(&c.key).or_insert_with(|| {
            let row = snapshot.rows.get(&c.key).copied();
            let tomb = snapshot.tombstones.get(&c.key).copied();
            KeyState {
                exists: row.is_some(),
                pos: row.max(tomb),
                pending: None,
            }
        });
        if state.pos.is_some_and(|p| c.pos <= p) {
            out.stale += 1;
            continue;
        }
        match &c.op {
            Op::Upsert(values) => {
                state.pending = Some(Pending::Upsert(values.clone()));
                state.exists = true;
            }
            Op::Update(_) if !state.exists => {
                out.missing_row += 1;
                continue;
            }
            Op::Update(set) => match &mut state.pending {
                Some(Pending::Upsert(row)) => {
                    for (i, v) in set {
                        row[*i] = v.clone();
                    }
                }
                Some(Pending::Update(patch)) => {
                    for (i, v) in set {
                        patch.insert(*i, v.clone());
                    }
                }
                Some(Pending::Delete) | None => {
                    state.pending = Some(Pending::Update(set.iter().cloned().collect()));
                }
            },
            Op::Delete => {
                state.pending = Some(Pending::Delete);
                state.exists = false;
            }
        }
        state.pos = Some(c.pos);
    }
    for (key, state) in keys {
        let (Some(pending), Some(pos)) = (state.pending, state.pos) else {
            continue;
        };
        let key = key.to_owned();
        match pending {
            Pending::Upsert(values) => out.upserts.push(RowWrite { key, pos, values }),
            Pending::Update(patch) => {
                let cols: Vec<usize> = patch.keys().copied().collect();
                let values = patch.into_values().collect();
                out.updates
                    .entry(cols)
                    .or_default()
                    .push(PatchWrite { key, pos, values });
            }
            Pending::Delete => out.deletes.push((key, pos)),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn pos(version: i64) -> Position {
        Position {
            version,
            occurred_at: Some(version * 1000),
        }
    }

    fn change(key: &str, version: i64, op: Op) -> Change {
        Change {
            event_id: uuid::Uuid::new_v4(),
            event_type: "T".into(),
            table: 0,
            key: key.into(),
            pos: pos(version),
            op,
        }
    }

    fn row(name: &str) -> Op {
        Op::Upsert(vec![Some(name.into()), Some("1.00".into())])
    }

    fn price(p: &str) -> Op {
        Op::Update(vec![(1, Some(p.into()))])
    }

    #[test]
    fn create_then_updates_fold_into_one_upsert_with_the_last_position() {
        let cs = [
            change("a", 1, row("x")),
            change("a", 2, price("2.00")),
            change("a", 3, price("3.00")),
        ];
        let p = plan(&cs, &Snapshot::default());
        assert_eq!(
            p.upserts,
            vec![RowWrite {
                key: "a".into(),
                pos: pos(3),
                values: vec![Some("x".into()), Some("3.00".into())]
            }]
        );
        assert!(p.updates.is_empty() && p.deletes.is_empty());
    }

    #[test]
    fn older_changes_than_the_row_are_stale_and_updates_of_missing_rows_are_dropped() {
        let mut snap = Snapshot::default();
        snap.rows.insert("a".into(), pos(5));
        let cs = [
            change("a", 4, price("9.99")),
            change("a", 5, price("9.99")),
            change("b", 2, price("1.00")),
        ];
        let p = plan(&cs, &snap);
        assert_eq!((p.stale, p.missing_row), (2, 1));
        assert!(p.upserts.is_empty() && p.updates.is_empty());
    }

    #[test]
    fn a_tombstone_keeps_a_late_create_or_update_from_resurrecting_the_row() {
        let mut snap = Snapshot::default();
        snap.tombstones.insert("a".into(), pos(4));
        let cs = [change("a", 1, row("x")), change("a", 3, price("2.00"))];
        let p = plan(&cs, &snap);
        assert_eq!(p.stale, 2);
        assert!(p.upserts.is_empty());
        let newer = [change("a", 5, row("again"))];
        assert_eq!(
            plan(&newer, &snap).upserts.len(),
            1,
            "a newer create may re-create it"
        );
    }

    #[test]
    fn delete_wins_and_later_updates_in_the_batch_are_dropped() {
        let mut snap = Snapshot::default();
        snap.rows.insert("a".into(), pos(1));
        let cs = [
            change("a", 2, price("2.00")),
            change("a", 3, Op::Delete),
            change("a", 4, price("4.00")),
        ];
        let p = plan(&cs, &snap);
        assert_eq!(p.deletes, vec![("a".to_owned(), pos(3))]);
        assert_eq!(p.missing_row, 1);
        assert!(p.updates.is_empty());
    }

    #[test]
    fn updates_merge_and_are_grouped_by_column_set() {
        let mut snap = Snapshot::default();
        snap.rows.insert("a".into(), pos(1));
        snap.rows.insert("b".into(), pos(1));
        let cs = [
            change("a", 2, Op::Update(vec![(0, Some("n".into()))])),
            change("a", 3, price("3.00")),
            change("b", 2, price("5.00")),
        ];
        let p = plan(&cs, &snap);
        assert_eq!(
            p.updates[&vec![0, 1]][0].values,
            vec![Some("n".into()), Some("3.00".into())]
        );
        assert_eq!(p.updates[&vec![1]][0].key, "b");
    }

    #[test]
    fn equal_version_breaks_ties_by_occurred_at() {
        let mut snap = Snapshot::default();
        snap.rows.insert(
            "a".into(),
            Position {
                version: 2,
                occurred_at: Some(10),
            },
        );
        let mut later = change("a", 2, price("1.00"));
        later.pos.occurred_at = Some(11);
        let mut earlier = change("a", 2, price("2.00"));
        earlier.pos.occurred_at = Some(9);
        let p = plan([&earlier, &later], &snap);
        assert_eq!(p.stale, 1);
        assert_eq!(p.updates[&vec![1]][0].values, vec![Some("1.00".into())]);
    }
}
