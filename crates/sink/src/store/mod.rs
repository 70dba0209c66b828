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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row, Statement};
use tracing::{debug, warn};
use walcast_postgres::{Dsn, connect_sql};

use self::apply::{Flight, in_order};
use crate::batch::{self, ApplyStats, Batch, Events, Exec, Planned};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::error::{Error, Result};
use crate::projection::{Projections, RejectKind, Rejection};
use crate::sql;

/// What a batch transaction did.
#[derive(Debug)]
pub(crate) enum Outcome {
    Committed(ApplyStats),
    /// A rebuild of this target runs; nothing was written.
    RebuildRunning,
    /// The stored offsets differ from what this task last wrote; nothing was written.
    Diverged,
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
    /// The transaction normally takes two round trips ([`Mode::Pipelined`]); a batch with a
    /// value the database refuses is rolled back and applied again event by event
    /// ([`Mode::Careful`]), so that only the refused events go to the DLQ.
    ///
    /// The batch's decoded changes are given up on the way (see [`Store::transact`]); the
    /// careful path decodes the records again.
    pub(crate) async fn apply(
        &mut self,
        projections: &Projections,
        batch: &mut Batch,
        records: &[rdkafka::message::OwnedMessage],
        expected: &BTreeMap<i32, i64>,
        dlq: &DeadLetters,
    ) -> Result<Outcome> {
        let work = Work {
            projections,
            records,
            expected,
            dlq,
        };
        let mut dlq_sent = false;
        let result = match self
            .transact(&work, batch, Mode::Pipelined, &mut dlq_sent)
            .await
        {
            Err(e) if e.is_data_error() => {
                self.rollback().await?;
                warn!(target = %self.target, error = %e, "the batch has values the database refuses; applying it event by event");
                if batch.changes.is_empty() {
                    batch.changes = batch::decode(projections, records, expected).changes;
                }
                self.transact(&work, batch, Mode::Careful, &mut dlq_sent)
                    .await
            }
            other => other,
        };
        if result.is_err() {
            // The connection is dropped by the caller; a rollback is only tidiness.
            let _ = self.rollback().await;
        }
        result
    }

    async fn rollback(&self) -> Result<()> {
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(Error::pg(&self.target, "ROLLBACK"))
    }

    /// The batch transaction, in either mode:
    ///
    /// 1. `BEGIN`, the rebuild gate (a statement that fails when a rebuild holds the lock, so
    ///    nothing behind it runs) and the stored offsets `FOR UPDATE`, checked against
    ///    `expected`;
    /// 2. per step (the whole batch, or each event in a savepoint): the `processed_events`
    ///    insert and, per table, the rows, tombstones and held changes of the step's keys;
    ///    the step planned ([`Events::plan`]); its writes;
    /// 3. the poison records (and refused events) to the DLQ, acknowledged before the commit;
    /// 4. the offsets, the applied LSN and `COMMIT`.
    ///
    /// Pipelined, (1) and the reads of (2) go in one round trip, and the writes of (2) with
    /// (4) in a second. Statements go out in order on the one connection, so a failing
    /// statement aborts the transaction and the `COMMIT` behind it rolls back.
    ///
    /// Memory: a batch's column values (up to `max_bytes`) are held once, shared by the
    /// changes, the plan and the statement arguments; before the second round trip the
    /// changes and the plan let go of them, so each statement's values are freed as the
    /// client encodes it, and the values and their encoding are not both whole in memory.
    async fn transact(
        &mut self,
        work: &Work<'_>,
        batch: &mut Batch,
        mode: Mode,
        dlq_sent: &mut bool,
    ) -> Result<Outcome> {
        let events = Events::new(batch.changes.iter().map(|(_, c)| c));
        let (ids, types) = events.processed();
        let head = self.prepare_head().await?;
        let reads = match mode {
            Mode::Pipelined => Some(self.prepare_reads(work.projections, &events).await?),
            Mode::Careful => None,
        };
        let flights = match &reads {
            Some(r) => self.read_flights(work.projections, r, &events, &ids, &types),
            None => Vec::new(),
        };
        let Some((stored, mut answers)) = self.open(&head, flights).await? else {
            return Ok(Outcome::RebuildRunning);
        };
        if work.moved(&self.target, &stored) {
            self.rollback().await?;
            return Ok(Outcome::Diverged);
        }
        let Planned {
            mut execs,
            mut stats,
        } = match mode {
            Mode::Pipelined => self.answer(work.projections, events, &mut answers)?,
            Mode::Careful => {
                drop(events);
                Planned {
                    execs: Vec::new(),
                    stats: self.careful(work.projections, batch).await?,
                }
            }
        };
        execs.extend(batch::bookkeeping(&self.group, &self.topic, batch));
        // The statement arguments now hold the only references to the values.
        batch.changes = Vec::new();

        let rejected = if *dlq_sent {
            &[][..]
        } else {
            &batch.rejected[..]
        };
        let mut dead = work.letters(rejected);
        dead.extend(work.letters(&stats.db_rejected));
        work.dlq.send_all(&dead).await?;
        *dlq_sent = true;
        stats.dead_lettered = (dead.len() + batch.rejected.len() - rejected.len()) as u64;

        self.send(execs, Some("COMMIT")).await?;
        Ok(Outcome::Committed(stats))
    }

    /// Step (2) of [`Store::transact`] event by event, each in a savepoint: an event the
    /// database refuses is rolled back alone, and its key held behind it.
    async fn careful(&mut self, projections: &Projections, batch: &Batch) -> Result<ApplyStats> {
        let mut stats = ApplyStats::default();
        for (idx, change) in &batch.changes {
            match self.step(projections, Events::new([change]), true).await {
                Ok(s) => stats.add(s),
                Err(e) if e.is_data_error() => {
                    self.client
                        .batch_execute("ROLLBACK TO SAVEPOINT event")
                        .await
                        .map_err(Error::pg(&self.target, "ROLLBACK TO SAVEPOINT"))?;
                    let detail = match &e {
                        Error::Postgres { source, .. } => source
                            .as_db_error()
                            .map(|d| format!("{} (SQLSTATE {})", d.message(), d.code().code()))
                            .unwrap_or_else(|| source.to_string()),
                        other => other.to_string(),
                    };
                    // Its key waits behind it until it is replayed or discarded.
                    let hold = batch::hold_key(projections, change, &detail);
                    self.send(vec![hold], None).await?;
                    warn!(target = %self.target, event_id = %change.event_id, key = %change.key,
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
        Ok(stats)
    }

    /// Step (2) of [`Store::transact`] for `events` inside an open transaction, in two round
    /// trips; in a savepoint `event` when `savepoint`.
    async fn step(
        &mut self,
        projections: &Projections,
        events: Events<'_>,
        savepoint: bool,
    ) -> Result<ApplyStats> {
        let (ids, types) = events.processed();
        let reads = self.prepare_reads(projections, &events).await?;
        let mut flights = Vec::new();
        if savepoint {
            flights.push(self.simple("SAVEPOINT event", "SAVEPOINT"));
        }
        flights.extend(self.read_flights(projections, &reads, &events, &ids, &types));
        let mut answers = in_order(flights)
            .await?
            .into_iter()
            .skip(usize::from(savepoint));
        let Planned { execs, stats } = self.answer(projections, events, &mut answers)?;
        self.send(execs, savepoint.then_some("RELEASE SAVEPOINT event"))
            .await?;
        Ok(stats)
    }

    /// The statements of round trip (1) of [`Store::transact`] (see [`Store::open`]).
    async fn prepare_head(&mut self) -> Result<Head> {
        let (c, cache, target) = (&self.client, &mut self.statements, &self.target);
        Ok(Head {
            gate: apply::stmt(cache, c, target, sql::REBUILD_GATE).await?,
            offsets: apply::stmt(cache, c, target, sql::LOCK_OFFSETS).await?,
        })
    }

    /// The statements that read what a step needs (see [`Store::read_flights`]).
    async fn prepare_reads(
        &mut self,
        projections: &Projections,
        events: &Events<'_>,
    ) -> Result<Reads> {
        let (c, cache, target) = (&self.client, &mut self.statements, &self.target);
        let mut rows = Vec::with_capacity(events.keys().len());
        for ti in events.keys().keys() {
            let table = &projections.tables[*ti];
            rows.push(apply::stmt(cache, c, target, &sql::snapshot_rows(table)).await?);
        }
        Ok(Reads {
            processed: apply::stmt(cache, c, target, sql::INSERT_PROCESSED).await?,
            tombstones: apply::stmt(cache, c, target, sql::SNAPSHOT_TOMBSTONES).await?,
            held: apply::stmt(cache, c, target, sql::SNAPSHOT_HELD).await?,
            rows,
        })
    }

    /// The `processed_events` insert of `ids` (answering the fresh ones), then per table of
    /// `events`: the rows, tombstones and held changes of its keys ([`Store::answer`]).
    fn read_flights<'a>(
        &'a self,
        projections: &'a Projections,
        reads: &'a Reads,
        events: &'a Events<'_>,
        ids: &'a [uuid::Uuid],
        types: &'a [&'a str],
    ) -> Vec<Flight<'a, Vec<Row>>> {
        let client = &self.client;
        let pg = |what: &str| Error::pg(&self.target, what.to_owned());
        let mut out: Vec<Flight<'a, Vec<Row>>> = Vec::with_capacity(1 + 3 * reads.rows.len());
        out.push(Box::pin(async move {
            (client.query(&reads.processed, &[&ids, &types]).await)
                .map_err(pg("recording processed_events"))
        }));
        for ((ti, keys), rows) in events.keys().iter().zip(&reads.rows) {
            let table = &projections.tables[*ti];
            let what = format!("reading {}", table.name);
            out.push(Box::pin(async move {
                client.query(rows, &[keys]).await.map_err(pg(&what))
            }));
            out.push(Box::pin(async move {
                (client.query(&reads.tombstones, &[&table.name, keys]).await)
                    .map_err(pg("reading walcast_tombstones"))
            }));
            out.push(Box::pin(async move {
                (client.query(&reads.held, &[&table.name, keys]).await)
                    .map_err(pg("reading walcast_held"))
            }));
        }
        out
    }

    /// Plans `events` from the answers of [`Store::read_flights`].
    fn answer(
        &self,
        projections: &Projections,
        events: Events<'_>,
        answers: &mut impl Iterator<Item = Vec<Row>>,
    ) -> Result<Planned> {
        let mut next = || answers.next().unwrap_or_default();
        let fresh: HashSet<uuid::Uuid> = next().iter().map(|r| r.get(0)).collect();
        events.plan(projections, &fresh, |ti| {
            let table = &projections.tables[ti];
            apply::snapshot(&self.target, table, &next(), &next(), &next())
        })
    }

    /// Round trip (1) of [`Store::transact`]: `BEGIN`, the rebuild gate, the stored offsets
    /// `FOR UPDATE`, then `also`. `None` (rolled back) when a rebuild holds the lock;
    /// otherwise the stored offsets and the answers of `also`.
    async fn open<'a>(
        &'a self,
        head: &'a Head,
        also: Vec<Flight<'a, Vec<Row>>>,
    ) -> Result<Option<(BTreeMap<i32, i64>, std::vec::IntoIter<Vec<Row>>)>> {
        let target = &self.target;
        let pg = |what: &str| Error::pg(target, what.to_owned());
        let client = &self.client;
        let rebuilding = AtomicBool::new(false);
        let mut flights: Vec<Flight<'_, Vec<Row>>> = vec![
            self.simple("BEGIN", "BEGIN"),
            Box::pin(async {
                match client.query(&head.gate, &[&self.group]).await {
                    Err(e) if e.code() == Some(&SqlState::DIVISION_BY_ZERO) => {
                        rebuilding.store(true, Ordering::Relaxed);
                        Err(pg("a rebuild holds the lock")(e))
                    }
                    other => other.map_err(pg("taking the rebuild lock")),
                }
            }),
            Box::pin(async {
                (client
                    .query(&head.offsets, &[&self.group, &self.topic])
                    .await)
                    .map_err(pg("locking walcast_offsets"))
            }),
        ];
        flights.extend(also);
        let answers = match in_order(flights).await {
            Err(_) if rebuilding.load(Ordering::Relaxed) => {
                self.rollback().await?;
                return Ok(None);
            }
            other => other?,
        };
        // Past BEGIN and the gate.
        let mut answers = answers.into_iter().skip(2);
        let stored = (answers.next().unwrap_or_default().iter())
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(Some((stored, answers.collect::<Vec<_>>().into_iter())))
    }

    /// A statement without parameters or answer, as a flight.
    fn simple<'a>(&'a self, text: &'static str, what: &'static str) -> Flight<'a, Vec<Row>> {
        Box::pin(async move {
            (self.client.batch_execute(text).await).map_err(Error::pg(&self.target, what))?;
            Ok(Vec::new())
        })
    }

    /// Sends `execs` (then `tail`, unless empty) in one round trip. The arguments move into
    /// the client, which drops them once encoded.
    async fn send(&mut self, execs: Vec<Exec>, tail: Option<&'static str>) -> Result<()> {
        let (client, cache, target) = (&self.client, &mut self.statements, &self.target);
        let mut statements = Vec::with_capacity(execs.len());
        for e in &execs {
            statements.push(apply::stmt(cache, client, target, &e.sql).await?);
        }
        let mut flights: Vec<Flight<'_, ()>> = Vec::with_capacity(execs.len() + 1);
        for (e, s) in execs.into_iter().zip(&statements) {
            let Exec { what, args, .. } = e;
            flights.push(Box::pin(async move {
                client
                    .execute_raw(s, args)
                    .await
                    .map_err(Error::pg(target, what))?;
                Ok(())
            }));
        }
        if let Some(tail) = tail {
            let what = tail.trim_end_matches(" event");
            flights.push(Box::pin(async move {
                (client.batch_execute(tail).await).map_err(Error::pg(target, what))
            }));
        }
        in_order(flights).await?;
        Ok(())
    }
}

/// How [`Store::transact`] sends a batch's statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The whole batch in two round trips.
    Pipelined,
    /// Event by event, each in a savepoint (after the database refused a value of the batch).
    Careful,
}

/// The prepared rebuild gate and offsets lock.
struct Head {
    gate: Statement,
    offsets: Statement,
}

/// The prepared statements that read what a step needs.
struct Reads {
    processed: Statement,
    tombstones: Statement,
    held: Statement,
    /// Per table of the step, in key order: its rows.
    rows: Vec<Statement>,
}

/// What one batch transaction works on.
struct Work<'a> {
    projections: &'a Projections,
    records: &'a [rdkafka::message::OwnedMessage],
    /// What the task believes `walcast_offsets` holds.
    expected: &'a BTreeMap<i32, i64>,
    dlq: &'a DeadLetters,
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
