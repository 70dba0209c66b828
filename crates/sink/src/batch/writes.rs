//! The statements that carry out a plan, with their arguments (pure; no I/O): one multi-row
//! statement per table and write shape, the held changes, and the batch's bookkeeping.

use tokio_postgres::types::ToSql;
use walcast_pgoutput::Timestamp;

use super::Batch;
use crate::plan::TablePlan;
use crate::projection::{Change, Op, Position, Projections, Table};
use crate::sql;
use crate::value::{SqlText, Text};

/// One statement and its arguments, owned so that several can be sent at once.
pub(crate) struct Exec {
    pub(crate) sql: String,
    pub(crate) what: String,
    pub(crate) args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Exec {
    pub(crate) fn new(sql: String, what: String) -> Exec {
        Exec {
            sql,
            what,
            args: Vec::new(),
        }
    }

    pub(crate) fn arg(mut self, a: impl ToSql + Sync + Send + 'static) -> Exec {
        self.args.push(Box::new(a));
        self
    }
}

/// The keys, data columns, versions and occurred-at times of some writes, as array arguments.
fn row_args<'r>(
    mut e: Exec,
    rows: impl Iterator<Item = (&'r str, &'r Position, &'r [Option<Text>])> + Clone,
    columns: usize,
) -> Exec {
    e = e.arg(
        rows.clone()
            .map(|r| r.0.to_owned())
            .collect::<Vec<String>>(),
    );
    for i in 0..columns {
        e = e.arg(
            rows.clone()
                .map(|r| r.2[i].clone().map(SqlText))
                .collect::<Vec<Option<SqlText>>>(),
        );
    }
    e = e.arg(rows.clone().map(|r| r.1.version).collect::<Vec<i64>>());
    e.arg(rows.map(|r| occurred(r.1)).collect::<Vec<Option<String>>>())
}

/// The most value bytes one write statement carries (more rows go into more statements of
/// the same shape, sent in the same round trip): the client encodes each statement whole
/// and copies it once more into the connection's write buffer, which keeps its size.
const STATEMENT_BYTES: usize = 1024 * 1024;

/// `rows` in runs of at most [`STATEMENT_BYTES`] of values (at least one row each).
fn runs<R>(rows: &[R], values: impl Fn(&R) -> &[Option<Text>]) -> Vec<&[R]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in rows.iter().enumerate() {
        let size: usize = values(r).iter().flatten().map(|v| v.len()).sum();
        if i > start && bytes + size > STATEMENT_BYTES {
            out.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// The statements that carry out `plan` on `table`: one per write shape (or more, by
/// [`STATEMENT_BYTES`]).
pub(crate) fn writes(table: &Table, plan: &TablePlan) -> Vec<Exec> {
    let mut out = Vec::new();
    for rows in runs(&plan.upserts, |r| &r.values) {
        let rows = rows
            .iter()
            .map(|r| (r.key.as_str(), &r.pos, r.values.as_slice()));
        let e = Exec::new(sql::upsert(table), format!("upserting into {}", table.name));
        out.push(row_args(e, rows, table.columns.len()));
    }
    for (set, rows) in &plan.updates {
        for rows in runs(rows, |r| &r.values) {
            let rows = rows
                .iter()
                .map(|r| (r.key.as_str(), &r.pos, r.values.as_slice()));
            let e = Exec::new(sql::update(table, set), format!("updating {}", table.name));
            out.push(row_args(e, rows, set.len()));
        }
    }
    if !plan.deletes.is_empty() {
        let rows = plan.deletes.iter().map(|(k, p)| (k.as_str(), p, &[][..]));
        let e = Exec::new(sql::delete(table), format!("deleting from {}", table.name));
        out.push(row_args(e, rows.clone(), 0));
        let e = Exec::new(
            sql::STORE_TOMBSTONES.to_owned(),
            "writing walcast_tombstones".into(),
        )
        .arg(table.name.clone());
        out.push(row_args(e, rows, 0));
    }
    out.extend(held_writes(table, plan));
    out
}

/// The `walcast_held` and `processed_events` statements of `plan`.
fn held_writes(table: &Table, plan: &TablePlan) -> Vec<Exec> {
    let mut out = Vec::new();
    if !plan.hold.is_empty() {
        let held = || plan.hold.iter().map(|(_, h)| h);
        out.push(
            Exec::new(sql::STORE_HELD.into(), "writing walcast_held".into())
                .arg(table.name.clone())
                .arg(plan.hold.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>())
                .arg(held().map(|h| h.event_id).collect::<Vec<_>>())
                .arg(held().map(|h| h.event_type.clone()).collect::<Vec<_>>())
                .arg(held().map(|h| h.pos.version).collect::<Vec<_>>())
                .arg(held().map(|h| h.pos.occurred_at).collect::<Vec<_>>())
                .arg(held().map(|h| encode(table, &h.op)).collect::<Vec<_>>()),
        );
    }
    if !plan.unhold.is_empty() {
        out.push(
            Exec::new(sql::DELETE_HELD.into(), "releasing walcast_held".into())
                .arg(table.name.clone())
                .arg(
                    plan.unhold
                        .iter()
                        .map(|(k, _)| k.clone())
                        .collect::<Vec<_>>(),
                )
                .arg(plan.unhold.iter().map(|(_, id)| *id).collect::<Vec<_>>()),
        );
    }
    if !plan.unmark.is_empty() {
        out.push(
            Exec::new(
                sql::UNMARK_PROCESSED.into(),
                "keeping held events out of processed_events".into(),
            )
            .arg(plan.unmark.clone()),
        );
    }
    if !plan.mark.is_empty() {
        let (ids, types): (Vec<uuid::Uuid>, Vec<String>) = plan.mark.iter().cloned().unzip();
        out.push(
            Exec::new(
                sql::MARK_PROCESSED.into(),
                "recording released events".into(),
            )
            .arg(ids)
            .arg(types),
        );
    }
    out
}

/// The most of a database's error text kept with a dead letter's hold.
const MAX_ERROR_CHARS: usize = 2000;

/// Records that the target dead-lettered `change` (the database refused it): its key is held.
pub(crate) fn hold_key(projections: &Projections, change: &Change, error: &str) -> Exec {
    let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
    Exec::new(
        sql::STORE_DEAD_LETTER.into(),
        "holding the key of a dead letter".into(),
    )
    .arg(projections.tables[change.table].name.clone())
    .arg(change.key.clone())
    .arg(change.event_id)
    .arg(change.event_type.clone())
    .arg(change.pos.version)
    .arg(change.pos.occurred_at)
    .arg(error)
}

/// A change as stored in `walcast_held.change`: `{"upsert": {column: text|null, …}}`,
/// `{"update": {…}}` or `"delete"`; columns by name, so a held change outlives a reordering
/// of the mapping.
fn encode(table: &Table, op: &Op) -> String {
    let columns = |set: &mut dyn Iterator<Item = (usize, &Option<Text>)>| {
        set.map(|(i, v)| {
            let name = (table.columns.get(i))
                .map(|c| c.name.clone())
                .unwrap_or_default();
            let v = v.as_deref().map_or(serde_json::Value::Null, |v| v.into());
            (name, v)
        })
        .collect::<serde_json::Map<_, _>>()
    };
    let value = match op {
        Op::Upsert(values) => {
            serde_json::json!({ "upsert": columns(&mut values.iter().enumerate()) })
        }
        Op::Update(set) => {
            serde_json::json!({ "update": columns(&mut set.iter().map(|(i, v)| (*i, v))) })
        }
        Op::Delete => serde_json::json!("delete"),
    };
    value.to_string()
}

/// The columns of an encoded change, by index.
fn decode_columns(
    table: &Table,
    v: &serde_json::Value,
) -> std::result::Result<Vec<(usize, Option<Text>)>, String> {
    let obj = v.as_object().ok_or("the columns are not an object")?;
    let mut out = Vec::with_capacity(obj.len());
    for (name, v) in obj {
        let i = (table.columns.iter().position(|c| &c.name == name))
            .ok_or_else(|| format!("column {name} is no longer a data column of {}", table.name))?;
        let v = match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(Text::from(s.as_str())),
            other => return Err(format!("column {name} holds {other}, not text")),
        };
        out.push((i, v));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

/// The change [`encode`] wrote, or why it no longer fits `table`.
pub(crate) fn decode_held(table: &Table, text: &str) -> std::result::Result<Op, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if value.as_str() == Some("delete") {
        return Ok(Op::Delete);
    }
    if let Some(v) = value.get("upsert") {
        let mut row = vec![None; table.columns.len()];
        for (i, v) in decode_columns(table, v)? {
            row[i] = v;
        }
        return Ok(Op::Upsert(row));
    }
    if let Some(v) = value.get("update") {
        return Ok(Op::Update(decode_columns(table, v)?));
    }
    Err("neither upsert, update nor delete".into())
}

/// The offsets and the applied LSN of `batch` (consumer `group` on `topic`), written with its
/// rows.
pub(crate) fn bookkeeping(group: &str, topic: &str, batch: &Batch) -> Vec<Exec> {
    let mut out = Vec::new();
    let (parts, offs): (Vec<i32>, Vec<i64>) =
        batch.next_offsets.iter().map(|(p, o)| (*p, *o)).unzip();
    if !parts.is_empty() {
        out.push(
            Exec::new(sql::STORE_OFFSETS.into(), "writing walcast_offsets".into())
                .arg(group.to_owned())
                .arg(topic.to_owned())
                .arg(parts)
                .arg(offs),
        );
    }
    if let Some(lsn) = batch.applied_lsn {
        out.push(
            Exec::new(
                sql::STORE_APPLIED_LSN.into(),
                "writing walcast_applied_lsn".into(),
            )
            .arg(group.to_owned())
            .arg(lsn.to_string()),
        );
    }
    out
}

fn occurred(p: &Position) -> Option<String> {
    p.occurred_at
        .and_then(Timestamp::from_unix_micros)
        .map(|t| t.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::plan::RowWrite;
    use crate::projection::tests::shipped;

    #[test]
    fn write_statements_split_at_a_megabyte_of_values_and_never_split_a_row() {
        let row = |bytes: usize| RowWrite {
            key: "k".into(),
            pos: Position {
                version: 1,
                occurred_at: None,
            },
            values: vec![Some("x".repeat(bytes).into()), None],
        };
        let small: Vec<RowWrite> = (0..1000).map(|_| row(300)).collect();
        assert_eq!(
            runs(&small, |r| &r.values).len(),
            1,
            "small events: one statement"
        );
        let big: Vec<RowWrite> = (0..16).map(|_| row(990_000)).collect();
        let split = runs(&big, |r| &r.values);
        assert_eq!(split.len(), 16, "one ~1 MB row per statement");
        assert!(split.iter().all(|r| r.len() == 1));
        let mixed = [
            row(600_000),
            row(400_000),
            row(100_000),
            row(2_000_000),
            row(1),
        ];
        let split: Vec<usize> = runs(&mixed, |r| &r.values)
            .iter()
            .map(|r| r.len())
            .collect();
        assert_eq!(split, [2, 1, 1, 1], "a row over the limit goes alone");
        assert!(runs(&[] as &[RowWrite], |r| &r.values).is_empty());
    }

    #[test]
    fn a_held_change_reads_back_as_it_was_written_by_column_name() {
        let p = shipped();
        let t = &p.tables[0];
        let n = t.columns.len();
        let row: Vec<Option<Text>> = (0..n)
            .map(|i| (i != 2).then(|| format!("v{i} \"é\" \u{1}").into()))
            .collect();
        for op in [
            Op::Upsert(row),
            Op::Update(vec![(1, Some("name".into())), (2, None)]),
            Op::Delete,
        ] {
            assert_eq!(decode_held(t, &encode(t, &op)).unwrap(), op);
        }
        let gone = decode_held(t, r#"{"update": {"colour": "red"}}"#).unwrap_err();
        assert!(gone.contains("colour is no longer a data column"), "{gone}");
        assert!(decode_held(t, r#"{"rename": {}}"#).is_err());
        assert!(decode_held(t, r#"{"update": {"name": 3}}"#).is_err());
    }
}
