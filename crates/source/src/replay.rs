//! `walcast source replay`: outbox rows still in the table, published again as the records the
//! live stream made of them.
//!
//! ```text
//!  outbox table ── keyset page (one statement, its own short transaction) ──▶ rows as text
//!        ▲                                                                      │
//!        └──── next page after every record of this one is acknowledged ◀──┐    ▼
//!                                        Producer (acks=all, idempotent) ◀── Router::route_row
//!                                                                              (Origin::Replay)
//! ```
//!
//! * **Same records.** Each row goes through the live router ([`Router::route_row`]): same
//!   topic (templates included), key, value, headers `id`, `event_type`, `occurred_at` and
//!   `[outbox.headers]`; rows it cannot map become the same dead letters. Instead of the WAL
//!   position headers a replayed record carries `walcast.replay = true`, and its timestamp is
//!   the replay's time (so topic retention counts from the replay).
//! * **Same ids, so nothing is applied twice.** A sink skips an event id it has applied
//!   (`processed_events`), and every write is version-guarded, so a replay over a current
//!   target changes nothing.
//! * **Order.** Per aggregate by the payload's aggregate version (`version_field`, when the
//!   payload is JSON and the field a number), then `occurred_at`, then `id`; events without a
//!   version come first, in `occurred_at` order. Aggregates are read one after the other (key
//!   order), so one aggregate's events reach its partition in that order.
//! * **Bounded.** A page is at most `page_rows` rows and `page_bytes` bytes of row text
//!   (counted by the server, so a page of large rows is cut short), read by one statement in
//!   its own short transaction, never a long one holding back vacuum; the next page is read
//!   once the broker acknowledged every record of this one. Each page scans the selection for
//!   its keys (a top-N sort bounded by the LIMIT) and fetches only its own rows by `ctid`.
//! * **Refused when older than the tombstone window.** A sink keeps a deleted row's tombstone
//!   for its tombstone window; an event older than that could bring a deleted row back. The
//!   replay reads the oldest selected `occurred_at` first and refuses, naming
//!   `walcast sink rebuild`, when it is older than `max_age` (the binary passes the sink's
//!   `tombstone_window()`).
//! * **Topics are not created.** A replay publishes to topics the live stream already uses; a
//!   missing one stops it with the fix (nothing after that row is produced; a replay run again
//!   after the fix is harmless).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;
use tracing::{info, warn};
use walcast_kafka::TopicAdmin;
use walcast_pgoutput::Lsn;
use walcast_pgoutput::message::{Oid, Relation, TupleData, TupleValue};
use walcast_pgoutput::relation::{Column, ReplicaIdentity};
use walcast_pgoutput::value::pg_type;
use walcast_postgres::connect_sql;
use walcast_telemetry::metrics::Registry;

use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::kafka::{Ack, Meta, Producer};
use crate::metrics::SourceMetrics;
use crate::outbox::{self, Origin, Routed, Router};
use crate::progress::Ledger;
use crate::record::{Record, RecordKind};

/// Which outbox rows to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every row whose `occurred_at` is at or after this timestamp (any text Postgres reads
    /// as `timestamptz`, e.g. RFC 3339 `2026-11-30T12:00:00Z`).
    Since(String),
    /// The row with this event id.
    EventId(String),
    /// Every row of this aggregate.
    Aggregate(String),
}

impl std::fmt::Display for Selection {
    /// The command-line form: `--since 2026-11-30T12:00:00Z`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selection::Since(t) => write!(f, "--since {t:?}"),
            Selection::EventId(id) => write!(f, "--event-id {id:?}"),
            Selection::Aggregate(key) => write!(f, "--aggregate {key:?}"),
        }
    }
}

/// A replay to run.
#[derive(Debug, Clone)]
pub struct Request {
    pub selection: Selection,
    /// The oldest an event may be (the sinks' tombstone window); older: refused.
    pub max_age: Duration,
    /// The payload field holding the aggregate version (the sink's `aggregate_version_field`).
    pub version_field: String,
    /// Route and count, produce nothing.
    pub dry_run: bool,
    /// Rows read, produced and acknowledged per page, at most.
    pub page_rows: i64,
    /// Bytes of row text per page, at most (beyond a page's first row): what bounds memory
    /// when rows are large. The binary passes `[kafka] max_in_flight_bytes`.
    pub page_bytes: i64,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Rows read from the outbox table.
    pub rows: u64,
    /// Pages they were read in (statements that returned rows).
    pub pages: u64,
    /// Events acknowledged (or, in a dry run, routed) per topic.
    pub published: BTreeMap<String, u64>,
    /// Dead letters acknowledged (or routed) per dead-letter topic.
    pub dead_letters: BTreeMap<String, u64>,
    /// The oldest selected `occurred_at`, as Postgres prints it.
    pub oldest: Option<String>,
}

/// Replays the selected outbox rows (see the module docs); returns what was published.
pub async fn replay(config: &SourceConfig, request: &Request) -> Result<Summary> {
    let connect = config
        .postgres
        .dsn
        .clone()
        .with_application_name("walcast-replay");
    let client = connect_sql(&connect)
        .await
        .map_err(walcast_replication::Error::from)?;
    // Zone-less timestamps (`--since 2026-11-30 12:00`) are UTC, and so are those printed.
    client
        .batch_execute("SET TimeZone = 'UTC'")
        .await
        .map_err(Error::postgres("setting the session's time zone"))?;
    outbox::check_columns(&client, config).await?;
    let table = Table::read(&client, config).await?;
    let queries = Queries::new(config, &table, request)?;
    let mut summary = Summary::default();

    let extent = client
        .query_one(
            &queries.extent,
            &[&selection_param(request), &request.max_age.as_secs_f64()],
        )
        .await
        .map_err(Error::postgres(format!(
            "finding the rows to replay ({})",
            request.selection
        )))?;
    let (rows, undated, oldest, too_old): (i64, i64, Option<String>, bool) =
        (extent.get(0), extent.get(1), extent.get(2), extent.get(3));
    summary.oldest = oldest.clone();
    if undated > 0 {
        return Err(Error::Replay(format!(
            "{undated} of the {rows} selected outbox rows have no {} (null): their age cannot be \
             checked against the sinks' tombstone window; narrow the selection, or rebuild the \
             targets instead (walcast sink rebuild)",
            config.outbox.columns.occurred_at
        )));
    }
    if too_old {
        return Err(Error::Replay(format!(
            "the oldest selected event occurred at {}, longer ago than the sink's tombstone \
             window ({} s, [prune] tombstone_window_secs): a target may have forgotten a delete \
             that event precedes, and replaying it could bring a deleted row back; rebuild the \
             target instead (walcast sink rebuild --target T, or --from <peer>), or narrow the \
             selection",
            oldest.as_deref().unwrap_or("?"),
            request.max_age.as_secs()
        )));
    }
    info!(
        rows,
        oldest = oldest.as_deref().unwrap_or(""),
        dry_run = request.dry_run,
        "replaying outbox rows"
    );

    let mut router = Router::new(config);
    let mut out = if request.dry_run {
        None
    } else {
        Some(Output::new(config)?)
    };
    let timestamp_ms = unix_millis();
    let mut after: Option<[String; KEYSET]> = None;
    loop {
        let page = match &after {
            None => {
                client
                    .query(&queries.first, &[&selection_param(request)])
                    .await
            }
            Some([k, v, o, i, t]) => {
                let params: [&(dyn ToSql + Sync); 6] = [&selection_param(request), k, v, o, i, t];
                client.query(&queries.next, &params).await
            }
        }
        .map_err(Error::postgres("reading a page of outbox rows"))?;
        let Some(last) = page.last() else { break };
        summary.pages += 1;
        let mut keys: [String; KEYSET] = Default::default();
        for (c, key) in keys.iter_mut().enumerate() {
            *key = text(last, c)?.unwrap_or_default();
        }
        after = Some(keys);
        for row in &page {
            let tuple = TupleData {
                columns: (0..table.relation.columns.len())
                    .map(|c| {
                        Ok(match text(row, KEYSET + c)? {
                            Some(text) => TupleValue::Text(Bytes::from(text)),
                            None => TupleValue::Null,
                        })
                    })
                    .collect::<Result<_>>()?,
            };
            summary.rows += 1;
            let record =
                match router.route_row(&table.relation, &tuple, Origin::Replay { timestamp_ms }) {
                    Routed::Event(r) | Routed::DeadLetter(r) => r,
                    Routed::Skipped(_) => continue,
                };
            match &mut out {
                Some(out) => out.send(record, &router).await?,
                None => count(&mut summary, &record),
            }
        }
        if let Some(out) = &mut out {
            out.settle(&router, &mut summary).await?;
        }
    }
    Ok(summary)
}

/// Column `i` of a page row as text; an error, not a panic, when it is not UTF-8 (a
/// `SQL_ASCII` database).
fn text(row: &tokio_postgres::Row, i: usize) -> Result<Option<String>> {
    row.try_get(i).map_err(Error::postgres(
        "reading an outbox row as text (is the database's encoding UTF-8?)",
    ))
}

/// Adds an acknowledged (or, dry, routed) record to the summary.
fn count(summary: &mut Summary, record: &Record) {
    let per_topic = match record.kind {
        RecordKind::Event => &mut summary.published,
        RecordKind::DeadLetter => &mut summary.dead_letters,
    };
    *per_topic.entry(record.topic.to_string()).or_default() += 1;
}

fn selection_param(request: &Request) -> &str {
    match &request.selection {
        Selection::Since(s) | Selection::EventId(s) | Selection::Aggregate(s) => s,
    }
}

/// The outbox table's columns as the router sees them in a Relation message.
struct Table {
    relation: Arc<Relation>,
    /// Column name → SQL type (`format_type`), for casting keyset parameters back.
    types: BTreeMap<String, (Oid, String)>,
}

impl Table {
    async fn read(client: &Client, config: &SourceConfig) -> Result<Table> {
        let table = config.table();
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid, a.atttypmod, \
                 format_type(a.atttypid, a.atttypmod) \
                 FROM pg_attribute a WHERE a.attrelid = to_regclass($1) \
                 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&table.quoted()],
            )
            .await
            .map_err(Error::postgres("reading the outbox table's columns"))?;
        let mut columns = Vec::with_capacity(rows.len());
        let mut types = BTreeMap::new();
        for r in &rows {
            let (name, type_oid, type_modifier, sql_type): (String, Oid, i32, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            types.insert(name.clone(), (type_oid, sql_type));
            columns.push(Column {
                is_key: false,
                name,
                type_oid,
                type_modifier,
            });
        }
        Ok(Table {
            relation: Arc::new(Relation {
                xid: None,
                oid: 0,
                namespace: table.schema.clone(),
                name: table.name.clone(),
                replica_identity: ReplicaIdentity::Default,
                columns,
            }),
            types,
        })
    }

    fn sql_type(&self, column: &str) -> &str {
        self.types.get(column).map_or("text", |(_, t)| t.as_str())
    }
}

/// Result columns before the row's own: the keyset (aggregate, version, occurred_at, id, ctid).
const KEYSET: usize = 5;

/// The statements of one replay. `$1` is the selection; the next page's statement takes the
/// last row's keyset as `$2`..`$6`. A page is at most `page_rows` rows and, beyond its first
/// row, `page_bytes` bytes of row text, counted by the server.
struct Queries {
    extent: String,
    first: String,
    next: String,
}

impl Queries {
    fn new(config: &SourceConfig, table: &Table, request: &Request) -> Result<Queries> {
        let c = &config.outbox.columns;
        let occurred_at_type = table.types.get(&c.occurred_at).map(|(oid, _)| *oid);
        if !matches!(
            occurred_at_type,
            Some(pg_type::TIMESTAMPTZ | pg_type::TIMESTAMP)
        ) {
            return Err(Error::Replay(format!(
                "a replay orders events and checks their age by [outbox.columns] occurred_at, \
                 which must name a timestamptz column of the outbox table (it is \"{}\"); set it",
                c.occurred_at
            )));
        }
        let from = config.table().quoted();
        let (key, id, occ) = (ident(&c.key), ident(&c.id), ident(&c.occurred_at));
        let filter = match request.selection {
            Selection::Since(_) => format!("{occ} >= $1::text::timestamptz"),
            Selection::EventId(_) => format!("{id} = $1::text::{}", table.sql_type(&c.id)),
            Selection::Aggregate(_) => format!("{key} = $1::text::{}", table.sql_type(&c.key)),
        };
        let payload = match table.types.get(&c.payload).map(|(oid, _)| *oid) {
            Some(pg_type::JSONB) => Some(ident(&c.payload)),
            Some(pg_type::JSON) => Some(format!("{}::jsonb", ident(&c.payload))),
            _ => None,
        };
        // Rows without a version sort first (by occurred_at), so the expression is never null:
        // a null would break the row comparison of the keyset.
        let version = match payload {
            Some(p) => {
                let field = literal(&request.version_field);
                format!(
                    "(CASE WHEN jsonb_typeof({p} -> {field}) = 'number' \
                     THEN ({p} ->> {field})::numeric ELSE '-Infinity'::numeric END)"
                )
            }
            None => "'-Infinity'::numeric".to_owned(),
        };
        let (k, i) = (
            format!("coalesce({key}::text, '')"),
            format!("coalesce({id}::text, '')"),
        );
        let columns: Vec<String> = table
            .relation
            .columns
            .iter()
            .map(|col| format!("x.{}::text", ident(&col.name)))
            .collect();
        // ctid last: a tie-breaker for rows whose id is null or not unique.
        let keyset = format!("{k}, {version}, {occ}, {i}, ctid");
        // The page's keys first (the LIMIT right on the sort: a bounded top-N sort), then its
        // rows by ctid and tableoid (a partitioned outbox repeats ctids across partitions; same
        // statement, same snapshot), so the text of a row is made only for the rows of the
        // page; the running byte count is taken over those.
        let page = |after: &str| {
            format!(
                "SELECT * FROM (SELECT l.k, l.v::text, l.o::text, l.i, l.t::text, {}, \
                 row_number() OVER w AS n, sum(octet_length(x::text)) OVER w AS bytes FROM (\
                 SELECT {k} AS k, {version} AS v, {occ} AS o, {i} AS i, ctid AS t, tableoid AS r \
                 FROM {from} WHERE {filter} AND {occ} IS NOT NULL {after} ORDER BY {keyset} \
                 LIMIT {}) l JOIN {from} x ON x.ctid = l.t AND x.tableoid = l.r WINDOW w AS (ORDER BY l.k, l.v, l.o, l.i, l.t)) \
                 page WHERE n = 1 OR bytes <= {} ORDER BY n",
                columns.join(", "),
                request.page_rows.max(1),
                request.page_bytes.max(1),
            )
        };
        Ok(Queries {
            extent: format!(
                "SELECT count(*), count(*) FILTER (WHERE {occ} IS NULL), min({occ})::text, \
                 coalesce(min({occ}) < now() - make_interval(secs => $2::float8), false) \
                 FROM {from} WHERE {filter}"
            ),
            first: page(""),
            next: page(&format!(
                "AND ({keyset}) > ($2::text, $3::text::numeric, $4::text::{}, $5::text, \
                 $6::text::tid)",
                table.sql_type(&c.occurred_at)
            )),
        })
    }
}

/// `name` as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a SQL string literal (`standard_conforming_strings`, on since Postgres 9.1).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The producer side of a replay: the source's producer settings, every record acknowledged
/// before the next page is read.
struct Output {
    producer: Producer,
    acks: mpsc::UnboundedReceiver<Ack>,
    admin: TopicAdmin,
    /// Topics known to exist.
    topics: HashSet<Arc<str>>,
    /// Records handed to the producer and not yet acknowledged, by topic and kind.
    pending: BTreeMap<(String, bool), u64>,
    outstanding: usize,
    txn: crate::progress::TxnId,
}

impl Output {
    fn new(config: &SourceConfig) -> Result<Output> {
        let (tx, acks) = mpsc::unbounded_channel();
        let registry = Registry::default();
        let metrics = SourceMetrics::new(&registry, &config.postgres.slot);
        let producer = Producer::new(&config.kafka, metrics, tx)?;
        let admin = TopicAdmin::new(config.kafka.client())?;
        Ok(Output {
            producer,
            acks,
            admin,
            topics: HashSet::new(),
            pending: BTreeMap::new(),
            outstanding: 0,
            // Acknowledgements carry a ledger id; a replay confirms nothing, one id will do.
            txn: Ledger::new(Lsn(0)).begin(),
        })
    }

    /// Hands `record` to the producer (after checking its topic exists).
    async fn send(&mut self, record: Record, router: &Router) -> Result<()> {
        if !self.topics.contains(&record.topic) {
            self.admin.layout(&record.topic).await?;
            self.topics.insert(record.topic.clone());
        }
        let mut meta = Box::new(Meta {
            txn: self.txn,
            kind: record.kind,
            bytes: record.size(),
            commit_ms: record.timestamp_ms,
            lsn: record.lsn,
        });
        loop {
            match self.producer.send(&record, meta) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), m)) => {
                    meta = m;
                    let Some(ack) = self.acks.recv().await else {
                        break;
                    };
                    Box::pin(self.on_ack(ack, router)).await?;
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
        *self
            .pending
            .entry((record.topic.to_string(), record.kind == RecordKind::Event))
            .or_default() += 1;
        self.outstanding += 1;
        Ok(())
    }

    /// Waits for every record handed over so far; counts them into `summary`.
    async fn settle(&mut self, router: &Router, summary: &mut Summary) -> Result<()> {
        while self.outstanding > 0 {
            let Some(ack) = self.acks.recv().await else {
                break;
            };
            self.on_ack(ack, router).await?;
        }
        for ((topic, event), n) in std::mem::take(&mut self.pending) {
            let per_topic = if event {
                &mut summary.published
            } else {
                &mut summary.dead_letters
            };
            *per_topic.entry(topic).or_default() += n;
        }
        Ok(())
    }

    /// An event the broker refused as too large becomes a dead letter, as in the live stream;
    /// any other refusal stops the replay.
    async fn on_ack(&mut self, ack: Ack, router: &Router) -> Result<()> {
        self.outstanding = self.outstanding.saturating_sub(1);
        let refused = match ack.result {
            Ok(()) => return Ok(()),
            Err(refused) => refused,
        };
        let key = (refused.topic.clone(), ack.meta.kind == RecordKind::Event);
        if let Some(n) = self.pending.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
        if !refused.too_large() || ack.meta.kind == RecordKind::DeadLetter {
            return Err(Error::Delivery {
                topic: refused.topic,
                lsn: ack.meta.lsn,
                source: refused.error,
            });
        }
        warn!(topic = %refused.topic, error = %refused.error, "the broker refused a replayed event as too large; sending it to the dead-letter topic");
        let letter = refused.into_letter(&ack.meta);
        let dead = router.dead_letters().record(letter);
        Box::pin(self.send(dead, router)).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("aggregate_id"), "\"aggregate_id\"");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
