//! Releasing a key held behind a dead letter without replaying it (`walcast dlq discard`).

use std::collections::BTreeMap;

use tokio_postgres::Row;

use super::Store;
use crate::batch::Events;
use crate::discard::{Discard, DiscardReport};
use crate::error::{Error, Result};
use crate::projection::Projections;
use crate::sql;

impl Store {
    /// Removes the dead-letter holds `what` names and settles their keys, in one transaction
    /// that excludes batches (the offsets `FOR UPDATE`) and rebuilds (their lock, shared).
    pub(crate) async fn discard(
        &mut self,
        projections: &Projections,
        what: &Discard,
    ) -> Result<DiscardReport> {
        let head = self.prepare_head().await?;
        if self.open(&head, Vec::new()).await?.is_none() {
            return Err(Error::Config(format!(
                "a rebuild of {} is running (it empties the holds too); run the discard \
                 after it finished, if the key is still held",
                self.target
            )));
        }
        match self.release(projections, what).await {
            Ok(report) => {
                (self.client.batch_execute("COMMIT").await)
                    .map_err(Error::pg(&self.target, "COMMIT"))?;
                Ok(report)
            }
            Err(e) => {
                let _ = self.rollback().await;
                Err(e)
            }
        }
    }

    /// [`Store::discard`] inside its transaction.
    async fn release(
        &mut self,
        projections: &Projections,
        what: &Discard,
    ) -> Result<DiscardReport> {
        let target = self.target.clone();
        let pg = |what: &str| Error::pg(&target, what.to_owned());
        let removed = match what {
            Discard::Event(id) => self.client.query(sql::DISCARD_EVENT, &[id]).await,
            Discard::Key(key) => self.client.query(sql::DISCARD_KEY, &[key]).await,
        }
        .map_err(pg("removing the hold from walcast_held"))?;
        if removed.is_empty() {
            let held = (self.client.query(sql::DEAD_LETTERS, &[]).await)
                .map_err(pg("reading walcast_held"))?;
            return Err(Error::Config(nothing_held(&target, what, &held)));
        }

        let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &removed {
            by_table.entry(r.get(0)).or_default().push(r.get(1));
        }
        let mut report = DiscardReport::default();
        for (name, mut keys) in by_table {
            keys.sort_unstable();
            keys.dedup();
            let Some(ti) = projections.tables.iter().position(|t| t.name == name) else {
                return Err(Error::Config(format!(
                    "{target} holds keys of table {name}, which the connector file no longer \
                     maps; restore its [[tables]] entry to release them"
                )));
            };
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let stats = self
                .step(projections, Events::settle(ti, refs.clone()), false)
                .await?;
            report.released += stats.released;
            let waiting: i64 = (self
                .client
                .query_one(sql::HELD_OF_KEYS, &[&name, &refs])
                .await)
                .map_err(pg("reading walcast_held"))?
                .get(0);
            report.still_held += waiting;
            report
                .keys
                .extend(keys.into_iter().map(|k| (name.clone(), k)));
        }
        Ok(report)
    }
}

/// Why a discard found nothing, with what the target does hold.
fn nothing_held(target: &str, what: &Discard, held: &[Row]) -> String {
    let asked = match what {
        Discard::Event(id) => format!("no dead letter with event id {id}"),
        Discard::Key(key) => format!("no dead letter of key {key}"),
    };
    if held.is_empty() {
        return format!("{target} holds {asked}; it holds no key at all");
    }
    let list: Vec<String> = held
        .iter()
        .map(|r| {
            let (t, k, id): (String, String, uuid::Uuid) = (r.get(0), r.get(1), r.get(2));
            format!("{t} {k} (event {id})")
        })
        .collect();
    format!("{target} holds {asked}; it holds: {}", list.join(", "))
}
