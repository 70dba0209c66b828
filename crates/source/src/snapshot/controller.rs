//! The snapshot controller: one task per streaming source process, running one snapshot at a
//! time, in request order, and keeping every step on the progress topic.
//!
//! # Progress tracking
//!
//! For each table, chunk N+1 is read while chunk N's records are acknowledged, but:
//!
//! 1. chunk N's state (`last_key`, `rows`, `chunks`) is produced to the progress topic only
//!    after the broker acknowledged **every** record of chunks <= N; and
//! 2. chunk N+1's records are produced only after chunk N's state is acknowledged.
//!
//! So after a `kill -9` the stored `last_key` is never ahead of what is on the topic (nothing
//! is skipped), and at most the one chunk after it was produced (at most `chunk_size` rows are
//! emitted twice, with the same deterministic ids, which the sinks skip).
//!
//! A snapshot's `start_offsets` (the event topic's end offsets) are read and stored before its
//! first chunk, and kept when it resumes. A retryable error (Postgres or the broker gone)
//! resumes from the stored state after a backoff; any other error marks the snapshot `failed`
//! with the reason, and the next one runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tracing::{error, info, warn};
use walcast_kafka::snapshots::{self, SnapshotState, Status, TableProgress};
use walcast_kafka::{TopicAdmin, TopicSpec};
use walcast_postgres::{Dsn, connect_sql};
use walcast_replication::TableName;

use super::table::{Row, Table};
use super::{Command, throttle::Throttle};
use crate::config::SourceConfig;
use crate::dead_letter::{DeadLetter, Letter};
use crate::error::{Error, Result};
use crate::metrics::SnapshotTableMetrics;
use crate::record::Record;

/// How long reading the progress topic or the end offsets may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the snapshots of one source process.
pub(crate) struct Controller {
    config: Arc<SourceConfig>,
    connect: Dsn,
    client: Client,
    producer: FutureProducer,
    tables: Vec<Table>,
    topic: Arc<str>,
    progress_topic: String,
    /// The largest record the event topic takes (`[kafka] max_message_bytes`, the topic's).
    record_limit: usize,
    dlq_topic: String,
    /// The largest dead letter the DLQ takes.
    dlq_limit: usize,
    states: BTreeMap<String, SnapshotState>,
    metrics: BTreeMap<String, SnapshotTableMetrics>,
    throttle: Throttle,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("topic", &self.topic)
            .field("progress_topic", &self.progress_topic)
            .finish_non_exhaustive()
    }
}

/// What [`Controller::new`] needs besides the config.
#[derive(Debug)]
pub(crate) struct Setup<'a> {
    pub connect: Dsn,
    pub tables: Vec<Table>,
    pub admin: &'a TopicAdmin,
    pub record_limit: usize,
    pub dlq_limit: usize,
    pub metrics: BTreeMap<String, SnapshotTableMetrics>,
}

impl Controller {
    /// Creates (or checks) the progress topic and reads the snapshots it knows.
    pub(crate) async fn new(config: Arc<SourceConfig>, setup: Setup<'_>) -> Result<Controller> {
        let progress_topic = config.progress_topic();
        if config.kafka.create_topics {
            snapshots::ensure_topic(
                setup.admin,
                &progress_topic,
                config.kafka.replication_factor,
            )
            .await?;
        } else {
            let spec = TopicSpec {
                partitions: 1,
                replication_factor: config.kafka.replication_factor,
            };
            setup.admin.check(&progress_topic, spec, false).await?;
        }
        let states =
            snapshots::read_all(config.kafka.client(), &progress_topic, KAFKA_TIMEOUT).await?;
        // Batches the event topic takes, when its limit is below `[kafka] max_message_bytes`.
        let producer_config = if setup.record_limit < config.kafka.max_message_bytes {
            crate::kafka::capped_client_config(&config.kafka, setup.record_limit)
        } else {
            crate::kafka::client_config(&config.kafka)
        };
        let producer: FutureProducer = producer_config
            .create()
            .map_err(Error::kafka("creating the snapshot producer"))?;
        let client = sql(&setup.connect).await?;
        Ok(Controller {
            throttle: Throttle::new(config.snapshot.max_rows_per_sec),
            topic: Arc::from(config.kafka.topic.as_str()),
            connect: setup.connect,
            client,
            producer,
            tables: setup.tables,
            progress_topic,
            record_limit: setup.record_limit,
            dlq_topic: config.dlq_topic(),
            dlq_limit: setup.dlq_limit,
            states,
            metrics: setup.metrics,
            config,
        })
    }

    /// `[snapshot] initial = true` and the slot does not exist yet: stores a `requested` state
    /// `initial-<slot>` (unless that id is known), before the slot is created. Called before
    /// the change stream starts; the snapshot runs once the slot exists.
    pub(crate) async fn request_initial(&mut self) -> Result<()> {
        if !self.config.snapshot.initial {
            return Ok(());
        }
        let slot = &self.config.postgres.slot;
        let exists = self
            .client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[slot],
            )
            .await
            .map_err(Error::postgres("looking up the replication slot"))?
            .is_some();
        if exists {
            return Ok(());
        }
        let id = format!("initial-{slot}");
        self.on_command(Command::Start {
            id,
            tables: Vec::new(),
            requested_by: "initial".into(),
            accepted: None,
        })
        .await
    }

    /// Runs until the command senders are gone (or the task is aborted with the pipeline).
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let backoff = self.config.backoff();
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let Err(e) = self.work(&mut commands).await else {
                return;
            };
            if started.elapsed() > Duration::from_secs(60) {
                attempt = 0;
            }
            let delay = backoff.delay(attempt).unwrap_or(backoff.max);
            attempt += 1;
            warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "snapshot stopped on a retryable error; resuming from the progress topic");
            tokio::time::sleep(delay).await;
            if let Err(e) = self.reload().await {
                warn!(error = %e, "could not reload snapshot progress");
            }
        }
    }

    /// After an error: a new SQL connection and the stored states.
    async fn reload(&mut self) -> Result<()> {
        self.client = sql(&self.connect).await?;
        self.states = snapshots::read_all(
            self.config.kafka.client(),
            &self.progress_topic,
            KAFKA_TIMEOUT,
        )
        .await?;
        Ok(())
    }

    async fn work(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Result<()> {
        loop {
            while let Ok(c) = commands.try_recv() {
                self.on_command(c).await?;
            }
            match self.next_pending() {
                Some(id) => match self.run_snapshot(&id, commands).await {
                    Err(e) if !e.is_retryable() => {
                        error!(snapshot = %id, error = %e, "snapshot failed");
                        self.finish(&id, Status::Failed, Some(e.to_string()))
                            .await?;
                    }
                    other => other?,
                },
                None => match commands.recv().await {
                    Some(c) => self.on_command(c).await?,
                    None => return Ok(()),
                },
            }
        }
    }

    /// The oldest requested or running snapshot of this source's topic.
    fn next_pending(&self) -> Option<String> {
        self.states
            .values()
            .filter(|s| !s.status.is_final() && *s.topic == *self.topic)
            .min_by_key(|s| (s.requested_at_ms, s.id.clone()))
            .map(|s| s.id.clone())
    }

    async fn on_command(&mut self, command: Command) -> Result<()> {
        match command {
            Command::Start {
                id,
                tables,
                requested_by,
                accepted,
            } => {
                if self.states.contains_key(&id) {
                    info!(snapshot = %id, "snapshot id already known; nothing new started");
                } else {
                    let state = self.requested(id, &tables, requested_by);
                    let status = state.status;
                    let id = state.id.clone();
                    self.store(state).await?;
                    info!(snapshot = %id, status = status.as_str(), "snapshot requested");
                }
                if let Some(a) = accepted {
                    a();
                }
            }
            Command::Cancel {
                id,
                tables,
                reason,
                accepted,
            } => {
                let wanted: Vec<TableName> = tables.iter().filter_map(|t| t.parse().ok()).collect();
                let targets: Vec<String> = self
                    .states
                    .values()
                    .filter(|s| !s.status.is_final())
                    .filter(|s| match &id {
                        Some(i) => &s.id == i,
                        None => {
                            wanted.is_empty()
                                || s.tables.iter().any(|t| {
                                    t.table
                                        .parse::<TableName>()
                                        .is_ok_and(|n| wanted.contains(&n))
                                })
                        }
                    })
                    .map(|s| s.id.clone())
                    .collect();
                for target in targets {
                    self.finish(&target, Status::Cancelled, Some(reason.clone()))
                        .await?;
                    info!(snapshot = %target, reason = %reason, "snapshot cancelled");
                }
                if let Some(a) = accepted {
                    a();
                }
            }
        }
        Ok(())
    }

    /// A new `requested` state, or a `failed` one when a table is not configured.
    fn requested(&self, id: String, tables: &[String], requested_by: String) -> SnapshotState {
        let now = now_ms();
        let mut unknown = Vec::new();
        let mut progress = Vec::new();
        if tables.is_empty() {
            progress.extend(self.tables.iter().map(|t| t.label.clone()));
        }
        for name in tables {
            match self.table_for(name) {
                Some(t) => progress.push(t.label.clone()),
                None => unknown.push(name.clone()),
            }
        }
        let failed = !unknown.is_empty();
        SnapshotState {
            id,
            topic: self.topic.to_string(),
            status: if failed {
                Status::Failed
            } else {
                Status::Requested
            },
            tables: progress
                .into_iter()
                .map(|table| TableProgress {
                    table,
                    last_key: None,
                    rows: 0,
                    chunks: 0,
                    estimated_rows: None,
                    done: false,
                })
                .collect(),
            start_offsets: BTreeMap::new(),
            requested_by,
            requested_at_ms: now,
            updated_at_ms: now,
            completed_at_ms: None,
            reason: failed.then(|| {
                format!(
                    "{} not in [[snapshot.tables]] of this source; add it there (with its key, version_column and occurred_at_column) and ask again",
                    unknown.join(", ")
                )
            }),
        }
    }

    /// The configured table `name` (`schema.table`, quoted or not).
    fn table_for(&self, name: &str) -> Option<&Table> {
        let wanted: TableName = name.parse().ok()?;
        self.tables
            .iter()
            .find(|t| t.label.parse::<TableName>().is_ok_and(|n| n == wanted))
    }

    /// Marks snapshot `id` final.
    async fn finish(&mut self, id: &str, status: Status, reason: Option<String>) -> Result<()> {
        let Some(mut state) = self.states.get(id).cloned() else {
            return Ok(());
        };
        state.status = status;
        state.reason = reason;
        if status == Status::Completed {
            state.completed_at_ms = Some(now_ms());
        }
        for t in &state.tables {
            if let Some(m) = self.metrics.get(&t.table) {
                m.running.set(0.0);
                m.eta.set(0.0);
            }
        }
        self.store(state).await
    }

    async fn run_snapshot(
        &mut self,
        id: &str,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<()> {
        let Some(mut state) = self.states.get(id).cloned() else {
            return Ok(());
        };
        if state.status == Status::Requested || state.start_offsets.is_empty() {
            state.start_offsets = self.end_offsets().await?;
            state.status = Status::Running;
            for t in &mut state.tables {
                if let Some(table) = self.table_for(&t.table) {
                    t.estimated_rows = table.estimate(&self.client).await;
                }
            }
            self.store(state.clone()).await?;
        }
        info!(snapshot = %id, tables = state.tables.len(), start_offsets = ?state.start_offsets, "snapshot running");
        let chunk_size = self.config.snapshot.chunk_size;
        for i in 0..state.tables.len() {
            if state.tables[i].done {
                continue;
            }
            let label = state.tables[i].table.clone();
            let Some(table) = self.table_for(&label).cloned() else {
                return Err(Error::SnapshotTable {
                    table: label,
                    problem: "is no longer in [[snapshot.tables]]; add it back, or cancel the snapshot (walcast snapshot cancel)".into(),
                });
            };
            let metrics = self.metrics.get(&label).cloned();
            if let Some(m) = &metrics {
                m.running.set(1.0);
            }
            let started = Instant::now();
            let rows_before = state.tables[i].rows;
            let mut chunk = table
                .read_chunk(
                    &self.client,
                    state.tables[i].last_key.as_deref(),
                    chunk_size,
                )
                .await?;
            loop {
                let n = chunk.len();
                let full = n >= chunk_size as usize;
                let pending = self.produce(&table, &chunk, id).await?;
                let last = chunk.last().map(|r| r.key.clone());
                // The next chunk is read while this one is acknowledged.
                let next = async {
                    match (&last, full) {
                        (Some(k), true) => {
                            table.read_chunk(&self.client, Some(k), chunk_size).await
                        }
                        _ => Ok(Vec::new()),
                    }
                };
                let (acked, next) = tokio::join!(self.acknowledged(&table, pending), next);
                acked?;
                let t = &mut state.tables[i];
                if last.is_some() {
                    t.last_key = last;
                }
                t.rows += n as u64;
                t.chunks += u64::from(n > 0);
                t.done = !full;
                self.store(state.clone()).await?;
                if let Some(m) = &metrics {
                    m.rows.inc_by(n as u64);
                    m.chunks.inc_by(u64::from(n > 0));
                    m.eta.set(eta(&state.tables[i], rows_before, started));
                }
                while let Ok(c) = commands.try_recv() {
                    self.on_command(c).await?;
                }
                if self.states.get(id).is_none_or(|s| s.status.is_final()) {
                    return Ok(());
                }
                if state.tables[i].done {
                    break;
                }
                chunk = next?;
            }
            if let Some(m) = &metrics {
                m.running.set(0.0);
                m.eta.set(0.0);
            }
            info!(snapshot = %id, table = %label, rows = state.tables[i].rows, chunks = state.tables[i].chunks, "snapshot table done");
        }
        self.finish(id, Status::Completed, None).await?;
        info!(snapshot = %id, rows = state.rows(), "snapshot completed");
        Ok(())
    }

    /// Produces the records of `rows` (throttled); an oversized one goes to the DLQ.
    async fn produce(
        &mut self,
        table: &Table,
        rows: &[Row],
        id: &str,
    ) -> Result<Vec<(DeliveryFuture, Record)>> {
        let mut pending: Vec<(DeliveryFuture, Record)> = Vec::with_capacity(rows.len());
        let now = now_ms();
        for row in rows {
            self.throttle.take().await;
            let mut record = table.record(row, &self.topic, id, now);
            if record.size() > self.record_limit {
                record = self.too_large(table, &record, "is larger than the topic's limit");
            }
            loop {
                match self.send(&record) {
                    Ok(f) => {
                        pending.push((f, record));
                        break;
                    }
                    Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
                        if !pending.is_empty() =>
                    {
                        // Wait for the oldest acknowledgement, then try again.
                        let (f, r) = pending.remove(0);
                        self.acknowledged(table, vec![(f, r)]).await?;
                    }
                    Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => return Err(delivery(&record, e)),
                }
            }
        }
        Ok(pending)
    }

    /// Waits for every acknowledgement; a record the broker finds too large is dead-lettered
    /// (and that acknowledged); any other refusal is an error (the snapshot resumes from its
    /// stored state).
    async fn acknowledged(
        &self,
        table: &Table,
        pending: Vec<(DeliveryFuture, Record)>,
    ) -> Result<()> {
        for (f, record) in pending {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                    _,
                ))) if record.kind == crate::record::RecordKind::Event => {
                    let letter =
                        self.too_large(table, &record, "the broker refused it as too large");
                    let f = self.send(&letter).map_err(|e| delivery(&letter, e))?;
                    match f.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => return Err(delivery(&letter, e)),
                        Err(_) => return Err(delivery(&letter, KafkaError::Canceled)),
                    }
                }
                Ok(Err((e, _))) => return Err(delivery(&record, e)),
                Err(_) => return Err(delivery(&record, KafkaError::Canceled)),
            }
        }
        Ok(())
    }

    /// The dead letter of an event too large for its topic (`payload_too_large`, no value:
    /// the row is still in its table, found by its key).
    fn too_large(&self, table: &Table, record: &Record, why: &str) -> Record {
        let snapshot = record
            .header(crate::record::SNAPSHOT)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        warn!(snapshot = %snapshot, table = %table.label, bytes = record.size(), "snapshot row too large for the topic; dead-lettered");
        let name = table
            .label
            .parse()
            .unwrap_or_else(|_| TableName::new("public", &table.label));
        DeadLetter::new(&self.dlq_topic, &name, self.dlq_limit).record(Letter::too_large(
            record,
            format!(
                "snapshot record of {} bytes {why} ({} bytes); the value is left out here: read the row from its table by the record key, or raise max.message.bytes",
                record.size(),
                self.record_limit
            ),
        ))
    }

    fn send(&self, record: &Record) -> std::result::Result<DeliveryFuture, KafkaError> {
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic)
            .headers(crate::kafka::headers(record))
            .timestamp(record.timestamp_ms);
        if let Some(k) = &record.key {
            r = r.key(&k[..]);
        }
        if let Some(v) = &record.value {
            r = r.payload(&v[..]);
        }
        self.producer.send_result(r).map_err(|(e, _)| e)
    }

    /// Produces `state` to the progress topic and waits for its acknowledgement.
    async fn store(&mut self, mut state: SnapshotState) -> Result<()> {
        state.updated_at_ms = now_ms();
        let value = state.encode();
        let context = || format!("writing snapshot progress to {}", self.progress_topic);
        if value.len() + state.id.len() > snapshots::MAX_RECORD_BYTES {
            return Err(Error::SnapshotTable {
                table: state
                    .tables
                    .iter()
                    .map(|t| t.table.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                problem: format!(
                    "progress of snapshot {} is {} bytes, above {}; snapshot fewer tables at once",
                    state.id,
                    value.len(),
                    snapshots::MAX_RECORD_BYTES
                ),
            });
        }
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.progress_topic)
            .key(state.id.as_str())
            .payload(&value[..]);
        let f = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| Error::kafka(context())(e))?;
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(Error::kafka(context())(e)),
            Err(_) => return Err(Error::kafka(context())(KafkaError::Canceled)),
        }
        self.states.insert(state.id.clone(), state);
        Ok(())
    }

    /// The event topic's end offsets (next offset of each partition).
    async fn end_offsets(&self) -> Result<BTreeMap<i32, i64>> {
        let config = self.config.kafka.client().config(&[
            ("group.id", "walcast.snapshots.offsets"),
            ("enable.auto.commit", "false"),
        ]);
        let topic = self.topic.to_string();
        let context = format!("reading the end offsets of {topic}");
        let read = tokio::task::spawn_blocking(move || -> std::result::Result<_, KafkaError> {
            let consumer: BaseConsumer = config.create()?;
            let metadata = consumer.fetch_metadata(Some(&topic), KAFKA_TIMEOUT)?;
            let mut ends = BTreeMap::new();
            for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                for p in t.partitions() {
                    let (_, high) = consumer.fetch_watermarks(&topic, p.id(), KAFKA_TIMEOUT)?;
                    ends.insert(p.id(), high);
                }
            }
            Ok(ends)
        })
        .await
        .map_err(|_| Error::kafka(context.clone())(KafkaError::Canceled))?;
        let ends = read.map_err(Error::kafka(context.clone()))?;
        if ends.is_empty() {
            return Err(Error::kafka(context)(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            )));
        }
        Ok(ends)
    }
}

/// Seconds left for `t` at the rate since `started` (`rows_before` rows were done then).
fn eta(t: &TableProgress, rows_before: u64, started: Instant) -> f64 {
    let done = t.rows.saturating_sub(rows_before) as f64;
    let secs = started.elapsed().as_secs_f64();
    match t.estimated_rows {
        Some(total) if done > 0.0 && secs > 0.0 && !t.done => {
            total.saturating_sub(t.rows) as f64 / (done / secs)
        }
        _ => 0.0,
    }
}

fn delivery(record: &Record, source: KafkaError) -> Error {
    Error::Delivery {
        topic: record.topic.to_string(),
        lsn: record.lsn,
        source,
    }
}

/// The controller's own SQL connection (`application_name` `walcast-snapshot`, so its reads
/// are easy to find in `pg_stat_activity`): ISO dates in UTC, so `col::text` parses the same
/// whatever the role's settings.
async fn sql(connect: &Dsn) -> Result<Client> {
    let connect = connect.clone().with_application_name("walcast-snapshot");
    let client = connect_sql(&connect)
        .await
        .map_err(walcast_replication::Error::from)?;
    client
        .batch_execute("SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'")
        .await
        .map_err(Error::postgres("setting up the snapshot connection"))?;
    Ok(client)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
