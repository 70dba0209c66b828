//! One target database: schema, stored offsets, and the batch transaction.
//!
//! # Progress tracking
//!
//! A target's Kafka progress is the `walcast_offsets` rows in its own database, written in the
//! **same transaction** as the rows, `processed_events` ids and tombstones of the batch. Kafka
//! offsets are never committed to the broker. So:
//!
//! * crash before `COMMIT`: nothing of the batch is visible, the stored offsets still point at
//!   its first event, and the batch is consumed again;
//! * crash during `COMMIT` (outcome unknown to us): on restart the offsets are read back from
//!   the database, which tells which of the two happened;
//! * an event delivered twice (the source re-sends its unacknowledged tail, or it was replayed
//!   at a new offset) finds its id in `processed_events` and changes nothing.
//!
//! Poison events are produced to the DLQ and acknowledged by the broker *before* the `COMMIT`
//! that moves the offset past them, so none is lost; a crash in between sends it again
//! (at-least-once into the DLQ).
//!
//! Each transaction also (1) takes the target's rebuild lock shared — a running
//! `walcast sink rebuild` holds it exclusively, and the batch waits — and (2) locks the stored
//! offsets and checks they are what this task last wrote; if not, someone else (a rebuild,
//! a second sink on the same target) moved them, and the task re-reads them and seeks.

mod apply;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio_postgres::{Client, Statement};
use tracing::{debug, warn};
use walcast_replication::ConnectConfig;
use walcast_replication::management::connect_sql;

use crate::dlq::{DeadLetter, Dlq};
use crate::error::{Error, Result};
use crate::projection::{Change, Projections, RejectKind, Rejection};
use crate::sql;

pub(crate) use apply::ApplyStats;

/// What a batch transaction did.
#[derive(Debug)]
pub(crate) enum Outcome {
    Committed(ApplyStats),
    /// A rebuild of this target runs; nothing was written.
    RebuildRunning,
    /// The stored offsets differ from what this task last wrote; nothing was written.
    Diverged,
}

/// A decoded poll batch.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Decodable events in offset order, with the index of their record.
    pub(crate) changes: Vec<(usize, Change)>,
    /// Poison records (index, why).
    pub(crate) rejected: Vec<(usize, Rejection)>,
    /// Per partition: the offset after the last record of the batch.
    pub(crate) next_offsets: BTreeMap<i32, i64>,
    /// The highest `walcast.commit_lsn` of the batch's records.
    pub(crate) max_commit_lsn: Option<u64>,
}

/// A connection to one target.
pub(crate) struct Store {
    target: String,
    group: String,
    topic: String,
    client: Client,
    statements: HashMap<String, Statement>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) async fn connect(
        target: &str,
        dsn: &str,
        group: &str,
        topic: &str,
    ) -> Result<Store> {
        // The source's DSN dialect and transport: TLS by sslmode (verify-full with
        // sslrootcert), SCRAM, TCP keepalive, and a password that never reaches a message.
        let mut config = ConnectConfig::parse(dsn).map_err(|e| {
            Error::Config(format!(
                "target {target}: the dsn does not parse ({e}); fix dsn under [targets.{target}]"
            ))
        })?;
        if config.application_name().is_none() {
            config = config.with_application_name("walcast-sink");
        }
        if config.connect_timeout().is_none() {
            config = config.with_connect_timeout(Duration::from_secs(5));
        }
        let client = connect_sql(&config)
            .await
            .map_err(|source| Error::Connect {
                target: target.to_owned(),
                source: Box::new(source),
            })?;
        debug!(target = %target, dsn = %config, "target connected");
        Ok(Store {
            target: target.to_owned(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            client,
            statements: HashMap::new(),
        })
    }

    /// Runs the schema files (idempotent DDL), one sink at a time per database.
    pub(crate) async fn apply_schema(&self, files: &[(String, String)]) -> Result<()> {
        let c = &self.client;
        c.execute(sql::SCHEMA_LOCK_SQL, &[])
            .await
            .map_err(Error::pg(&self.target, "locking the schema"))?;
        let mut result = Ok(());
        for (path, text) in files {
            if let Err(e) = c.batch_execute(text).await {
                result = Err(Error::pg(&self.target, format!("applying {path}"))(e));
                break;
            }
        }
        let _ = c.execute(sql::SCHEMA_UNLOCK_SQL, &[]).await;
        result
    }

    /// The stored next offset of every partition of the topic.
    pub(crate) async fn load_offsets(&self) -> Result<BTreeMap<i32, i64>> {
        let rows = self
            .client
            .query(sql::LOAD_OFFSETS, &[&self.group, &self.topic])
            .await
            .map_err(Error::pg(&self.target, "reading walcast_offsets"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Applies `batch` in one transaction, as described in the module docs. `expected` is what
    /// this task believes `walcast_offsets` holds.
    pub(crate) async fn apply(
        &mut self,
        projections: &Projections,
        batch: &Batch,
        records: &[rdkafka::message::OwnedMessage],
        expected: &BTreeMap<i32, i64>,
        dlq: &Dlq,
    ) -> Result<Outcome> {
        let target = self.target.clone();
        let pg = |what: &str| Error::pg(&target, what.to_owned());
        let cache = &mut self.statements;
        let mut tx = self.client.transaction().await.map_err(pg("BEGIN"))?;

        let free: bool = tx
            .query_one(sql::TRY_SHARED_REBUILD_LOCK, &[&self.group])
            .await
            .map_err(pg("taking the rebuild lock"))?
            .get(0);
        if !free {
            return Ok(Outcome::RebuildRunning);
        }
        let stored: BTreeMap<i32, i64> = tx
            .query(sql::LOCK_OFFSETS, &[&self.group, &self.topic])
            .await
            .map_err(pg("locking walcast_offsets"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if &stored != expected {
            warn!(target = %self.target, ?stored, ?expected, "stored offsets moved under this sink; re-reading them");
            return Ok(Outcome::Diverged);
        }

        let all: Vec<&Change> = batch.changes.iter().map(|(_, c)| c).collect();
        let mut sp = tx.savepoint("batch").await.map_err(pg("SAVEPOINT"))?;
        let mut stats = match apply::apply_changes(&sp, cache, projections, &target, &all).await {
            Ok(stats) => {
                sp.commit().await.map_err(pg("RELEASE SAVEPOINT"))?;
                stats
            }
            Err(e) if e.is_data_error() => {
                sp.rollback().await.map_err(pg("ROLLBACK TO SAVEPOINT"))?;
                warn!(target = %self.target, error = %e, "the batch has values the database refuses; applying it event by event");
                let mut stats = ApplyStats::default();
                for (idx, change) in &batch.changes {
                    sp = tx.savepoint("event").await.map_err(pg("SAVEPOINT"))?;
                    match apply::apply_changes(&sp, cache, projections, &target, &[change]).await {
                        Ok(s) => {
                            sp.commit().await.map_err(pg("RELEASE SAVEPOINT"))?;
                            stats.add(s);
                        }
                        Err(e) if e.is_data_error() => {
                            sp.rollback().await.map_err(pg("ROLLBACK TO SAVEPOINT"))?;
                            let detail = match &e {
                                Error::Postgres { source, .. } => source
                                    .as_db_error()
                                    .map(|d| {
                                        format!("{} (SQLSTATE {})", d.message(), d.code().code())
                                    })
                                    .unwrap_or_else(|| source.to_string()),
                                other => other.to_string(),
                            };
                            stats.db_rejected.push((
                                *idx,
                                Rejection {
                                    kind: RejectKind::Database,
                                    detail,
                                },
                            ));
                        }
                        Err(e) => return Err(e),
                    }
                }
                stats
            }
            Err(e) => return Err(e),
        };

        let dead: Vec<DeadLetter<'_>> = batch
            .rejected
            .iter()
            .chain(stats.db_rejected.iter())
            .map(|(i, why)| DeadLetter {
                record: &records[*i],
                why,
            })
            .collect();
        dlq.send_all(&dead).await?;
        stats.dead_lettered = dead.len() as u64;

        let (parts, offs): (Vec<i32>, Vec<i64>) =
            batch.next_offsets.iter().map(|(p, o)| (*p, *o)).unzip();
        if !parts.is_empty() {
            tx.execute(
                sql::STORE_OFFSETS,
                &[&self.group, &self.topic, &parts, &offs],
            )
            .await
            .map_err(pg("writing walcast_offsets"))?;
        }
        if let Some(lsn) = batch.max_commit_lsn {
            let text = format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF);
            tx.execute(sql::STORE_APPLIED_LSN, &[&self.group, &text])
                .await
                .map_err(pg("writing walcast_applied_lsn"))?;
        }
        tx.commit().await.map_err(pg("COMMIT"))?;
        Ok(Outcome::Committed(stats))
    }
}
