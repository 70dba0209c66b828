//! Folding a batch of changes into one write per row (pure; no I/O).
//!
//! A multi-row `INSERT … ON CONFLICT` may touch a row once, yet a batch often holds several
//! events of one product (created, then repriced, then renamed). So the batch is folded per
//! key, in offset order, starting from what the table holds (the [`Snapshot`], read under
//! `FOR UPDATE`):
//!
//! * a change applies only if its [`Position`] is newer than the row's *and* its tombstone's;
//! * upsert + later updates become one upsert; updates merge into one update; a delete wins
//!   over what came before it and leaves a tombstone.
//!
//! # Held changes
//!
//! A change that cannot apply *yet* is **held** (stored in `walcast_held`, not recorded in
//! `processed_events`) instead of dropped, so that a repair converges:
//!
//! * an update of a key with no row and no newer tombstone waits for its row. When the row
//!   lands (an upsert), the held changes newer than it apply in position order, in the same
//!   transaction; older ones are discarded. A delete discards the held changes it covers;
//! * once the target dead-lettered an event of a key (the database refused it), every later
//!   change of that key is held behind it, until the dead letter is replayed (its event id
//!   arrives again and applies) or discarded (`walcast dlq discard`). Then everything held
//!   applies in position order. Other keys keep flowing.
//!
//! The statements keep the same guard in SQL, so even a plan built from a stale snapshot can
//! never make a row older.

use std::collections::{BTreeMap, HashMap};

use crate::projection::{Change, Op, Position};
use crate::value::Text;

/// A change waiting in `walcast_held`, or one of this batch that may have to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) event_id: uuid::Uuid,
    pub(crate) event_type: String,
    pub(crate) pos: Position,
    pub(crate) op: Op,
    /// Read from `walcast_held` (else it came with this batch).
    pub(crate) stored: bool,
}

impl Held {
    fn arriving(c: &Change) -> Held {
        Held {
            event_id: c.event_id,
            event_type: c.event_type.clone(),
            pos: c.pos,
            op: c.op.clone(),
            stored: false,
        }
    }
}

/// What a table holds for the keys of a batch.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) rows: HashMap<String, Position>,
    pub(crate) tombstones: HashMap<String, Position>,
    /// Held changes per key (`stored` set).
    pub(crate) held: HashMap<String, Vec<Held>>,
    /// Per key: the ids of its dead letters that hold it.
    pub(crate) dead_letters: HashMap<String, Vec<uuid::Uuid>>,
}

/// A whole row to insert or replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowWrite {
    pub(crate) key: String,
    pub(crate) pos: Position,
    pub(crate) values: Vec<Option<Text>>,
}

/// Some columns of an existing row; `values` follow the column set the write is filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatchWrite {
    pub(crate) key: String,
    pub(crate) pos: Position,
    pub(crate) values: Vec<Option<Text>>,
}

/// The writes of one table for one batch.
#[derive(Debug, Default)]
pub(crate) struct TablePlan {
    pub(crate) upserts: Vec<RowWrite>,
    /// Sorted data-column indexes → the rows that set exactly those columns.
    pub(crate) updates: BTreeMap<Vec<usize>, Vec<PatchWrite>>,
    pub(crate) deletes: Vec<(String, Position)>,
    /// Changes to store in `walcast_held` (key, change); their ids leave `processed_events`.
    pub(crate) hold: Vec<(String, Held)>,
    /// Rows to remove from `walcast_held` (key, event id): stored changes applied or
    /// discarded, and dead letters replayed.
    pub(crate) unhold: Vec<(String, uuid::Uuid)>,
    /// Ids to record in `processed_events` (stored held changes applied or discarded).
    pub(crate) mark: Vec<(uuid::Uuid, String)>,
    /// Ids this batch recorded in `processed_events` that are held instead.
    pub(crate) unmark: Vec<uuid::Uuid>,
    /// Changes older than the row or tombstone they target (or found so once held).
    pub(crate) stale: u64,
    /// Updates of rows that do not exist, held until the row lands.
    pub(crate) missing_row: u64,
    /// Changes newly held (for a missing row, or behind a dead letter).
    pub(crate) held: u64,
    /// Stored held changes applied.
    pub(crate) released: u64,
    /// Redeliveries of changes already held.
    pub(crate) duplicates: u64,
}

impl TablePlan {
    /// `h` of `key` leaves the held set; `applied` or found stale.
    fn settled(&mut self, key: &str, h: Held, applied: bool) {
        if h.stored {
            self.unhold.push((key.to_owned(), h.event_id));
            self.mark.push((h.event_id, h.event_type));
            self.released += u64::from(applied);
        }
        self.stale += u64::from(!applied);
    }
}

enum Pending {
    Upsert(Vec<Option<Text>>),
    Update(BTreeMap<usize, Option<Text>>),
    Delete,
}

enum Folded {
    Applied,
    Stale,
    NoRow,
}

struct KeyState {
    exists: bool,
    pos: Option<Position>,
    pending: Option<Pending>,
    /// Changes not applied yet: stored ones, and this batch's that wait.
    held: Vec<Held>,
    dead_letters: Vec<uuid::Uuid>,
}

impl KeyState {
    fn new(key: &str, snapshot: &Snapshot) -> KeyState {
        let row = snapshot.rows.get(key).copied();
        let tomb = snapshot.tombstones.get(key).copied();
        KeyState {
            exists: row.is_some(),
            pos: row.max(tomb),
            pending: None,
            held: snapshot.held.get(key).cloned().unwrap_or_default(),
            dead_letters: snapshot.dead_letters.get(key).cloned().unwrap_or_default(),
        }
    }

    /// Folds one change into the key's pending write.
    fn fold(&mut self, pos: Position, op: &Op) -> Folded {
        if self.pos.is_some_and(|p| pos <= p) {
            return Folded::Stale;
        }
        match op {
            Op::Upsert(values) => {
                self.pending = Some(Pending::Upsert(values.clone()));
                self.exists = true;
            }
            Op::Update(_) if !self.exists => return Folded::NoRow,
            Op::Update(set) => match &mut self.pending {
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
                    self.pending = Some(Pending::Update(set.iter().cloned().collect()));
                }
            },
            Op::Delete => {
                self.pending = Some(Pending::Delete);
                self.exists = false;
            }
        }
        self.pos = Some(pos);
        Folded::Applied
    }

    /// Unless a dead letter holds the key, applies what is held in position order: updates
    /// without a row keep waiting, changes older than the row or tombstone are discarded.
    fn settle(&mut self, key: &str, out: &mut TablePlan) {
        if !self.dead_letters.is_empty() {
            return;
        }
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|h| h.pos);
        let mut waiting = Vec::new();
        for h in held {
            match self.fold(h.pos, &h.op) {
                Folded::Applied => out.settled(key, h, true),
                Folded::Stale => out.settled(key, h, false),
                Folded::NoRow => waiting.push(h),
            }
        }
        for h in waiting {
            if self.pos.is_some_and(|p| h.pos <= p) {
                out.settled(key, h, false);
            } else {
                self.held.push(h);
            }
        }
    }
}

/// Folds `changes` (one table, offset order) against `snapshot`. Keys of the snapshot that no
/// change names are settled too (a released hold).
pub(crate) fn plan<'c>(
    changes: impl IntoIterator<Item = &'c Change>,
    snapshot: &Snapshot,
) -> TablePlan {
    let mut out = TablePlan::default();
    let mut keys: BTreeMap<&str, KeyState> = BTreeMap::new();
    for key in snapshot.held.keys().chain(snapshot.dead_letters.keys()) {
        if !keys.contains_key(key.as_str()) {
            let mut state = KeyState::new(key, snapshot);
            state.settle(key, &mut out);
            keys.insert(key, state);
        }
    }
    for c in changes {
        let state = keys
            .entry(&c.key)
            .or_insert_with(|| KeyState::new(&c.key, snapshot));
        if state.held.iter().any(|h| h.event_id == c.event_id) {
            // Already held: it stays so, and stays out of processed_events.
            out.unmark.push(c.event_id);
            out.duplicates += 1;
            continue;
        }
        if let Some(i) = state.dead_letters.iter().position(|d| *d == c.event_id) {
            state.dead_letters.swap_remove(i);
            out.unhold.push((c.key.clone(), c.event_id));
        }
        if state.dead_letters.is_empty() && state.held.is_empty() {
            match state.fold(c.pos, &c.op) {
                Folded::Applied => {}
                Folded::Stale => out.stale += 1,
                Folded::NoRow => state.held.push(Held::arriving(c)),
            }
        } else {
            state.held.push(Held::arriving(c));
        }
        state.settle(&c.key, &mut out);
    }
    for (key, state) in keys {
        for h in state.held.into_iter().filter(|h| !h.stored) {
            out.held += 1;
            if matches!(h.op, Op::Update(_)) && state.dead_letters.is_empty() {
                out.missing_row += 1;
            }
            out.unmark.push(h.event_id);
            out.hold.push((key.to_owned(), h));
        }
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pos(version: i64) -> Position {
        Position {
            version,
            occurred_at: Some(version * 1000),
        }
    }

    pub(crate) fn change(key: &str, version: i64, op: Op) -> Change {
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
    fn older_changes_than_the_row_are_stale_and_updates_of_missing_rows_are_held() {
        let mut snap = Snapshot::default();
        snap.rows.insert("a".into(), pos(5));
        let cs = [
            change("a", 4, price("9.99")),
            change("a", 5, price("9.99")),
            change("b", 2, price("1.00")),
        ];
        let p = plan(&cs, &snap);
        assert_eq!((p.stale, p.missing_row, p.held), (2, 1, 1));
        assert!(p.upserts.is_empty() && p.updates.is_empty());
        assert_eq!(p.hold.len(), 1);
        assert_eq!((p.hold[0].0.as_str(), p.hold[0].1.pos), ("b", pos(2)));
        assert_eq!(
            p.unmark,
            vec![cs[2].event_id],
            "a held change is not processed"
        );
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
    fn delete_wins_and_later_updates_in_the_batch_wait_for_a_row() {
        let mut snap = Snapshot::default();
        snap.rows.insert("a".into(), pos(1));
        let cs = [
            change("a", 2, price("2.00")),
            change("a", 3, Op::Delete),
            change("a", 4, price("4.00")),
        ];
        let p = plan(&cs, &snap);
        assert_eq!(p.deletes, vec![("a".to_owned(), pos(3))]);
        assert_eq!((p.missing_row, p.held), (1, 1));
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

    fn stored(c: &Change) -> Held {
        Held {
            stored: true,
            ..Held::arriving(c)
        }
    }

    #[test]
    fn a_held_update_applies_when_its_row_lands_and_older_ones_are_discarded() {
        let rename = change("a", 2, Op::Update(vec![(0, Some("n2".into()))]));
        let old = change("a", 1, price("0.50"));
        let mut snap = Snapshot::default();
        snap.held
            .insert("a".into(), vec![stored(&rename), stored(&old)]);
        let mut create = change("a", 1, row("x"));
        create.pos.occurred_at = Some(1500);
        let p = plan([&create], &snap);
        assert_eq!(
            p.upserts,
            vec![RowWrite {
                key: "a".into(),
                pos: pos(2),
                values: vec![Some("n2".into()), Some("1.00".into())]
            }]
        );
        assert_eq!((p.released, p.stale, p.held), (1, 1, 0));
        let mut gone: Vec<_> = p.unhold.iter().map(|(_, id)| *id).collect();
        gone.sort();
        let mut want = vec![rename.event_id, old.event_id];
        want.sort();
        assert_eq!(gone, want);
        assert_eq!(
            p.mark.len(),
            2,
            "applied and discarded ones are processed now"
        );
    }

    #[test]
    fn a_tombstone_discards_the_held_changes_it_covers() {
        let covered = change("a", 2, price("2.00"));
        let newer = change("a", 5, price("5.00"));
        let mut snap = Snapshot::default();
        snap.held
            .insert("a".into(), vec![stored(&covered), stored(&newer)]);
        let p = plan([&change("a", 3, Op::Delete)], &snap);
        assert_eq!(p.deletes, vec![("a".to_owned(), pos(3))]);
        assert_eq!(p.unhold, vec![("a".to_owned(), covered.event_id)]);
        assert!(p.hold.is_empty(), "the newer one stays stored, as it was");
        assert_eq!(p.stale, 1);
    }

    #[test]
    fn a_dead_letter_holds_its_key_until_it_is_replayed_and_other_keys_flow() {
        let dead = change("a", 2, Op::Update(vec![(0, Some("n2".into()))]));
        let mut snap = Snapshot::default();
        snap.rows.insert("a".into(), pos(1));
        snap.rows.insert("b".into(), pos(1));
        snap.dead_letters.insert("a".into(), vec![dead.event_id]);
        let later = change("a", 3, price("3.00"));
        let other = change("b", 2, price("7.00"));
        let p = plan([&later, &other], &snap);
        assert!(p.updates[&vec![1]].iter().all(|w| w.key == "b"));
        assert_eq!(p.updates[&vec![1]].len(), 1);
        assert_eq!((p.held, p.missing_row), (1, 0));
        assert_eq!(p.hold[0].1.event_id, later.event_id);

        // The dead letter comes back (same id) and applies, then what waited behind it.
        snap.held.insert("a".into(), vec![stored(&later)]);
        let p = plan([&dead], &snap);
        assert_eq!(
            p.updates[&vec![0, 1]],
            vec![PatchWrite {
                key: "a".into(),
                pos: pos(3),
                values: vec![Some("n2".into()), Some("3.00".into())]
            }]
        );
        assert_eq!(p.released, 1);
        assert_eq!(
            p.unhold.len(),
            2,
            "the dead letter's hold and the held change"
        );
        assert!(p.hold.is_empty() && p.unmark.is_empty());
    }

    #[test]
    fn a_released_hold_applies_without_new_changes_and_a_redelivered_held_change_stays_held() {
        let later = change("a", 3, price("3.00"));
        let mut snap = Snapshot::default();
        snap.rows.insert("a".into(), pos(1));
        snap.held.insert("a".into(), vec![stored(&later)]);
        let p = plan([], &snap);
        assert_eq!(p.updates[&vec![1]][0].pos, pos(3));
        assert_eq!(p.released, 1);

        snap.dead_letters
            .insert("a".into(), vec![uuid::Uuid::new_v4()]);
        let p = plan([&later], &snap);
        assert_eq!((p.duplicates, p.held), (1, 0));
        assert_eq!(p.unmark, vec![later.event_id]);
        assert!(p.updates.is_empty() && p.unhold.is_empty());
    }

    #[test]
    fn a_corrected_event_under_a_new_id_waits_and_applies_in_position_order_once_released() {
        let mut snap = Snapshot::default();
        snap.rows.insert("a".into(), pos(1));
        snap.dead_letters
            .insert("a".into(), vec![uuid::Uuid::new_v4()]);
        let later = change("a", 3, Op::Update(vec![(0, Some("n3".into()))]));
        snap.held.insert("a".into(), vec![stored(&later)]);
        let corrected = change(
            "a",
            2,
            Op::Update(vec![(0, Some("n2".into())), (1, Some("2.00".into()))]),
        );
        let p = plan([&corrected], &snap);
        assert!(p.updates.is_empty(), "it waits behind the dead letter");
        assert_eq!(p.hold.len(), 1);

        // Discarded: the dead letter's row is gone; both apply, v2 first.
        snap.dead_letters.clear();
        snap.held
            .insert("a".into(), vec![stored(&later), stored(&corrected)]);
        let p = plan([], &snap);
        assert_eq!(
            p.updates[&vec![0, 1]],
            vec![PatchWrite {
                key: "a".into(),
                pos: pos(3),
                values: vec![Some("n3".into()), Some("2.00".into())]
            }]
        );
        assert_eq!(p.released, 2);
    }
}
