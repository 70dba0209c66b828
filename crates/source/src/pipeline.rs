//! The loop of a running source: read changes, route them, produce records, and confirm what
//! the broker acknowledged.
//!
//! ```text
//!             ┌──────────── select! (one task) ─────────────┐
//!  slot ──▶ ChangeStream::next ─▶ Router ─▶ Producer::send ─┼─▶ librdkafka ─▶ broker
//!   ▲          (only while in flight < max)     │ Ledger    │        │
//!   │                                           ▼           │        ▼ delivery callback
//!   └─ confirm(end LSN) ◀── Ledger::take ◀── acks channel ◀─┼────────┘
//!                           tick (1 s): status, stall log   │
//!             └──────────────────────────────────────────────┘
//! ```
//!
//! One task owns the [`ChangeStream`] and `select!`s its `next()` against acknowledgements,
//! so the confirmed position reaches Postgres while the source waits for WAL, and standby
//! status updates keep flowing while it waits for the broker (`next()` is cancel safe).
//! When is an LSN confirmed: see [`crate::progress`]. How a topic is prepared the first time a
//! record goes to it (and when its rows are dead-lettered instead): see [`topics`].
//!
//! # Signals
//!
//! An INSERT into the signal table ([`crate::signal`]) is recognised before routing and
//! becomes a snapshot [`Command`] sent to the controller. Its transaction is held in the
//! ledger as if it had one more record outstanding, until the controller calls the command's
//! `accepted` (the request is durable on the progress topic); the closure sends the
//! transaction's id back over a channel this loop selects on. So the slot is never confirmed
//! past a signal the controller has not stored: after a crash the row is read again, and the
//! controller starts nothing twice for a snapshot id it knows. A held signal does not delay
//! shutdown (it is read again after the restart).
//!
//! # Bounded memory
//!
//! At most `max_in_flight` records and `max_in_flight_bytes` bytes are produced and not yet
//! acknowledged; beyond that the loop stops reading the slot and only waits for
//! acknowledgements. A transaction is never buffered: its changes are produced as they
//! arrive, so a 1,000,000-row backlog or transaction costs no more memory than the bounds.
//!
//! # Shutdown
//!
//! When `stop` turns true the loop finishes the transaction it is in (so nothing of it is
//! produced twice), waits for every acknowledgement (at most `shutdown_timeout_secs`),
//! confirms, and ends streaming with a final status update.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};
use walcast_kafka::TopicAdmin;
use walcast_replication::{ChangeStream, Event};
use walcast_telemetry::admin::Health;

use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::kafka::{Ack, Meta, Producer};
use crate::metrics::SourceMetrics;
use crate::outbox::{FRAMING_BYTES, Letter, Routed, Router, TopicTemplate};
use crate::progress::{Ledger, TxnId};
use crate::record::{Record, RecordKind, TxnMeta};
use crate::signal::{Signal, SignalReader};
use crate::snapshot::Command;
use crate::stopped;

mod topics;

/// How long without any acknowledgement, with records outstanding, before the source says
/// the broker is not keeping up (and logs the slot lag).
const STALL_AFTER: Duration = Duration::from_secs(10);

/// Where records go: a producer, or nowhere (`--discard`).
pub(crate) enum Output {
    Kafka {
        producer: Producer,
        admin: TopicAdmin,
    },
    /// Decode and route only; nothing is produced and nothing is confirmed.
    Discard,
}

/// One run of the loop, from a freshly started [`ChangeStream`].
pub(crate) struct Pipeline {
    config: Arc<SourceConfig>,
    changes: ChangeStream,
    router: Router,
    output: Output,
    acks_rx: mpsc::UnboundedReceiver<Ack>,
    /// For producers made later (topics with a lower `max.message.bytes`); also keeps the
    /// channel open in discard mode (no producer holds a sender).
    acks_tx: mpsc::UnboundedSender<Ack>,
    ledger: Ledger,
    txn: Option<(TxnId, TxnMeta)>,
    /// Dead letters for records the broker refused, to produce before reading on.
    refused: VecDeque<(TxnId, Record)>,
    /// Topics ready to receive, with their `max.message.bytes`.
    known_topics: HashMap<Arc<str>, usize>,
    /// Template topics the broker refused lately: the dead-letter kind, the reason, when.
    refused_topics: HashMap<Arc<str>, (&'static str, String, Instant)>,
    /// The cluster's topic names, listed at the first template topic (collisions, `max_topics`).
    cluster_topics: Option<HashSet<String>>,
    /// Producers whose batches fit topics with a `max.message.bytes` below the configured
    /// `max_message_bytes`, by batch bound (see `topics::batch_class`).
    capped: HashMap<usize, Producer>,
    template: Option<TopicTemplate>,
    in_flight: usize,
    in_flight_bytes: usize,
    last_progress: Instant,
    last_stall_log: Option<Instant>,
    metrics: SourceMetrics,
    health: Health,
    signals: Signals,
}

/// Signal rows in, snapshot commands out, and their acceptances back (see "Signals").
struct Signals {
    reader: Option<SignalReader>,
    commands: mpsc::UnboundedSender<Command>,
    accepted_tx: mpsc::UnboundedSender<TxnId>,
    accepted_rx: mpsc::UnboundedReceiver<TxnId>,
    /// Commands sent whose `accepted` has not run yet.
    held: usize,
}

impl Pipeline {
    /// `signals`: the signal table's reader (`None`: no signal table) and where its commands go.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Arc<SourceConfig>,
        changes: ChangeStream,
        output: Output,
        acks: (mpsc::UnboundedSender<Ack>, mpsc::UnboundedReceiver<Ack>),
        known_topics: HashMap<Arc<str>, usize>,
        metrics: SourceMetrics,
        health: Health,
        signals: (Option<SignalReader>, mpsc::UnboundedSender<Command>),
    ) -> Pipeline {
        let start = changes.confirmed();
        let mut router = Router::new(&config);
        if let Some(&limit) = known_topics.get(config.dlq_topic().as_str()) {
            router.dead_letters_mut().limit_to(limit);
        }
        Pipeline {
            router,
            template: TopicTemplate::parse(&config.kafka.topic)
                .ok()
                .filter(|t| !t.is_fixed()),
            config,
            changes,
            output,
            acks_rx: acks.1,
            acks_tx: acks.0,
            ledger: Ledger::new(start),
            txn: None,
            refused: VecDeque::new(),
            known_topics,
            refused_topics: HashMap::new(),
            cluster_topics: None,
            capped: HashMap::new(),
            in_flight: 0,
            in_flight_bytes: 0,
            last_progress: Instant::now(),
            last_stall_log: None,
            metrics,
            health,
            signals: {
                let (accepted_tx, accepted_rx) = mpsc::unbounded_channel();
                Signals {
                    reader: signals.0,
                    commands: signals.1,
                    accepted_tx,
                    accepted_rx,
                    held: 0,
                }
            },
        }
    }

    /// Runs until `stop` turns true (then drains and returns `Ok`) or an error.
    pub(crate) async fn run(mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut acks = Vec::with_capacity(1024);
        let max_records = self.config.kafka.max_in_flight;
        let max_bytes = self.config.kafka.max_in_flight_bytes;
        loop {
            while let Some((txn, record)) = self.refused.pop_front() {
                self.produce(txn, record, false).await?;
            }
            let stopping = deadline.is_some();
            if stopping && !self.ledger.in_transaction() && self.in_flight == 0 {
                break;
            }
            let can_read = (!stopping || self.ledger.in_transaction())
                && self.in_flight < max_records
                && self.in_flight_bytes < max_bytes;
            tokio::select! {
                biased;
                () = stopped(stop), if !stopping => {
                    info!(in_flight = self.in_flight, "stopping: finishing the current transaction and waiting for acknowledgements");
                    let timeout = Duration::from_secs(self.config.kafka.shutdown_timeout_secs);
                    deadline = Some(tokio::time::Instant::now() + timeout);
                }
                () = sleep_until(deadline), if stopping => {
                    warn!(unacknowledged = self.in_flight, "shutdown timeout: records not acknowledged are produced again after the next start");
                    break;
                }
                _ = self.acks_rx.recv_many(&mut acks, 1024) => {
                    for ack in acks.drain(..) {
                        self.on_ack(ack)?;
                    }
                    self.confirm().await?;
                }
                Some(txn) = self.signals.accepted_rx.recv() => {
                    self.signals.held = self.signals.held.saturating_sub(1);
                    self.ledger.acknowledged(txn);
                    self.confirm().await?;
                }
                event = self.changes.next(), if can_read => {
                    self.on_event(event?).await?;
                }
                _ = tick.tick() => self.on_tick().await?,
            }
        }
        self.confirm().await?;
        info!(confirmed = %self.ledger.confirmable(), "stopped; confirmed position reported");
        self.changes.close().await?;
        Ok(())
    }

    async fn on_event(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Begin(b) => {
                let id = self.ledger.begin();
                self.txn = Some((id, TxnMeta::new(&b)));
            }
            Event::Commit(c) => {
                if let Some((id, _)) = self.txn.take() {
                    self.ledger.commit(id, c.end_lsn);
                }
                self.confirm().await?;
            }
            Event::Interrupted(i) => {
                // The server sends the transaction again from its Begin (see the ledger).
                if let Some((id, _)) = self.txn.take() {
                    info!(xid = i.xid, commit_lsn = %i.commit_lsn, "transaction interrupted by a reconnection; it is streamed again, and what was produced of it is the duplicate tail");
                    self.ledger.interrupted(id);
                }
                self.confirm().await?;
            }
            Event::Change(change) => {
                let Some((id, meta)) = &self.txn else {
                    // A non-transactional logical message (the heartbeat): nothing to deliver.
                    self.ledger.message(change.commit_lsn);
                    return self.confirm().await;
                };
                let id = *id;
                if let Some(read) = self.signals.reader.as_ref().and_then(|r| r.read(&change)) {
                    self.on_signal(id, &change, read);
                    return Ok(());
                }
                match self.router.route(&change, meta)? {
                    Routed::Event(record) => self.produce(id, record, true).await?,
                    Routed::DeadLetter(record) => {
                        warn!(
                            lsn = %record.lsn,
                            kind = header_text(&record, crate::record::ERROR_KIND),
                            error = header_text(&record, crate::record::ERROR),
                            topic = %record.topic,
                            "outbox row sent to the dead-letter topic"
                        );
                        self.produce(id, record, true).await?;
                    }
                    Routed::Skipped(why) => {
                        tracing::trace!(?why, "change skipped");
                        self.metrics.skipped.inc();
                    }
                }
            }
        }
        Ok(())
    }

    /// A row of the signal table: a command for the controller, held in the ledger until it
    /// is accepted; a row that is no signal only gets a warning.
    fn on_signal(
        &mut self,
        txn: TxnId,
        change: &walcast_replication::Change,
        read: std::result::Result<Option<Signal>, String>,
    ) {
        let signal = match read {
            Ok(Some(signal)) => signal,
            Ok(None) => {
                info!(lsn = %change.lsn, "signal row of a type walcast does not act on; ignored (it knows execute-snapshot and stop-snapshot)");
                return;
            }
            Err(why) => {
                warn!(lsn = %change.lsn, error = %why, "signal row ignored");
                return;
            }
        };
        info!(lsn = %change.lsn, signal = ?signal, "snapshot signal read; its transaction is confirmed once the request is stored");
        let back = self.signals.accepted_tx.clone();
        let command = signal.into_command(Box::new(move || {
            let _ = back.send(txn);
        }));
        self.ledger.produced(txn);
        self.signals.held += 1;
        if self.signals.commands.send(command).is_err() {
            // The closure went with the command: the transaction stays unconfirmed, so the
            // signal is read again after a restart; the stall check reports the stuck slot.
            warn!(lsn = %change.lsn, held = self.signals.held, "the snapshot controller is not running; the signal's transaction stays unconfirmed until the source restarts");
        }
    }

    /// Hands `record` to the producer (`counted`: not yet counted in the ledger). An event
    /// whose topic is refused or too small for it becomes a dead letter instead.
    async fn produce(&mut self, txn: TxnId, record: Record, counted: bool) -> Result<()> {
        if record.kind == RecordKind::Event {
            self.metrics.events_routed.inc();
        }
        if matches!(self.output, Output::Discard) {
            // Discard: as if acknowledged at once; nothing is ever confirmed.
            if counted {
                self.ledger.produced(txn);
            }
            self.ledger.acknowledged(txn);
            return Ok(());
        }
        let limit = match self.topic_limit(&record).await? {
            Ok(limit) => limit,
            Err(letter) => return self.dead_letter(txn, letter, counted).await,
        };
        let bytes = record.size();
        if record.kind == RecordKind::Event && bytes + FRAMING_BYTES > limit {
            let letter = Letter {
                error: format!(
                    "the record is {bytes} bytes, more than topic {}'s max.message.bytes = {limit} allows; the payload is left out here, read it from the outbox row by its id (or raise the topic's max.message.bytes)",
                    record.topic
                ),
                ..too_large(&record, "")
            };
            return self.dead_letter(txn, letter, counted).await;
        }
        self.ensure_producer(limit)?;
        let mut meta = Box::new(Meta {
            txn,
            kind: record.kind,
            bytes,
            commit_ms: record.timestamp_ms,
            lsn: record.lsn,
        });
        loop {
            let Output::Kafka { producer, .. } = &self.output else {
                return Ok(());
            };
            let producer = self.capped_producer(limit).unwrap_or(producer);
            match producer.send(&record, meta) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), m)) => {
                    meta = m;
                    // librdkafka's queue is larger than our bounds, so this is rare: wait
                    // for acknowledgements and try again.
                    let mut acks = Vec::new();
                    self.acks_rx.recv_many(&mut acks, 1024).await;
                    for ack in acks {
                        self.on_ack(ack)?;
                    }
                }
                Err((
                    error @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                    _,
                )) if record.kind == RecordKind::Event => {
                    self.metrics.delivery_errors.inc();
                    let letter = too_large(&record, &error.to_string());
                    return self.dead_letter(txn, letter, counted).await;
                }
                Err((source, _)) => {
                    return Err(Error::Delivery {
                        topic: record.topic.to_string(),
                        lsn: record.lsn,
                        source,
                    });
                }
            }
        }
        if counted {
            self.ledger.produced(txn);
        }
        self.in_flight += 1;
        self.in_flight_bytes += bytes;
        self.metrics.in_flight.set(self.in_flight as f64);
        Ok(())
    }

    /// Produces the dead letter of `letter` in place of the event it stands for.
    async fn dead_letter(&mut self, txn: TxnId, letter: Letter, counted: bool) -> Result<()> {
        warn!(
            lsn = %letter.lsn,
            kind = letter.kind,
            error = %walcast_config::text::excerpt(&letter.error, 1024),
            "event sent to the dead-letter topic"
        );
        let dead = self.router.dead_letters().record(letter);
        Box::pin(self.produce(txn, dead, counted)).await
    }

    fn on_ack(&mut self, ack: Ack) -> Result<()> {
        let Ack { meta, result } = ack;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(meta.bytes);
        self.metrics.in_flight.set(self.in_flight as f64);
        self.last_progress = Instant::now();
        match result {
            Ok(()) => {
                match meta.kind {
                    RecordKind::Event => {
                        self.metrics.events_published.inc();
                        self.metrics.bytes_published.inc_by(meta.bytes as u64);
                        let latency = (unix_millis() - meta.commit_ms).max(0) as f64 / 1000.0;
                        self.metrics.commit_to_ack.observe(latency);
                    }
                    RecordKind::DeadLetter => self.metrics.dead_letters.inc(),
                }
                self.ledger.acknowledged(meta.txn);
            }
            Err(refused) => {
                self.metrics.delivery_errors.inc();
                if !refused.too_large() || meta.kind == RecordKind::DeadLetter {
                    return Err(Error::Delivery {
                        topic: refused.topic,
                        lsn: meta.lsn,
                        source: refused.error,
                    });
                }
                warn!(lsn = %meta.lsn, topic = %refused.topic, error = %refused.error, "the broker refused an event as too large; sending it to the dead-letter topic");
                let letter = refused.into_letter(&meta);
                let dead = self.router.dead_letters().record(letter);
                // The dead letter takes the refused record's place in the ledger.
                self.refused.push_back((meta.txn, dead));
            }
        }
        Ok(())
    }

    /// Reports the confirmable LSN, if it moved (never in discard mode).
    async fn confirm(&mut self) -> Result<()> {
        if matches!(self.output, Output::Discard) {
            return Ok(());
        }
        if let Some(lsn) = self.ledger.take() {
            self.changes.confirm(lsn).await?;
            self.metrics.confirmed_lsn.set(lsn.as_u64());
        }
        Ok(())
    }

    /// Once a second: let status updates go out while blocked, and watch for a stalled broker.
    async fn on_tick(&mut self) -> Result<()> {
        if !matches!(self.output, Output::Discard) {
            // Sends a standby status update if one is due, even while reading is paused.
            let at = self.ledger.confirmable();
            self.changes.confirm(at).await?;
        }
        let stalled = self.in_flight > 0 && self.last_progress.elapsed() >= STALL_AFTER;
        if stalled {
            let waited = self.last_progress.elapsed().as_secs();
            self.health.set(
                false,
                &format!(
                    "Kafka has acknowledged nothing for {waited} s; {} records outstanding",
                    self.in_flight
                ),
            );
            if self
                .last_stall_log
                .is_none_or(|t| t.elapsed() >= STALL_AFTER)
            {
                self.last_stall_log = Some(Instant::now());
                warn!(
                    slot_lag_bytes = self.metrics.slot_lag.get(),
                    unacknowledged = self.in_flight,
                    waiting_secs = waited,
                    confirmed = %self.ledger.confirmable(),
                    "Kafka is not acknowledging; retrying, nothing is confirmed past the last acknowledged event and the slot lag grows"
                );
            }
        } else {
            if self.last_stall_log.take().is_some() {
                info!(confirmed = %self.ledger.confirmable(), "Kafka acknowledges again");
            }
            // The monitor measures stalled progress on its own connection; it turns readiness
            // off while the slot does not move, and this tick must not turn it back on.
            let stalled = Duration::from_secs_f64(self.metrics.progress_stalled.get().max(0.0));
            if stalled >= Duration::from_secs(self.config.postgres.stall_after_secs) {
                self.health.set(
                    false,
                    &crate::monitor::stall_reason(stalled, self.metrics.slot_lag.get()),
                );
            } else {
                self.health.set(
                    true,
                    &format!("streaming; confirmed {}", self.ledger.confirmable()),
                );
            }
        }
        Ok(())
    }
}

fn too_large(record: &Record, error: &str) -> Letter {
    Letter::too_large(
        record,
        format!(
            "the producer refused the record ({} bytes): {error}; the payload is left out here, read it from the outbox row by its id",
            record.size()
        ),
    )
}

fn header_text<'a>(record: &'a Record, name: &str) -> &'a str {
    record
        .header(name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("")
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
