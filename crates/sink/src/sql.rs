//! The statements a target runs, generated once per table shape (pure; no I/O).
//!
//! Rows travel as parallel arrays (`unnest($1::text[], $2::text[], …)`): one statement and a
//! fixed parameter count per batch, whatever its size, so statements are prepared once per
//! connection. Values arrive as checked canonical text and are cast to the column type in SQL.
//! Every write repeats the version guard, `(version, occurred_at)` strictly newer.

use crate::projection::{ColRef, Table};

// Advisory locks (namespace 0x57414C01 = 1463897089): a rebuild holds `(ns, hashtext(group))`
// exclusively for its whole run and every apply transaction takes it shared, so the two never
// interleave; `(ns + 1, 0)` serializes schema DDL of concurrent sinks on one database.

/// Takes the rebuild lock shared for the transaction, or fails (division by zero, SQLSTATE
/// 22012) when a rebuild holds it, so that the statements pipelined behind it do nothing and
/// lock nothing.
pub(crate) const REBUILD_GATE: &str =
    "SELECT 1 / pg_try_advisory_xact_lock_shared(1463897089, hashtext($1))::int";
pub(crate) const REBUILD_LOCK_EXCLUSIVE: &str = "SELECT pg_advisory_lock(1463897089, hashtext($1))";
pub(crate) const REBUILD_UNLOCK: &str = "SELECT pg_advisory_unlock(1463897089, hashtext($1))";
pub(crate) const SCHEMA_LOCK_SQL: &str = "SELECT pg_advisory_lock(1463897090, 0)";
pub(crate) const SCHEMA_UNLOCK_SQL: &str = "SELECT pg_advisory_unlock(1463897090, 0)";

pub(crate) const LOAD_OFFSETS: &str =
    "SELECT partition, next_offset FROM walcast_offsets WHERE consumer_group = $1 AND topic = $2";
pub(crate) const LOCK_OFFSETS: &str = "SELECT partition, next_offset FROM walcast_offsets \
     WHERE consumer_group = $1 AND topic = $2 FOR UPDATE";
pub(crate) const STORE_OFFSETS: &str = "INSERT INTO walcast_offsets AS o \
     (consumer_group, topic, partition, next_offset, updated_at) \
     SELECT $1::text, $2::text, v.p, v.o, now() FROM unnest($3::int[], $4::bigint[]) AS v(p, o) \
     ON CONFLICT (consumer_group, topic, partition) \
     DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()";
/// Writes nothing while the group's "rebuilding" marker exists (a half-built target reports no
/// applied LSN).
pub(crate) const STORE_APPLIED_LSN: &str = "INSERT INTO walcast_applied_lsn AS a \
     (consumer_group, commit_lsn, applied_at) SELECT $1::text, $2::text::pg_lsn, now() \
     WHERE NOT EXISTS (SELECT 1 FROM walcast_rebuilding WHERE consumer_group = $1::text) \
     ON CONFLICT (consumer_group) DO UPDATE \
     SET commit_lsn = GREATEST(a.commit_lsn, EXCLUDED.commit_lsn), applied_at = now()";
/// Sets the group's "rebuilding" marker (`walcast_rebuilding`): `group, mode`. A rebuild run
/// again after one that died keeps the first start time.
pub(crate) const MARK_REBUILDING: &str = "INSERT INTO walcast_rebuilding (consumer_group, mode) \
     VALUES ($1, $2) ON CONFLICT (consumer_group) DO UPDATE SET mode = EXCLUDED.mode";
pub(crate) const CLEAR_REBUILDING: &str =
    "DELETE FROM walcast_rebuilding WHERE consumer_group = $1";
pub(crate) const INSERT_PROCESSED: &str = "INSERT INTO processed_events (event_id, event_type) \
     SELECT * FROM unnest($1::uuid[], $2::text[]) ON CONFLICT (event_id) DO NOTHING \
     RETURNING event_id";
pub(crate) const SNAPSHOT_TOMBSTONES: &str = "SELECT key, version::bigint, \
     (extract(epoch FROM occurred_at) * 1000000)::bigint FROM walcast_tombstones \
     WHERE table_name = $1 AND key = ANY($2::text[])";
pub(crate) const STORE_TOMBSTONES: &str = "INSERT INTO walcast_tombstones AS w \
     (table_name, key, version, occurred_at) \
     SELECT $1::text, v.k, v.ver, v.occ::timestamptz \
     FROM unnest($2::text[], $3::bigint[], $4::text[]) AS v(k, ver, occ) \
     ON CONFLICT (table_name, key) DO UPDATE \
     SET version = EXCLUDED.version, occurred_at = EXCLUDED.occurred_at, deleted_at = now() \
     WHERE (w.version, COALESCE(w.occurred_at, '-infinity')) \
         < (EXCLUDED.version, COALESCE(EXCLUDED.occurred_at, '-infinity'))";

/// The held changes and dead letters of some keys: `key, event_id, event_type, dead_letter,
/// version, occurred_at µs, change JSON`, locked, oldest first.
pub(crate) const SNAPSHOT_HELD: &str = "SELECT key, event_id, event_type, dead_letter, version, \
     occurred_us, change::text FROM walcast_held \
     WHERE table_name = $1 AND key = ANY($2::text[]) \
     ORDER BY key, version, occurred_us, held_at FOR UPDATE";
pub(crate) const STORE_HELD: &str = "INSERT INTO walcast_held \
     (table_name, key, event_id, event_type, dead_letter, version, occurred_us, change) \
     SELECT $1::text, v.k, v.id, v.ty, false, v.ver, v.occ, v.ch::jsonb \
     FROM unnest($2::text[], $3::uuid[], $4::text[], $5::bigint[], $6::bigint[], $7::text[]) \
         AS v(k, id, ty, ver, occ, ch) \
     ON CONFLICT (table_name, key, event_id) DO NOTHING";
/// A dead letter that holds its key: `table, key, event id, event type, version, occurred_at
/// µs, error`.
pub(crate) const STORE_DEAD_LETTER: &str = "INSERT INTO walcast_held \
     (table_name, key, event_id, event_type, dead_letter, version, occurred_us, error) \
     VALUES ($1, $2, $3, $4, true, $5, $6, $7) \
     ON CONFLICT (table_name, key, event_id) DO NOTHING";
pub(crate) const DELETE_HELD: &str = "DELETE FROM walcast_held AS h \
     USING unnest($2::text[], $3::uuid[]) AS v(k, id) \
     WHERE h.table_name = $1 AND h.key = v.k AND h.event_id = v.id";
pub(crate) const UNMARK_PROCESSED: &str =
    "DELETE FROM processed_events WHERE event_id = ANY($1::uuid[])";
pub(crate) const MARK_PROCESSED: &str = "INSERT INTO processed_events (event_id, event_type) \
     SELECT * FROM unnest($1::uuid[], $2::text[]) ON CONFLICT (event_id) DO NOTHING";
/// Held changes, keys held by dead letters, and the age of the oldest held change in seconds.
pub(crate) const HELD_STATS: &str = "SELECT count(*) FILTER (WHERE NOT dead_letter), \
     count(DISTINCT (table_name, key)) FILTER (WHERE dead_letter), \
     coalesce(extract(epoch FROM now() - min(held_at) FILTER (WHERE NOT dead_letter)), 0)::float8 \
     FROM walcast_held";
/// The dead letters of one event id (`walcast dlq discard --event-id`), removed:
/// `table_name, key`.
pub(crate) const DISCARD_EVENT: &str = "DELETE FROM walcast_held \
     WHERE dead_letter AND event_id = $1 RETURNING table_name, key";
/// The dead letters of one key (`walcast dlq discard --aggregate`), removed: `table_name, key`.
pub(crate) const DISCARD_KEY: &str = "DELETE FROM walcast_held \
     WHERE dead_letter AND key = $1 RETURNING table_name, key";
/// Held changes still waiting for some keys of a table.
pub(crate) const HELD_OF_KEYS: &str =
    "SELECT count(*) FROM walcast_held WHERE table_name = $1 AND key = ANY($2::text[])";
/// Keys held by dead letters (for the error of a discard that finds nothing): `table, key, id`.
pub(crate) const DEAD_LETTERS: &str = "SELECT table_name, key, event_id FROM walcast_held \
     WHERE dead_letter ORDER BY held_at LIMIT 20";

pub(crate) fn q(ident: &str) -> String {
    format!("\"{ident}\"")
}

/// `(old.version, old.occurred_at) < (new.version, new.occurred_at)`.
fn guard(t: &Table, old: &str, new_version: &str, new_occurred_at: &str) -> String {
    format!(
        "({old}.{v}, COALESCE({old}.{o}, '-infinity'::timestamptz)) \
         < ({new_version}, COALESCE({new_occurred_at}, '-infinity'::timestamptz))",
        v = q(&t.version_column),
        o = q(&t.occurred_at_column),
    )
}

/// `unnest($1::text[], …) AS v(k, c…, ver, occ)` for the key, `cols`, version and time.
fn unnest(n_cols: usize) -> String {
    let mut args: Vec<String> = (1..=n_cols + 1).map(|i| format!("${i}::text[]")).collect();
    args.push(format!("${}::bigint[]", n_cols + 2));
    args.push(format!("${}::text[]", n_cols + 3));
    let mut names = vec!["k".to_owned()];
    names.extend((0..n_cols).map(|i| format!("c{i}")));
    names.extend(["ver".to_owned(), "occ".to_owned()]);
    format!("unnest({}) AS v({})", args.join(", "), names.join(", "))
}

/// Reads (and locks) the guard of the rows a batch touches: `key, version, occurred_at µs`.
pub(crate) fn snapshot_rows(t: &Table) -> String {
    format!(
        "SELECT t.{k}::text, t.{v}::bigint, (extract(epoch FROM t.{o}) * 1000000)::bigint \
         FROM {tbl} AS t WHERE t.{k} = ANY($1::text[]::{ty}[]) FOR UPDATE",
        k = q(&t.key.name),
        v = q(&t.version_column),
        o = q(&t.occurred_at_column),
        tbl = q(&t.name),
        ty = t.key.ty.sql(),
    )
}

/// Inserts or replaces whole rows. Parameters: keys, one array per data column, versions,
/// occurred_at texts.
pub(crate) fn upsert(t: &Table) -> String {
    let key = format!("v.k::{}", t.key.ty.sql());
    let data: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("v.c{i}::{}", c.ty.sql()))
        .collect();
    let value_of = |c: ColRef| match c {
        ColRef::Key => format!("({key})"),
        ColRef::Data(i) => format!("({})", data[i]),
        ColRef::Version => "v.ver".to_owned(),
        ColRef::OccurredAt => "(v.occ::timestamptz)".to_owned(),
    };
    let mut names = vec![q(&t.key.name)];
    let mut exprs = vec![key.clone()];
    for (c, e) in t.columns.iter().zip(&data) {
        names.push(q(&c.name));
        exprs.push(e.clone());
    }
    names.push(q(&t.version_column));
    exprs.push("v.ver".into());
    names.push(q(&t.occurred_at_column));
    exprs.push("v.occ::timestamptz".into());
    for (name, tpl) in &t.computed {
        names.push(q(name));
        exprs.push(tpl.render(value_of));
    }
    let sets: Vec<String> = names[1..]
        .iter()
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    format!(
        "INSERT INTO {tbl} AS t ({names}) SELECT {exprs} FROM {unnest} \
         ON CONFLICT ({k}) DO UPDATE SET {sets} WHERE {guard}",
        tbl = q(&t.name),
        names = names.join(", "),
        exprs = exprs.join(", "),
        unnest = unnest(t.columns.len()),
        k = q(&t.key.name),
        sets = sets.join(", "),
        guard = guard(
            t,
            "t",
            &format!("EXCLUDED.{}", q(&t.version_column)),
            &format!("EXCLUDED.{}", q(&t.occurred_at_column))
        ),
    )
}

/// Sets `cols` (sorted data-column indexes) of existing rows. Parameters: keys, one array per
/// column in `cols`, versions, occurred_at texts.
pub(crate) fn update(t: &Table, cols: &[usize]) -> String {
    let new = |i: usize| -> Option<String> {
        cols.iter()
            .position(|c| *c == i)
            .map(|j| format!("v.c{j}::{}", t.columns[i].ty.sql()))
    };
    let value_of = |c: ColRef| match c {
        ColRef::Key => format!("t.{}", q(&t.key.name)),
        ColRef::Data(i) => new(i)
            .map(|e| format!("({e})"))
            .unwrap_or_else(|| format!("t.{}", q(&t.columns[i].name))),
        ColRef::Version => "v.ver".to_owned(),
        ColRef::OccurredAt => "(v.occ::timestamptz)".to_owned(),
    };
    let mut sets: Vec<String> = cols
        .iter()
        .map(|&i| format!("{} = {}", q(&t.columns[i].name), new(i).unwrap_or_default()))
        .collect();
    sets.push(format!("{} = v.ver", q(&t.version_column)));
    sets.push(format!("{} = v.occ::timestamptz", q(&t.occurred_at_column)));
    for (name, tpl) in &t.computed {
        sets.push(format!("{} = {}", q(name), tpl.render(value_of)));
    }
    format!(
        "UPDATE {tbl} AS t SET {sets} FROM {unnest} WHERE t.{k} = v.k::{ty} AND {guard}",
        tbl = q(&t.name),
        sets = sets.join(", "),
        unnest = unnest(cols.len()),
        k = q(&t.key.name),
        ty = t.key.ty.sql(),
        guard = guard(t, "t", "v.ver", "v.occ::timestamptz"),
    )
}

/// Deletes rows older than the delete. Parameters: keys, versions, occurred_at texts.
pub(crate) fn delete(t: &Table) -> String {
    format!(
        "DELETE FROM {tbl} AS t USING {unnest} WHERE t.{k} = v.k::{ty} AND {guard}",
        tbl = q(&t.name),
        unnest = unnest(0),
        k = q(&t.key.name),
        ty = t.key.ty.sql(),
        guard = guard(t, "t", "v.ver", "v.occ::timestamptz"),
    )
}

/// Empties the read tables and the bookkeeping of a target, held changes and dead-letter
/// holds included (rebuild).
pub(crate) fn truncate_all(tables: &[Table]) -> String {
    let mut names: Vec<String> = tables.iter().map(|t| q(&t.name)).collect();
    names.extend([
        "processed_events".into(),
        "walcast_tombstones".into(),
        "walcast_held".into(),
    ]);
    format!("TRUNCATE {}", names.join(", "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::projection::tests::shipped;

    #[test]
    fn statements_for_the_shipped_table_read_as_intended() {
        let p = shipped();
        let t = &p.tables[0];
        let up = upsert(t);
        assert!(
            up.starts_with("INSERT INTO \"catalog_product_read\" AS t (\"product_id\", \"sku\"")
        );
        assert!(
            up.contains("lower(concat_ws(' ', (v.c0::text), (v.c1::text), (v.c2::text)))"),
            "{up}"
        );
        assert!(up.contains("\"updated_at\" = EXCLUDED.\"updated_at\""));
        assert!(up.contains("unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[])"), "{up}");
        // ProductUpdated sets name and description; sku comes from the row.
        let upd = update(t, &[1, 2]);
        assert!(
            upd.contains("lower(concat_ws(' ', t.\"sku\", (v.c0::text), (v.c1::text)))"),
            "{upd}"
        );
        assert!(
            upd.contains("WHERE t.\"product_id\" = v.k::uuid AND (t.\"version\""),
            "{upd}"
        );
        assert!(delete(t).contains("unnest($1::text[], $2::bigint[], $3::text[])"));
    }
}
