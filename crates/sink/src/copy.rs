//! `walcast sink rebuild --target T --from PEER`: T becomes a copy of another target of this
//! sink, taken at one consistent point, whatever the topic still holds.
//!
//! ```text
//!  PEER: BEGIN REPEATABLE READ READ ONLY            T: rebuild lock (exclusive, session)
//!        (one snapshot: rows, ids, offsets agree)      marker committed (walcast_rebuilding)
//!                                                       BEGIN; TRUNCATE read tables, processed_events,
//!        COPY (SELECT …) TO STDOUT (binary) ───────▶   tombstones, held; DELETE T's group rows
//!          per table, streamed, bounded memory         COPY … FROM STDIN per table
//!                                                       DELETE marker; COMMIT; unlock
//! ```
//!
//! The peer's rows of `walcast_offsets`, `walcast_applied_lsn` and `walcast_topic_partitions`
//! are copied under T's consumer group (the topic is the same: both are targets of this
//! connector file). The peer's sink keeps applying during the copy; the snapshot sees its
//! rows and its offsets as of one committed batch, so they agree.
//!
//! T's own running task finds the rebuild lock taken and waits. When the lock is released its
//! next batch finds the stored offsets moved (they are the copied ones), re-reads them and
//! seeks there: T resumes from the copied offsets. A copy that fails is rolled back whole: T
//! keeps what it had and the marker is removed again. A process that dies mid-copy leaves T as
//! it was but marked, so out of the query API's rotation until a rebuild completes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, pin_mut};
use tokio_postgres::Client;
use tracing::info;

use crate::config::SinkConfig;
use crate::error::{Error, Result};
use crate::projection::Projections;
use crate::rebuild::{RebuildReport, target_config};
use crate::runner::schema_files;
use crate::store::Store;
use crate::{rebuilding, sql};

/// One table copied from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedTable {
    pub table: String,
    pub rows: u64,
    pub elapsed: Duration,
}

/// A table to copy: all its rows, or (bookkeeping keyed by consumer group) the peer group's
/// rows of this topic, re-keyed to the target's group.
struct Spec {
    table: String,
    /// Whether the table has `consumer_group` (and maybe `topic`) to filter and re-key.
    grouped: bool,
    /// Whether the grouped table has a `topic` column.
    topical: bool,
}

impl Spec {
    fn all(table: &str) -> Spec {
        Spec {
            table: table.to_owned(),
            grouped: false,
            topical: false,
        }
    }

    fn group(table: &str, topical: bool) -> Spec {
        Spec {
            table: table.to_owned(),
            grouped: true,
            topical,
        }
    }
}

/// Every table a target holds: its read tables, then the bookkeeping.
fn specs(projections: &Projections) -> Vec<Spec> {
    let mut out: Vec<Spec> = projections
        .tables
        .iter()
        .map(|t| Spec::all(&t.name))
        .collect();
    out.extend([
        Spec::all("processed_events"),
        Spec::all("walcast_tombstones"),
        Spec::all("walcast_held"),
        Spec::group("walcast_offsets", true),
        Spec::group("walcast_applied_lsn", false),
        Spec::group("walcast_topic_partitions", true),
    ]);
    out
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The copyable columns of `table` (name, type), in order; empty when there is no such table.
async fn columns(client: &Client, db: &str, table: &str) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             AND a.attgenerated = '' ORDER BY a.attnum",
            &[&sql::q(table)],
        )
        .await
        .map_err(Error::pg(db, format!("reading the columns of {table}")))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The two statements of one table's copy: out of the peer, into the target.
fn statements(
    spec: &Spec,
    cols: &[(String, String)],
    groups: (&str, &str),
    topic: &str,
) -> (String, String) {
    let (peer_group, target_group) = groups;
    let names: Vec<String> = cols.iter().map(|(n, _)| sql::q(n)).collect();
    let select: Vec<String> = cols
        .iter()
        .map(|(n, _)| {
            if spec.grouped && n == "consumer_group" {
                format!("{}::text", literal(target_group))
            } else {
                sql::q(n)
            }
        })
        .collect();
    let mut filter = String::new();
    if spec.grouped {
        filter = format!(" WHERE consumer_group = {}", literal(peer_group));
        if spec.topical {
            filter.push_str(&format!(" AND topic = {}", literal(topic)));
        }
    }
    let table = sql::q(&spec.table);
    (
        format!(
            "COPY (SELECT {} FROM {table}{filter}) TO STDOUT (FORMAT binary)",
            select.join(", ")
        ),
        format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            names.join(", ")
        ),
    )
}

/// Names the first difference between the peer's and the target's columns of a table.
fn schema_difference(
    table: &str,
    (peer, peer_cols): (&str, &[(String, String)]),
    (target, target_cols): (&str, &[(String, String)]),
) -> Option<String> {
    if peer_cols.is_empty() {
        return Some(format!("{peer} has no table {table}"));
    }
    let find = |cols: &[(String, String)], name: &str| {
        cols.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone())
    };
    for (name, ty) in peer_cols {
        match find(target_cols, name) {
            None => {
                return Some(format!(
                    "{table}.{name} ({ty}) is on {peer} but not on {target}"
                ));
            }
            Some(t) if &t != ty => {
                return Some(format!(
                    "{table}.{name} is {ty} on {peer} but {t} on {target}"
                ));
            }
            Some(_) => {}
        }
    }
    target_cols
        .iter()
        .find(|(n, _)| find(peer_cols, n).is_none())
        .map(|(name, ty)| format!("{table}.{name} ({ty}) is on {target} but not on {peer}"))
}

/// Rebuilds `target` as a copy of `peer` (module docs).
pub(crate) async fn from_peer(
    config: &SinkConfig,
    target: &str,
    peer: &str,
) -> Result<RebuildReport> {
    let t = target_config(config, target)?;
    if peer == target {
        return Err(Error::Config(format!(
            "cannot rebuild {target} from itself; --from names another target of this sink \
             that is complete and current"
        )));
    }
    let p = target_config(config, peer).map_err(|e| {
        Error::Config(format!(
            "--from {peer}: the peer must be another target of this connector file (same \
             topic {}): {e}",
            config.kafka.topic
        ))
    })?;
    let started = Instant::now();
    let projections = Projections::compile(config)?;
    let schema = schema_files(config)?;
    let topic = config.kafka.topic.as_str();
    let (group, peer_group) = (config.group(target), config.group(peer));
    let store = Store::connect(target, &t.dsn, &group, topic).await?;
    store.apply_schema(&schema).await?;
    let source = Store::connect(peer, &p.dsn, &peer_group, topic).await?;
    let (tc, pc) = (store.client(), source.client());

    tc.execute(sql::REBUILD_LOCK_EXCLUSIVE, &[&group])
        .await
        .map_err(Error::pg(target, "taking the rebuild lock"))?;
    pc.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(Error::pg(peer, "opening the snapshot"))?;
    // Everything below reads the peer's one snapshot.
    if let Some(why) = rebuilding::of(pc, peer, &peer_group).await? {
        return Err(Error::Config(format!(
            "the peer {peer} is itself {why}: it is not complete; rebuild from a target that is"
        )));
    }
    if source.load_offsets().await?.is_empty() {
        return Err(Error::Config(format!(
            "the peer {peer} has consumed nothing of topic {topic} (no walcast_offsets rows \
             for {peer_group}); rebuild from a target that is complete and current"
        )));
    }
    let mut plan = Vec::new();
    for spec in specs(&projections) {
        let peer_cols = columns(pc, peer, &spec.table).await?;
        let target_cols = columns(tc, target, &spec.table).await?;
        if let Some(diff) =
            schema_difference(&spec.table, (peer, &peer_cols), (target, &target_cols))
        {
            return Err(Error::Config(format!(
                "{diff}: the two databases must have the same schema; apply the connector's \
                 [schema] files to both (the sink does at start) and run the rebuild again"
            )));
        }
        let sql = statements(&spec, &peer_cols, (&peer_group, &group), topic);
        plan.push((spec.table, sql));
    }

    rebuilding::mark(tc, target, &group, &format!("peer {peer}")).await?;
    info!(target = %target, peer = %peer, "rebuild lock taken and marker set; copying from the peer");
    let copied = match copy_all(tc, pc, target, &group, &projections, &plan).await {
        Ok(copied) => copied,
        Err(e) => {
            // Nothing of the copy is visible: the target is as it was, so unmark it again.
            let _ = tc.batch_execute("ROLLBACK").await;
            let _ = tc.execute(sql::CLEAR_REBUILDING, &[&group]).await;
            return Err(e);
        }
    };
    let _ = pc.batch_execute("COMMIT").await;
    let _ = tc.execute(sql::REBUILD_UNLOCK, &[&group]).await;
    let rows: u64 = copied.iter().map(|c| c.rows).sum();
    let elapsed = started.elapsed();
    info!(target = %target, peer = %peer, rows, seconds = elapsed.as_secs_f64(), "rebuild from peer done");
    Ok(RebuildReport {
        records: 0,
        dead_lettered: 0,
        elapsed,
        copied,
    })
}

/// The target's one transaction: empty it, copy every table, clear the marker, commit.
async fn copy_all(
    tc: &Client,
    pc: &Client,
    target: &str,
    group: &str,
    projections: &Projections,
    plan: &[(String, (String, String))],
) -> Result<Vec<CopiedTable>> {
    let pg = |what: &str| Error::pg(target, what.to_owned());
    let g = literal(group);
    tc.batch_execute(&format!(
        "BEGIN; {}; DELETE FROM walcast_offsets WHERE consumer_group = {g}; \
         DELETE FROM walcast_applied_lsn WHERE consumer_group = {g}; \
         DELETE FROM walcast_topic_partitions WHERE consumer_group = {g}",
        sql::truncate_all(&projections.tables),
    ))
    .await
    .map_err(pg("emptying the target"))?;
    let mut copied = Vec::with_capacity(plan.len());
    for (table, (out, into)) in plan {
        let started = Instant::now();
        let rows = stream(tc, pc, out, into)
            .await
            .map_err(pg(&format!("copying {table} from the peer")))?;
        copied.push(CopiedTable {
            table: table.clone(),
            rows,
            elapsed: started.elapsed(),
        });
    }
    tc.execute(sql::CLEAR_REBUILDING, &[&group])
        .await
        .map_err(pg("deleting the rebuilding marker"))?;
    tc.batch_execute("COMMIT").await.map_err(pg("COMMIT"))?;
    Ok(copied)
}

/// `out` on the peer streamed into `into` on the target; the rows written. Memory stays
/// bounded: the target's sink is fed as the peer's stream yields, a few kB at a time.
pub(crate) async fn stream(
    into_client: &Client,
    out_client: &Client,
    out: &str,
    into: &str,
) -> std::result::Result<u64, tokio_postgres::Error> {
    let rows = out_client.copy_out(out).await?;
    let sink = into_client.copy_in::<_, Bytes>(into).await?;
    pin_mut!(rows);
    pin_mut!(sink);
    sink.send_all(&mut rows).await?;
    sink.finish().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn cols(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn grouped_tables_are_filtered_and_re_keyed() {
        let c = cols(&[
            ("consumer_group", "text"),
            ("topic", "text"),
            ("next_offset", "bigint"),
        ]);
        let (out, into) = statements(
            &Spec::group("walcast_offsets", true),
            &c,
            ("walcast.sink.catalog_read", "walcast.sink.it's"),
            "catalog.events",
        );
        assert_eq!(
            out,
            "COPY (SELECT 'walcast.sink.it''s'::text, \"topic\", \"next_offset\" FROM \
             \"walcast_offsets\" WHERE consumer_group = 'walcast.sink.catalog_read' AND topic = \
             'catalog.events') TO STDOUT (FORMAT binary)"
        );
        assert_eq!(
            into,
            "COPY \"walcast_offsets\" (\"consumer_group\", \"topic\", \"next_offset\") FROM STDIN \
             (FORMAT binary)"
        );
        let (out, _) = statements(&Spec::all("processed_events"), &c, ("a", "b"), "t");
        assert!(
            out.contains("SELECT \"consumer_group\", \"topic\""),
            "{out}"
        );
        assert!(!out.contains("WHERE"), "{out}");
    }

    #[test]
    fn a_schema_difference_is_named() {
        let a = cols(&[("id", "uuid"), ("version", "integer")]);
        let b = cols(&[("version", "integer"), ("id", "uuid")]);
        assert_eq!(schema_difference("t", ("p", &a), ("x", &b)), None);
        let c = cols(&[("id", "uuid"), ("version", "bigint")]);
        assert_eq!(
            schema_difference("t", ("p", &a), ("x", &c)).unwrap(),
            "t.version is integer on p but bigint on x"
        );
        let d = cols(&[("id", "uuid"), ("version", "integer"), ("extra", "text")]);
        assert!(
            schema_difference("t", ("p", &a), ("x", &d))
                .unwrap()
                .contains("extra (text) is on x but not on p")
        );
        assert_eq!(
            schema_difference("t", ("p", &[]), ("x", &a)).unwrap(),
            "p has no table t"
        );
    }
}
