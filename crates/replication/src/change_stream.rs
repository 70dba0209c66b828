//! [`ChangeStream`]: the replication client, the pgoutput decoder, the
//! relation cache and the value converter combined into a stream of
//! [`Event`]s that survives lost connections.
//!
//! ```text
//!  preflight (SQL) ─▶ START_REPLICATION ─▶ FeedbackStream ─▶ Decoder ─▶ RelationCache
//!                                             ▲                            │ value::tuple_to_json
//!                          confirm(lsn) ──────┘                            ▼
//!                                                     Begin, Change, Change, ..., Commit
//! ```
//!
//! # Memory
//!
//! Changes are decoded and handed out one at a time, as the server sends
//! them; a transaction is never buffered (the commit LSN is known from
//! Begin). The only buffer is the few events one message expands into (one
//! per table of a TRUNCATE). A 100,000-row transaction costs no more memory
//! than a one-row one. In-progress streaming (`streaming 'on'`) is not used:
//! the server spills large transactions to disk itself.
//!
//! # Reconnection and exactly-what-is-redelivered
//!
//! A retryable error (see [`Error::is_retryable`]) drops the connection and
//! reconnects with [`Backoff`], resuming at `R = max(confirmed by the caller,
//! the slot's confirmed_flush_lsn)`. The server then sends every transaction
//! whose commit record starts at or after `R`; the client additionally drops
//! any transaction whose commit LSN is before `R`. So a transaction the caller
//! confirmed (by its commit end LSN) is never repeated, and one it did not
//! confirm is delivered again from its Begin. When the connection breaks
//! after a Begin was handed out and before its Commit, the stream yields
//! [`Event::Interrupted`] for it first, so the caller drops what it holds of
//! that transaction instead of waiting for a Commit that never comes. The
//! progress rules are in [`crate::progress`].
//!
//! [`ChangeStream::next`] may be cancelled at any await point (a caller
//! `select!`s it against its own work, e.g. acknowledgements to confirm):
//! the backoff schedule of a reconnection in progress is kept in the stream,
//! so a cancelled wait resumes where it was instead of starting over.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};
use walcast_pgoutput::Lsn;
use walcast_pgoutput::message::{Decoder, LogicalMessage, Oid, Relation};
use walcast_pgoutput::relation::RelationCache;
use walcast_pgoutput::replication::XLogData;

use crate::change::{
    Event, Txn, TxnBegin, TxnCommit, TxnInterrupted, message_change, raw_row_change, row_change,
    truncate_changes,
};
use crate::connection::{ReplicationConnection, StartOptions, validate_slot_name};
use crate::error::{Error, Precondition, Result};
use crate::feedback::FeedbackStream;
use crate::management::{
    ServerFacts, TableName, ensure_publication, ensure_slot, preflight, slot_info,
};
use crate::progress::DEFAULT_STATUS_INTERVAL;
use walcast_config::Backoff;
use walcast_postgres::Dsn;

/// Settings of a [`ChangeStream`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChangeStreamConfig {
    /// Where to connect (also used for the SQL management connection).
    pub connect: Dsn,
    /// Replication slot.
    pub slot: String,
    /// Publication.
    pub publication: String,
    /// Tables that must be in the publication (and are added with `create`).
    pub tables: Vec<TableName>,
    /// Create the publication and the slot when missing.
    pub create: bool,
    /// Resume from here instead of the slot's position (never before it).
    pub start_lsn: Option<Lsn>,
    /// pgoutput protocol version (2 needs Postgres 14+).
    pub proto_version: u32,
    /// Period of standby status updates.
    pub status_interval: Duration,
    /// Reconnection schedule.
    pub backoff: Backoff,
    /// Hand out row changes undecoded, in [`crate::Change::raw`], instead of
    /// as JSON in `new`/`old` (cheaper, and values keep their exact text).
    pub raw_rows: bool,
}

impl ChangeStreamConfig {
    /// Protocol v2, status every 10 s, reconnect forever.
    pub fn new(
        connect: Dsn,
        slot: impl Into<String>,
        publication: impl Into<String>,
    ) -> ChangeStreamConfig {
        ChangeStreamConfig {
            connect,
            slot: slot.into(),
            publication: publication.into(),
            tables: Vec::new(),
            create: false,
            start_lsn: None,
            proto_version: 2,
            status_interval: DEFAULT_STATUS_INTERVAL,
            backoff: Backoff::default(),
            raw_rows: false,
        }
    }
}

/// A resumable stream of change events. See the module docs.
#[derive(Debug)]
pub struct ChangeStream {
    config: ChangeStreamConfig,
    facts: ServerFacts,
    stream: Option<FeedbackStream>,
    decoder: Decoder,
    relations: RelationCache,
    /// The same schemas, shared with the changes handed out (`raw_rows` only).
    raw_relations: HashMap<Oid, Arc<Relation>>,
    txn: Option<Txn>,
    skipping: bool,
    queue: VecDeque<Event>,
    confirmed: Lsn,
    resume: Lsn,
    retry: Retry,
}

/// A reconnection in progress; kept across cancelled calls of `next`.
#[derive(Debug, Default)]
struct Retry {
    /// Failed attempts so far.
    attempt: u32,
    /// When the next attempt is due, once scheduled.
    at: Option<tokio::time::Instant>,
    /// Why we are reconnecting (returned if the backoff gives up).
    cause: Option<Error>,
}

impl ChangeStream {
    /// Runs the preflight checks (creating publication and slot if asked),
    /// then starts streaming.
    pub async fn start(config: ChangeStreamConfig) -> Result<ChangeStream> {
        validate_slot_name(&config.slot)?;
        let client = walcast_postgres::connect_sql(&config.connect).await?;
        if config.create {
            ensure_publication(&client, &config.publication, &config.tables).await?;
        }
        let facts = preflight(
            &client,
            &config.publication,
            &config.tables,
            config.proto_version,
        )
        .await?;
        if config.create {
            ensure_slot(&client, &config.slot).await?;
        }
        drop(client);
        let mut cs = ChangeStream {
            decoder: Decoder::new(config.proto_version),
            confirmed: config.start_lsn.unwrap_or(Lsn::ZERO),
            config,
            facts,
            stream: None,
            relations: RelationCache::new(),
            raw_relations: HashMap::new(),
            txn: None,
            skipping: false,
            queue: VecDeque::new(),
            resume: Lsn::ZERO,
            retry: Retry::default(),
        };
        cs.stream = Some(cs.open().await?);
        Ok(cs)
    }

    /// The next event. Lost connections are re-established (see the module
    /// docs); an error here is unretryable, or the backoff gave up.
    ///
    /// Cancel safe: no event is lost or repeated by dropping the future, and
    /// a reconnection in progress keeps its schedule (see the module docs).
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(ev);
            }
            let Some(stream) = self.stream.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            match stream.next().await {
                Ok(Some(x)) => self.handle(x)?,
                Ok(None) => self.lost(Error::Closed("streaming replication")),
                Err(e) if e.is_retryable() => self.lost(e),
                Err(e) => return Err(self.explain(e)),
            }
        }
    }

    /// The walsender's "publication does not exist" while streaming means the publication was
    /// dropped under the slot; say what that means and how to get out of it.
    fn explain(&self, e: Error) -> Error {
        match &e {
            Error::Server(s)
                if s.code() == "42704"
                    && s.message()
                        .contains(&format!("\"{}\"", self.config.publication)) =>
            {
                Precondition::PublicationDropped {
                    publication: self.config.publication.clone(),
                    slot: self.config.slot.clone(),
                }
                .into()
            }
            _ => e,
        }
    }

    /// Everything up to `lsn` is durable downstream; see
    /// [`Event::confirm_lsn`] for which LSN to pass.
    pub async fn confirm(&mut self, lsn: Lsn) -> Result<()> {
        self.confirmed = self.confirmed.max(lsn);
        if let Some(s) = self.stream.as_mut()
            && let Err(e) = s.confirm(lsn).await
        {
            if !e.is_retryable() {
                return Err(e);
            }
            // next() notices the broken connection and reconnects.
            warn!(error = %e, "could not send status update");
        }
        Ok(())
    }

    /// Sends the confirmed position now and ends streaming cleanly.
    pub async fn close(mut self) -> Result<()> {
        match self.stream.take() {
            Some(s) => s.close().await,
            None => Ok(()),
        }
    }

    /// Highest LSN confirmed by the caller.
    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    /// The walsender's pid, while connected.
    pub fn backend_pid(&self) -> Option<i32> {
        self.stream.as_ref().map(FeedbackStream::backend_pid)
    }

    /// What the preflight checks found.
    pub fn server_facts(&self) -> &ServerFacts {
        &self.facts
    }

    /// Events decoded but not yet handed out (never more than one message's worth).
    pub fn buffered(&self) -> usize {
        self.queue.len()
    }

    /// Connects and starts streaming at `max(confirmed, slot position)`.
    async fn open(&mut self) -> Result<FeedbackStream> {
        let cfg = &self.config;
        let client = walcast_postgres::connect_sql(&cfg.connect).await?;
        let slot = match slot_info(&client, &cfg.slot).await? {
            Some(slot) => slot,
            // Dropped under us. With `create` the slot is made again, at the current position:
            // what was written while it was missing is not streamed (documented loss).
            None if cfg.create => {
                warn!(slot = %cfg.slot, confirmed = %self.confirmed, "replication slot is gone; creating it again at the current position (create = true): changes written while it was missing are not streamed, replay them from the tables");
                ensure_slot(&client, &cfg.slot).await?.0
            }
            None => {
                return Err(Precondition::SlotMissing {
                    slot: cfg.slot.clone(),
                }
                .into());
            }
        };
        slot.check_usable(&self.facts.database)?;
        drop(client);
        let resume = self
            .confirmed
            .max(slot.confirmed_flush_lsn.unwrap_or(Lsn::ZERO));
        let conn = ReplicationConnection::connect(&cfg.connect).await?;
        let opts = StartOptions {
            proto_version: cfg.proto_version,
            publications: vec![cfg.publication.clone()],
            messages: true,
            streaming: false,
        };
        let raw = conn.start_replication(&cfg.slot, resume, &opts).await?;
        self.resume = resume;
        self.decoder = Decoder::new(cfg.proto_version);
        self.relations = RelationCache::new();
        self.raw_relations.clear();
        self.txn = None;
        self.skipping = false;
        info!(slot = %cfg.slot, publication = %cfg.publication, %resume, pid = raw.backend_pid(), "streaming changes");
        Ok(FeedbackStream::new(raw, resume, cfg.status_interval))
    }

    /// The connection broke: drop it and start a reconnection schedule. A transaction whose
    /// Begin was handed out ends with [`Event::Interrupted`]: the server sends it again, whole,
    /// after the reconnection, and the caller must not wait for this copy's Commit.
    fn lost(&mut self, cause: Error) {
        self.stream = None;
        if let Some(txn) = self.txn.take()
            && !std::mem::take(&mut self.skipping)
        {
            warn!(xid = txn.xid, commit_lsn = %txn.commit_lsn, "connection lost inside a transaction; the server sends it again from its Begin");
            self.queue.push_back(Event::Interrupted(TxnInterrupted {
                xid: txn.xid,
                commit_lsn: txn.commit_lsn,
            }));
        }
        warn!(error = %cause, confirmed = %self.confirmed, "replication connection lost; reconnecting");
        self.retry = Retry {
            cause: Some(cause),
            ..Retry::default()
        };
    }

    /// Waits for the next attempt and makes it, until one succeeds. Every
    /// step is recorded in `self.retry` first, so cancelling this future
    /// loses nothing.
    async fn reconnect(&mut self) -> Result<()> {
        loop {
            let at = match self.retry.at {
                Some(at) => at,
                None => {
                    let Some(delay) = self.config.backoff.delay(self.retry.attempt) else {
                        return Err(self
                            .retry
                            .cause
                            .take()
                            .unwrap_or(Error::Closed("streaming replication")));
                    };
                    *self.retry.at.insert(tokio::time::Instant::now() + delay)
                }
            };
            tokio::time::sleep_until(at).await;
            match self.open().await {
                Ok(s) => {
                    self.stream = Some(s);
                    self.retry = Retry::default();
                    return Ok(());
                }
                Err(e) if e.is_retryable() => {
                    self.retry.attempt += 1;
                    self.retry.at = None;
                    debug!(error = %e, attempt = self.retry.attempt, "reconnect failed");
                    self.retry.cause = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn handle(&mut self, x: XLogData) -> Result<()> {
        let lsn = x.wal_start;
        let msg = self.decoder.decode_bytes(x.data)?;
        match msg {
            LogicalMessage::Begin(b) => {
                let txn = Txn::from_begin(&b);
                self.skipping = b.final_lsn < self.resume;
                if self.skipping {
                    debug!(xid = b.xid, commit_lsn = %b.final_lsn, resume = %self.resume, "skipping transaction confirmed before");
                } else {
                    self.queue.push_back(Event::Begin(TxnBegin {
                        xid: txn.xid,
                        commit_lsn: txn.commit_lsn,
                        commit_ts: txn.commit_ts,
                    }));
                }
                self.txn = Some(txn);
            }
            LogicalMessage::Commit(c) => {
                let txn = self.txn.take().ok_or_else(|| outside_txn("Commit"))?;
                if !std::mem::take(&mut self.skipping) {
                    self.queue.push_back(Event::Commit(TxnCommit {
                        xid: txn.xid,
                        commit_lsn: c.commit_lsn,
                        end_lsn: c.end_lsn,
                        commit_ts: c.commit_time,
                    }));
                }
            }
            LogicalMessage::Relation(r) => {
                if self.config.raw_rows {
                    self.raw_relations.insert(r.oid, Arc::new(r.clone()));
                }
                self.relations.insert(r);
            }
            m @ (LogicalMessage::Insert(_)
            | LogicalMessage::Update(_)
            | LogicalMessage::Delete(_)) => {
                let txn = self.txn.as_ref().ok_or_else(|| outside_txn("row change"))?;
                let change = if self.skipping {
                    None
                } else if self.config.raw_rows {
                    raw_row_change(txn, lsn, &self.raw_relations, m)?
                } else {
                    row_change(txn, lsn, &self.relations, &m)?
                };
                if let Some(c) = change {
                    self.queue.push_back(Event::Change(c));
                }
            }
            LogicalMessage::Truncate(t) => {
                let txn = self.txn.as_ref().ok_or_else(|| outside_txn("Truncate"))?;
                if !self.skipping {
                    let changes = truncate_changes(txn, lsn, &self.relations, &t)?;
                    self.queue.extend(changes.into_iter().map(Event::Change));
                }
            }
            LogicalMessage::Message(m) => match (&self.txn, m.transactional) {
                (Some(txn), true) => {
                    if !self.skipping {
                        let c = message_change(Some(txn), lsn, &m);
                        self.queue.push_back(Event::Change(c));
                    }
                }
                _ if m.lsn <= self.resume => {}
                _ => self
                    .queue
                    .push_back(Event::Change(message_change(None, lsn, &m))),
            },
            LogicalMessage::StreamStart(_)
            | LogicalMessage::StreamStop
            | LogicalMessage::StreamCommit(_)
            | LogicalMessage::StreamAbort(_) => {
                return Err(Error::Protocol(
                    "received an in-progress (streamed) transaction, but streaming was not requested"
                        .to_owned(),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

fn outside_txn(what: &str) -> Error {
    Error::Protocol(format!("{what} outside a transaction"))
}
