//! The writes of a batch inside its transaction: skip processed events, read the guards, plan,
//! and run one multi-row statement per table and write shape.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Statement, Transaction};

use crate::error::{Error, Result};
use crate::plan::{self, Snapshot};
use crate::projection::{Change, Position, Projections, Rejection};
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

async fn stmt(
    cache: &mut HashMap<String, Statement>,
    tx: &Transaction<'_>,
    target: &str,
    text: &str,
) -> Result<Statement> {
    if let Some(s) = cache.get(text) {
        return Ok(s.clone());
    }
    let s = tx.prepare(text).await.map_err(Error::pg(
        target,
        format!("preparing {}", first_words(text)),
    ))?;
    cache.insert(text.to_owned(), s.clone());
    Ok(s)
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

        let mut snap = Snapshot::default();
        let s = stmt(cache, tx, target, &sql::snapshot_rows(table)).await?;
        for r in tx
            .query(&s, &[&keys])
            .await
            .map_err(Error::pg(target, format!("reading {}", table.name)))?
        {
            snap.rows.insert(
                r.get(0),
                Position {
                    version: r.get(1),
                    occurred_at: r.get(2),
                },
            );
        }
        let s = stmt(cache, tx, target, sql::SNAPSHOT_TOMBSTONES).await?;
        for r in tx
            .query(&s, &[&table.name, &keys])
            .await
            .map_err(Error::pg(target, "reading walcast_tombstones"))?
        {
            snap.tombstones.insert(
                r.get(0),
                Position {
                    version: r.get(1),
                    occurred_at: r.get(2),
                },
            );
        }

        let plan = plan::plan(changes.iter().copied(), &snap);
        stats.stale += plan.stale;
        stats.missing_row += plan.missing_row;

        if !plan.upserts.is_empty() {
            let rows = &plan.upserts;
            let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
            let cols: Vec<Vec<Option<&str>>> = (0..table.columns.len())
                .map(|i| rows.iter().map(|r| r.values[i].as_deref()).collect())
                .collect();
            let versions: Vec<i64> = rows.iter().map(|r| r.pos.version).collect();
            let times: Vec<Option<String>> = rows.iter().map(|r| occurred(&r.pos)).collect();
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&keys];
            params.extend(cols.iter().map(|c| c as &(dyn ToSql + Sync)));
            params.push(&versions);
            params.push(&times);
            let s = stmt(cache, tx, target, &sql::upsert(table)).await?;
            tx.execute(&s, &params)
                .await
                .map_err(Error::pg(target, format!("upserting into {}", table.name)))?;
        }
        for (set, rows) in &plan.updates {
            let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
            let cols: Vec<Vec<Option<&str>>> = (0..set.len())
                .map(|j| rows.iter().map(|r| r.values[j].as_deref()).collect())
                .collect();
            let versions: Vec<i64> = rows.iter().map(|r| r.pos.version).collect();
            let times: Vec<Option<String>> = rows.iter().map(|r| occurred(&r.pos)).collect();
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&keys];
            params.extend(cols.iter().map(|c| c as &(dyn ToSql + Sync)));
            params.push(&versions);
            params.push(&times);
            let s = stmt(cache, tx, target, &sql::update(table, set)).await?;
            tx.execute(&s, &params)
                .await
                .map_err(Error::pg(target, format!("updating {}", table.name)))?;
        }
        if !plan.deletes.is_empty() {
            let keys: Vec<&str> = plan.deletes.iter().map(|(k, _)| k.as_str()).collect();
            let versions: Vec<i64> = plan.deletes.iter().map(|(_, p)| p.version).collect();
            let times: Vec<Option<String>> =
                plan.deletes.iter().map(|(_, p)| occurred(p)).collect();
            let s = stmt(cache, tx, target, &sql::delete(table)).await?;
            tx.execute(&s, &[&keys, &versions, &times])
                .await
                .map_err(Error::pg(target, format!("deleting from {}", table.name)))?;
            let s = stmt(cache, tx, target, sql::STORE_TOMBSTONES).await?;
            tx.execute(&s, &[&table.name, &keys, &versions, &times])
                .await
                .map_err(Error::pg(target, "writing walcast_tombstones"))?;
        }
    }
    Ok(stats)
}
