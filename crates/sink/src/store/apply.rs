//! The writes of a batch inside its transaction: skip processed events, read the guards, plan,
//! and run one multi-row statement per table and write shape.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Statement, Transaction};

use crate::error::{Error, Result};
use crate::plan::{self, Snapshot, TablePlan};
use crate::projection::{Change, Position, Projections, Rejection, Table};
use crate::{sql, timestamp};

/// Counts of one batch.
#[derive(Debug, Default)]
pub(crate) struct ApplyStats {
    /// Events recorded in `processed_events` by this batch (applied or found stale).
    pub(crate) applied: u64,
    /// Events already processed before (redeliveries and replays).
    pub(crate) duplicates: u64,
    /// Events older than the row or tombstone they target.
    pub(crate) stale: u64,
    /// Updates of rows that do not exist.
    pub(crate) missing_row: u64,
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
        self.db_rejected.extend(o.db_rejected);
    }
}

/// The prepared statement for `text`, from the connection's cache.
pub(crate) async fn stmt<C: GenericClient + Sync>(
    cache: &mut HashMap<String, Statement>,
    client: &C,
    target: &str,
    text: &str,
) -> Result<Statement> {
    if let Some(s) = cache.get(text) {
        return Ok(s.clone());
    }
    let s = client.prepare(text).await.map_err(Error::pg(
        target,
        format!("preparing {}", first_words(text)),
    ))?;
    cache.insert(text.to_owned(), s.clone());
    Ok(s)
}

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
    rows: impl Iterator<Item = (&'r str, &'r Position, &'r [Option<String>])> + Clone,
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
                .map(|r| r.2[i].clone())
                .collect::<Vec<Option<String>>>(),
        );
    }
    e = e.arg(rows.clone().map(|r| r.1.version).collect::<Vec<i64>>());
    e.arg(rows.map(|r| occurred(r.1)).collect::<Vec<Option<String>>>())
}

/// The statements that carry out `plan` on `table`: one per write shape.
pub(crate) fn writes(table: &Table, plan: &TablePlan) -> Vec<Exec> {
    let mut out = Vec::new();
    if !plan.upserts.is_empty() {
        let rows = plan
            .upserts
            .iter()
            .map(|r| (r.key.as_str(), &r.pos, r.values.as_slice()));
        let e = Exec::new(sql::upsert(table), format!("upserting into {}", table.name));
        out.push(row_args(e, rows, table.columns.len()));
    }
    for (set, rows) in &plan.updates {
        let rows = rows
            .iter()
            .map(|r| (r.key.as_str(), &r.pos, r.values.as_slice()));
        let e = Exec::new(sql::update(table, set), format!("updating {}", table.name));
        out.push(row_args(e, rows, set.len()));
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
    out
}

/// Prepares (once per connection) and runs `e`.
pub(crate) async fn run<C: GenericClient + Sync>(
    client: &C,
    cache: &mut HashMap<String, Statement>,
    target: &str,
    e: &Exec,
) -> Result<u64> {
    let s = stmt(cache, client, target, &e.sql).await?;
    client
        .execute_raw(&s, e.args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)))
        .await
        .map_err(Error::pg(target, e.what.clone()))
}

/// Snapshot of what `table` holds for `keys`, from the rows of [`sql::snapshot_rows`] and
/// [`sql::SNAPSHOT_TOMBSTONES`].
pub(crate) fn snapshot(rows: &[Row], tombstones: &[Row]) -> Snapshot {
    let position = |r: &Row| {
        (
            r.get(0),
            Position {
                version: r.get(1),
                occurred_at: r.get(2),
            },
        )
    };
    Snapshot {
        rows: rows.iter().map(position).collect(),
        tombstones: tombstones.iter().map(position).collect(),
    }
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

fn occurred(p: &Position) -> Option<String> {
    p.occurred_at.map(timestamp::format_micros)
}

/// Applies `changes` (offset order) in `tx`.
pub(crate) async fn apply_changes(
    tx: &Transaction<'_>,
    cache: &mut HashMap<String, Statement>,
    projections: &Projections,
    target: &str,
    changes: &[&Change],
) -> Result<ApplyStats> {
    let mut stats = ApplyStats::default();
    // A redelivered id inside one batch counts once.
    let mut seen = HashSet::with_capacity(changes.len());
    let unique: Vec<&Change> = changes
        .iter()
        .copied()
        .filter(|c| seen.insert(c.event_id))
        .collect();
    stats.duplicates += (changes.len() - unique.len()) as u64;
    if unique.is_empty() {
        return Ok(stats);
    }

    let ids: Vec<uuid::Uuid> = unique.iter().map(|c| c.event_id).collect();
    let types: Vec<&str> = unique.iter().map(|c| c.event_type.as_str()).collect();
    let s = stmt(cache, tx, target, sql::INSERT_PROCESSED).await?;
    let fresh: HashSet<uuid::Uuid> = tx
        .query(&s, &[&ids, &types])
        .await
        .map_err(Error::pg(target, "recording processed_events"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    stats.duplicates += (unique.len() - fresh.len()) as u64;
    stats.applied += fresh.len() as u64;

    let mut by_table: BTreeMap<usize, Vec<&Change>> = BTreeMap::new();
    for c in unique.into_iter().filter(|c| fresh.contains(&c.event_id)) {
        by_table.entry(c.table).or_default().push(c);
    }
    for (ti, changes) in by_table {
        let table = &projections.tables[ti];
        let mut keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let s = stmt(cache, tx, target, &sql::snapshot_rows(table)).await?;
        let rows = tx
            .query(&s, &[&keys])
            .await
            .map_err(Error::pg(target, format!("reading {}", table.name)))?;
        let s = stmt(cache, tx, target, sql::SNAPSHOT_TOMBSTONES).await?;
        let tombstones = tx
            .query(&s, &[&table.name, &keys])
            .await
            .map_err(Error::pg(target, "reading walcast_tombstones"))?;

        let plan = plan::plan(changes.iter().copied(), &snapshot(&rows, &tombstones));
        stats.stale += plan.stale;
        stats.missing_row += plan.missing_row;
        for e in writes(table, &plan) {
            run(tx, cache, target, &e).await?;
        }
    }
    Ok(stats)
}
