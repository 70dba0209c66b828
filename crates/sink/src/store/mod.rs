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
//! * an event that cannot apply yet (an update whose row is missing, or any event of a key held
//!   behind a dead letter) is written to `walcast_held` and taken out of `processed_events` in
//!   the batch's transaction; it is applied, and recorded, in the transaction where its row
//!   lands or its key is released ([`crate::plan`] module docs). A redelivery of it is known by
//!   its id in `walcast_held`.
//!
//! Poison events are produced to the DLQ and acknowledged by the broker *before* the `COMMIT`
//! that moves the offset past them, so none is lost; a crash in between sends it again
//! (at-least-once into the DLQ). An event the target's database refuses also holds its key (a
//! `walcast_held` row written in the same transaction as the offsets that pass it).
//!
//! Each transaction also (1) takes the target's rebuild lock shared — a running
//! `walcast sink rebuild` holds it exclusively, and the batch waits — and (2) locks the stored
//! offsets and checks they are what this task last wrote; if not, someone else (a rebuild,
//! a second sink on the same target) moved them, and the task re-reads them and seeks.

mod apply;
mod release;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row, Statement};
use tracing::{debug, warn};
use walcast_postgres::{Dsn, connect_sql};

use crate::dlq::{DeadLetter, Dlq};
use crate::error::{Error, Result};
use crate::projection::{Change, Projections, RejectKind, Rejection};
use crate::{plan, sql};

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
    /// The applied-up-to LSN to record with the batch (the `applied` module).
    pub(crate) applied_lsn: Option<u64>,
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
        dsn: &Dsn,
        group: &str,
        topic: &str,
    ) -> Result<Store> {
        // The source's DSN dialect and transport: TLS by sslmode (verify-full with
        // sslrootcert), SCRAM, TCP keepalive, and a password that never reaches a message.
        let mut config = dsn.clone();
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

    /// Held changes, keys held by dead letters, and the age of the oldest held change (s).
    pub(crate) async fn held_stats(&self) -> Result<(i64, i64, f64)> {
        let r = self
            .client
            .query_one(sql::HELD_STATS, &[])
            .await
            .map_err(Error::pg(&self.target, "reading walcast_held"))?;
        Ok((r.get(0), r.get(1), r.get(2)))
    }

    /// Applies `batch` in one transaction, as described in the module docs. `expected` is what
    /// this task believes `walcast_offsets` holds.
    ///
    /// The transaction normally takes two round trips ([`Store::pipelined`]); a batch with a
    /// value the database refuses is rolled back and applied again event by event
    /// ([`Store::careful`]), so that only the refused events go to the DLQ.
    ///
    /// The batch's decoded changes are given up on the way (see [`Store::pipelined`]); the
    /// careful path decodes the records again.
    pub(crate) async fn apply(
        &mut self,
        projections: &Projections,
        batch: &mut Batch,
        records: &[rdkafka::message::OwnedMessage],
        expected: &BTreeMap<i32, i64>,
        dlq: &Dlq,
    ) -> Result<Outcome> {
        let work = Work {
            projections,
            records,
            expected,
            dlq,
        };
        let mut dlq_sent = false;
        match self.pipelined(&work, batch, &mut dlq_sent).await {
            Err(e) if e.is_data_error() => {
                self.rollback().await?;
                warn!(target = %self.target, error = %e, "the batch has values the database refuses; applying it event by event");
                if batch.changes.is_empty() {
                    batch.changes = crate::target::decode(projections, records, expected).changes;
                }
                self.careful(&work, batch, dlq_sent).await
            }
            Err(e) => {
                // The connection is dropped by the caller; a rollback is only tidiness.
                let _ = self.rollback().await;
                Err(e)
            }
            ok => ok,
        }
    }

    async fn rollback(&self) -> Result<()> {
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(Error::pg(&self.target, "ROLLBACK"))
    }

    /// The batch in two round trips. The first sends `BEGIN`, the rebuild lock (a statement that
    /// fails when a rebuild holds it, so nothing behind it runs), the offsets `FOR UPDATE`, the
    /// `processed_events` insert and, per table, the rows and tombstones of every key of the
    /// batch. Then, if the lock was free and the offsets are as expected, the
    /// batch is planned here, its poison records are sent to the DLQ (acknowledged before the
    /// commit), and the second round trip sends every write, the offsets, the applied LSN and
    /// `COMMIT`. Statements go out in order on the one connection, so a failing statement
    /// aborts the transaction and the `COMMIT` behind it rolls back.
    ///
    /// Memory: a batch's column values (up to `max_bytes`) are held once, shared by the
    /// changes, the plan and the statement arguments; before the second round trip the
    /// changes and the plan let go of them, so each statement's values are freed as the
    /// client encodes it, and the values and their encoding are not both whole in memory.
    async fn pipelined(
        &mut self,
        work: &Work<'_>,
        batch: &mut Batch,
        dlq_sent: &mut bool,
    ) -> Result<Outcome> {
        let projections = work.projections;
        let target = self.target.clone();
        let pg = |what: &str| Error::pg(&target, what.to_owned());
        let client = &self.client;
        let cache = &mut self.statements;

        // A redelivered id inside one batch counts once.
        let mut seen = HashSet::with_capacity(batch.changes.len());
        let unique: Vec<&Change> = batch
            .changes
            .iter()
            .map(|(_, c)| c)
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
        let ids: Vec<uuid::Uuid> = unique.iter().map(|c| c.event_id).collect();
        let types: Vec<&str> = unique.iter().map(|c| c.event_type.as_str()).collect();

        let gate = apply::stmt(cache, client, &target, sql::REBUILD_GATE).await?;
        let offsets = apply::stmt(cache, client, &target, sql::LOCK_OFFSETS).await?;
        let processed = apply::stmt(cache, client, &target, sql::INSERT_PROCESSED).await?;
        let tombstones = apply::stmt(cache, client, &target, sql::SNAPSHOT_TOMBSTONES).await?;
        let held = apply::stmt(cache, client, &target, sql::SNAPSHOT_HELD).await?;
        let mut snapshots = Vec::with_capacity(keys.len());
        for ti in keys.keys() {
            let table = &projections.tables[*ti];
            let rows = apply::stmt(cache, client, &target, &sql::snapshot_rows(table)).await?;
            snapshots.push((table, rows));
        }

        let rebuilding = AtomicBool::new(false);
        let mut first: Vec<Flight<'_, Vec<Row>>> = vec![
            Box::pin(async {
                client.batch_execute("BEGIN").await.map_err(pg("BEGIN"))?;
                Ok(Vec::new())
            }),
            Box::pin(async {
                match client.query(&gate, &[&self.group]).await {
                    Err(e) if e.code() == Some(&SqlState::DIVISION_BY_ZERO) => {
                        rebuilding.store(true, Ordering::Relaxed);
                        Err(pg("a rebuild holds the lock")(e))
                    }
                    other => other.map_err(pg("taking the rebuild lock")),
                }
            }),
            Box::pin(async {
                (client.query(&offsets, &[&self.group, &self.topic]).await)
                    .map_err(pg("locking walcast_offsets"))
            }),
            Box::pin(async {
                (client.query(&processed, &[&ids, &types]).await)
                    .map_err(pg("recording processed_events"))
            }),
        ];
        for ((table, rows), k) in snapshots.iter().zip(keys.values()) {
            let what = format!("reading {}", table.name);
            first.push(Box::pin(async move {
                client.query(rows, &[k]).await.map_err(pg(&what))
            }));
            first.push(Box::pin(async {
                (client.query(&tombstones, &[&table.name, k]).await)
                    .map_err(pg("reading walcast_tombstones"))
            }));
            first.push(Box::pin(async {
                (client.query(&held, &[&table.name, k]).await).map_err(pg("reading walcast_held"))
            }));
        }
        let answers = match in_order(first).await {
            Err(_) if rebuilding.load(Ordering::Relaxed) => {
                self.rollback().await?;
                return Ok(Outcome::RebuildRunning);
            }
            other => other?,
        };
        // Past BEGIN and the gate.
        let mut answers = answers.into_iter().skip(2);
        let mut next = || answers.next().unwrap_or_default();
        let stored: BTreeMap<i32, i64> = next().iter().map(|r| (r.get(0), r.get(1))).collect();
        if work.moved(&self.target, &stored) {
            self.rollback().await?;
            return Ok(Outcome::Diverged);
        }
        let fresh: HashSet<uuid::Uuid> = next().iter().map(|r| r.get(0)).collect();
        let mut stats = ApplyStats {
            applied: fresh.len() as u64,
            duplicates: (batch.changes.len() - fresh.len()) as u64,
            ..ApplyStats::default()
        };
        let mut by_table: BTreeMap<usize, Vec<&Change>> = BTreeMap::new();
        for c in unique.into_iter().filter(|c| fresh.contains(&c.event_id)) {
            by_table.entry(c.table).or_default().push(c);
        }
        let mut execs = Vec::new();
        for ti in keys.keys() {
            let table = &projections.tables[*ti];
            let snapshot = apply::snapshot(&target, table, &next(), &next(), &next());
            let Some(changes) = by_table.get(ti) else {
                continue;
            };
            let plan = plan::plan(changes.iter().copied(), &snapshot?);
            stats.planned(&plan);
            execs.extend(apply::writes(table, &plan));
        }
        execs.extend(self.bookkeeping(batch));
        drop(by_table);
        drop(keys);
        // The statement arguments now hold the only references to the values.
        batch.changes = Vec::new();

        let dead = work.letters(&batch.rejected);
        work.dlq.send_all(&dead).await?;
        *dlq_sent = true;
        stats.dead_lettered = dead.len() as u64;

        let client = &self.client;
        let cache = &mut self.statements;
        let mut statements = Vec::with_capacity(execs.len());
        for e in &execs {
            statements.push(apply::stmt(cache, client, &target, &e.sql).await?);
        }
        let mut second: Vec<Flight<'_, u64>> = Vec::with_capacity(execs.len() + 1);
        for (e, s) in execs.into_iter().zip(&statements) {
            // The arguments move into the client, which drops them once encoded.
            let apply::Exec { what, args, .. } = e;
            second.push(Box::pin(async move {
                client.execute_raw(s, args).await.map_err(pg(&what))
            }));
        }
        second.push(Box::pin(async {
            client.batch_execute("COMMIT").await.map_err(pg("COMMIT"))?;
            Ok(0)
        }));
        in_order(second).await?;
        Ok(Outcome::Committed(stats))
    }

    /// The offsets and the applied LSN of `batch`, written with its rows.
    fn bookkeeping(&self, batch: &Batch) -> Vec<apply::Exec> {
        let mut out = Vec::new();
        let (parts, offs): (Vec<i32>, Vec<i64>) =
            batch.next_offsets.iter().map(|(p, o)| (*p, *o)).unzip();
        if !parts.is_empty() {
            out.push(
                apply::Exec::new(sql::STORE_OFFSETS.into(), "writing walcast_offsets".into())
                    .arg(self.group.clone())
                    .arg(self.topic.clone())
                    .arg(parts)
                    .arg(offs),
            );
        }
        if let Some(lsn) = batch.applied_lsn {
            let text = format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF);
            out.push(
                apply::Exec::new(
                    sql::STORE_APPLIED_LSN.into(),
                    "writing walcast_applied_lsn".into(),
                )
                .arg(self.group.clone())
                .arg(text),
            );
        }
        out
    }

    /// The batch event by event, each in a savepoint: an event the database refuses is rolled
    /// back alone and sent to the DLQ (with the poison records, unless `dlq_sent` already).
    async fn careful(&mut self, work: &Work<'_>, batch: &Batch, dlq_sent: bool) -> Result<Outcome> {
        let projections = work.projections;
        let target = self.target.clone();
        let pg = |what: &str| Error::pg(&target, what.to_owned());
        let execs = self.bookkeeping(batch);
        let cache = &mut self.statements;
        let mut tx = self.client.transaction().await.map_err(pg("BEGIN"))?;

        let Some(stored) = locked_offsets(&tx, &target, &self.group, &self.topic).await? else {
            return Ok(Outcome::RebuildRunning);
        };
        if work.moved(&self.target, &stored) {
            return Ok(Outcome::Diverged);
        }

        let mut stats = ApplyStats::default();
        for (idx, change) in &batch.changes {
            let sp = tx.savepoint("event").await.map_err(pg("SAVEPOINT"))?;
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
                            .map(|d| format!("{} (SQLSTATE {})", d.message(), d.code().code()))
                            .unwrap_or_else(|| source.to_string()),
                        other => other.to_string(),
                    };
                    // Its key waits behind it until it is replayed or discarded.
                    let hold = apply::hold_key(projections, change, &detail);
                    apply::run(&tx, cache, &target, &hold).await?;
                    warn!(target = %target, event_id = %change.event_id, key = %change.key,
                        "the database refused an event: dead-lettered, and later events of its key \
                         are held until it is replayed or discarded (walcast dlq discard)");
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

        let rejected = if dlq_sent {
            &[][..]
        } else {
            &batch.rejected[..]
        };
        let mut dead = work.letters(rejected);
        dead.extend(work.letters(&stats.db_rejected));
        work.dlq.send_all(&dead).await?;
        stats.dead_lettered = (dead.len() + batch.rejected.len() - rejected.len()) as u64;

        for e in &execs {
            apply::run(&tx, cache, &target, e).await?;
        }
        tx.commit().await.map_err(pg("COMMIT"))?;
        Ok(Outcome::Committed(stats))
    }
}

/// In `tx`: takes the rebuild lock shared and locks the stored offsets of `group` on `topic`;
/// `None` when a rebuild holds the lock.
async fn locked_offsets(
    tx: &tokio_postgres::Transaction<'_>,
    target: &str,
    group: &str,
    topic: &str,
) -> Result<Option<BTreeMap<i32, i64>>> {
    let free: bool = tx
        .query_one(sql::TRY_SHARED_REBUILD_LOCK, &[&group])
        .await
        .map_err(Error::pg(target, "taking the rebuild lock"))?
        .get(0);
    if !free {
        return Ok(None);
    }
    let rows = tx
        .query(sql::LOCK_OFFSETS, &[&group, &topic])
        .await
        .map_err(Error::pg(target, "locking walcast_offsets"))?;
    Ok(Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
}

/// What one batch transaction works on.
struct Work<'a> {
    projections: &'a Projections,
    records: &'a [rdkafka::message::OwnedMessage],
    /// What the task believes `walcast_offsets` holds.
    expected: &'a BTreeMap<i32, i64>,
    dlq: &'a Dlq,
}

impl<'a> Work<'a> {
    /// Whether the offsets read under lock differ from the expected ones (a rebuild, or a
    /// second sink on the target); logged.
    fn moved(&self, target: &str, stored: &BTreeMap<i32, i64>) -> bool {
        let moved = stored != self.expected;
        if moved {
            warn!(target = %target, ?stored, expected = ?self.expected, "stored offsets moved under this sink; re-reading them");
        }
        moved
    }

    /// The dead letters of `rejected` (record index, why).
    fn letters(&self, rejected: &'a [(usize, Rejection)]) -> Vec<DeadLetter<'a>> {
        rejected
            .iter()
            .map(|(i, why)| DeadLetter {
                record: &self.records[*i],
                why,
            })
            .collect()
    }
}

/// One statement of a pipelined round trip.
type Flight<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Runs `flights` on one connection, sending them in order: each is polled for the first
/// time in list order, which is when tokio-postgres queues its messages. Stops at the first
/// error (the statements behind it then fail or roll back on the server).
async fn in_order<T>(mut flights: Vec<Flight<'_, T>>) -> Result<Vec<T>> {
    let mut done: Vec<Option<T>> = flights.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in flights.iter_mut().zip(done.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                Poll::Ready(Ok(v)) => *slot = Some(v),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await?;
    Ok(done.into_iter().flatten().collect())
}
