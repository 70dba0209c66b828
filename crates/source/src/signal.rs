//! The signal table: rows an operator (or `walcast snapshot start|cancel`) inserts into
//! `[snapshot] signal_table`, read through the WAL like the outbox, in Debezium's layout, so
//! Debezium runbooks carry over:
//!
//! ```text
//!  INSERT INTO public.walcast_signal (id, type, data) VALUES
//!    ('s1', 'execute-snapshot', '{"data-collections": ["public.products"], "type": "incremental"}'),
//!    ('s2', 'stop-snapshot',    '{"data-collections": ["public.products"], "type": "incremental"}');
//! ```
//!
//! * `execute-snapshot` starts a snapshot whose id is the row's `id` (so a signal read again
//!   after a restart starts nothing twice). `data-collections` lists `schema.table` names of
//!   `[[snapshot.tables]]` (a name without a schema means `public`); empty or absent means all
//!   of them. `type` may be `incremental` (the default) or `blocking`; walcast never pauses
//!   the stream, so both run the same way.
//! * `stop-snapshot` cancels the running snapshots of `data-collections` (all when empty), or,
//!   with the walcast key `"snapshot-id": "<id>"` in `data`, that one snapshot.
//! * Any other `type`, bad JSON, or a table that is not configured: a warning naming the row,
//!   and the row is ignored. A signal never stops the stream.
//!
//! The pipeline recognises INSERTs into the table before routing ([`SignalReader::read`]) and
//! holds the carrying transaction in the ledger until the snapshot controller has stored the
//! request (see `pipeline.rs`); UPDATEs and DELETEs of the table mean nothing.
//!
//! With `[postgres] create = true` the source creates the table when it is missing
//! ([`prepare`]), so the table is owned by the role that owns the publication it creates;
//! otherwise a missing table is a start-up error naming the DDL.

use serde::Deserialize;
use serde_json::Value;
use tokio_postgres::Client;
use tracing::info;
use walcast_config::text::excerpt;
use walcast_pgoutput::message::TupleValue;
use walcast_replication::{Change, Op, TableName};

use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::snapshot::{Accepted, Command};

/// `type` of a row that starts a snapshot.
pub const EXECUTE_SNAPSHOT: &str = "execute-snapshot";
/// `type` of a row that cancels snapshots.
pub const STOP_SNAPSHOT: &str = "stop-snapshot";
/// The walcast key in a `stop-snapshot` row's `data` naming the snapshot to cancel.
pub const SNAPSHOT_ID: &str = "snapshot-id";

/// Longest excerpt of a bad row quoted in a warning.
const QUOTE_BYTES: usize = 256;

/// The signal table of `config`: `[snapshot] signal_table`, when it is set and some
/// `[[snapshot.tables]]` are configured (signals can only ask for those).
pub fn table(config: &SourceConfig) -> Option<TableName> {
    if config.snapshot.tables.is_empty() {
        return None;
    }
    config.signal_table()
}

/// The DDL of the signal table.
pub fn ddl(table: &TableName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, type text NOT NULL, data text)",
        table.quoted()
    )
}

/// The `data` of an `execute-snapshot` row for `tables`.
pub fn execute_data(tables: &[String]) -> String {
    serde_json::json!({ "data-collections": tables, "type": "incremental" }).to_string()
}

/// The `data` of a `stop-snapshot` row: snapshot `id`, or the snapshots of `tables`.
pub fn stop_data(id: Option<&str>, tables: &[String]) -> String {
    let mut data = serde_json::json!({ "data-collections": tables, "type": "incremental" });
    if let (Some(id), Some(map)) = (id, data.as_object_mut()) {
        map.insert(SNAPSHOT_ID.into(), Value::String(id.to_owned()));
    }
    data.to_string()
}

/// Start-up: creates the signal table when it is missing and `[postgres] create` is set;
/// otherwise fails naming the DDL. Returns the table the pipeline watches (`None`: no
/// signals). That it is in the publication is checked (or added) with the outbox table by
/// the replication start-up.
pub(crate) async fn prepare(client: &Client, config: &SourceConfig) -> Result<Option<TableName>> {
    let Some(table) = table(config) else {
        return Ok(None);
    };
    let columns: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&table.quoted()],
        )
        .await
        .map_err(Error::postgres("looking up the signal table"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if columns.is_empty() {
        if !config.postgres.create {
            return Err(Error::MissingSignalTable {
                table: table.to_string(),
                ddl: ddl(&table),
            });
        }
        client
            .batch_execute(&ddl(&table))
            .await
            .map_err(Error::postgres(format!(
                "creating the signal table {table} ([postgres] create = true)"
            )))?;
        info!(table = %table, "signal table created");
        return Ok(Some(table));
    }
    if let Some(missing) = ["id", "type", "data"]
        .into_iter()
        .find(|c| !columns.iter().any(|p| p == c))
    {
        return Err(Error::MissingColumn {
            table: table.to_string(),
            column: missing.to_owned(),
            key: format!(
                "the signal table ([snapshot] signal_table; {})",
                ddl(&table)
            ),
        });
    }
    Ok(Some(table))
}

/// A signal row, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `execute-snapshot`: snapshot `tables` (empty: all) under `id`.
    Execute { id: String, tables: Vec<String> },
    /// `stop-snapshot`: cancel snapshot `id`, or the snapshots of `tables` (empty: all).
    Stop {
        signal: String,
        id: Option<String>,
        tables: Vec<String>,
    },
}

impl Signal {
    /// The controller's command, with `accepted` to call once it is stored.
    pub(crate) fn into_command(self, accepted: Accepted) -> Command {
        match self {
            Signal::Execute { id, tables } => Command::Start {
                id,
                tables,
                requested_by: "signal".into(),
                accepted: Some(accepted),
            },
            Signal::Stop { signal, id, tables } => Command::Cancel {
                id,
                tables,
                reason: format!("stop-snapshot signal {signal}"),
                accepted: Some(accepted),
            },
        }
    }
}

/// What `data` may hold (Debezium's keys, plus `snapshot-id`). Other keys are ignored.
#[derive(Debug, Default, Deserialize)]
struct Data {
    #[serde(rename = "data-collections", default)]
    data_collections: Vec<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(rename = "snapshot-id", default)]
    snapshot_id: Option<String>,
    #[serde(rename = "additional-conditions", default)]
    additional_conditions: Option<Value>,
}

/// Parses one row. `Ok(None)`: a type walcast does not act on. `Err`: why the row is
/// ignored (for the warning). `configured`: the `[[snapshot.tables]]` names.
pub(crate) fn parse(
    id: &str,
    kind: &str,
    data: Option<&str>,
    configured: &[TableName],
) -> std::result::Result<Option<Signal>, String> {
    if kind != EXECUTE_SNAPSHOT && kind != STOP_SNAPSHOT {
        return Ok(None);
    }
    let data: Data = match data.map(str::trim).filter(|d| !d.is_empty()) {
        None => Data::default(),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            format!(
                "data is not the JSON object {kind} expects ({e}): {}",
                excerpt(text, QUOTE_BYTES)
            )
        })?,
    };
    // Debezium reads the snapshot type case-insensitively ("INCREMENTAL" works there too).
    match data.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("incremental" | "blocking") => {}
        Some(_) => {
            let other = data.kind.as_deref().unwrap_or_default();
            return Err(format!(
                "data.type is \"{}\"; use \"incremental\" or \"blocking\"",
                excerpt(other, QUOTE_BYTES)
            ));
        }
    }
    let mut tables = Vec::with_capacity(data.data_collections.len());
    for name in &data.data_collections {
        let Some(table) = name
            .parse::<TableName>()
            .ok()
            .filter(|t| configured.contains(t))
        else {
            let known: Vec<String> = configured.iter().map(plain).collect();
            return Err(format!(
                "data-collections names \"{}\", which is not one of [[snapshot.tables]] ({}); name tables as schema.table",
                excerpt(name, QUOTE_BYTES),
                known.join(", ")
            ));
        };
        let table = plain(&table);
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    if kind == STOP_SNAPSHOT {
        return Ok(Some(Signal::Stop {
            signal: id.to_owned(),
            id: data.snapshot_id.filter(|s| !s.is_empty()),
            tables,
        }));
    }
    if data.additional_conditions.is_some() {
        return Err(
            "additional-conditions are not supported: a walcast snapshot reads whole tables; insert the signal without them".into(),
        );
    }
    if id.is_empty() {
        return Err("the id is empty; it becomes the snapshot's id".into());
    }
    Ok(Some(Signal::Execute {
        id: id.to_owned(),
        tables,
    }))
}

/// `schema.table`, unquoted (as `[[snapshot.tables]]` and the progress topic write it).
fn plain(t: &TableName) -> String {
    format!("{}.{}", t.schema, t.name)
}

/// Recognises signal rows among the changes. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct SignalReader {
    table: TableName,
    configured: Vec<TableName>,
}

impl SignalReader {
    pub(crate) fn new(table: TableName, config: &SourceConfig) -> SignalReader {
        SignalReader {
            table,
            configured: config
                .snapshot
                .tables
                .iter()
                .filter_map(|t| t.table.parse().ok())
                .collect(),
        }
    }

    /// `None`: not an INSERT into the signal table. Otherwise the parsed row: a signal, a
    /// type walcast does not act on (`Ok(None)`), or why the row is ignored.
    #[allow(clippy::type_complexity)]
    pub(crate) fn read(
        &self,
        change: &Change,
    ) -> Option<std::result::Result<Option<Signal>, String>> {
        if change.op != Op::Insert
            || change.schema.as_deref() != Some(&self.table.schema)
            || change.table.as_deref() != Some(&self.table.name)
        {
            return None;
        }
        let Some((relation, tuple)) = change
            .raw
            .as_ref()
            .and_then(|r| r.new.as_ref().map(|t| (&r.relation, t)))
        else {
            return Some(Err("the INSERT carried no row data".into()));
        };
        let column = |name: &str| {
            let i = relation.columns.iter().position(|c| c.name == name)?;
            tuple.columns.get(i)
        };
        let text = |name: &str| match column(name) {
            Some(TupleValue::Text(_)) => column(name)
                .and_then(TupleValue::as_text)
                .map(Some)
                .ok_or_else(|| format!("column {name} is not valid UTF-8")),
            Some(TupleValue::Null) | None => Ok(None),
            Some(_) => Err(format!("column {name} is not in text format")),
        };
        let row = (|| {
            let id = text("id")?.ok_or("the id column is missing or null")?;
            let kind = text("type")?.ok_or("the type column is missing or null")?;
            Ok::<_, String>((id, kind, text("data")?))
        })();
        Some(row.and_then(|(id, kind, data)| parse(id, kind, data, &self.configured)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod hold;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn configured() -> Vec<TableName> {
        vec![
            TableName::new("public", "products"),
            TableName::new("app", "orders"),
        ]
    }

    fn parse_ok(id: &str, kind: &str, data: Option<&str>) -> Option<Signal> {
        parse(id, kind, data, &configured()).unwrap()
    }

    #[test]
    fn execute_snapshot_in_debeziums_layout() {
        let s = parse_ok(
            "s1",
            "execute-snapshot",
            Some(
                r#"{"data-collections": ["public.products", "app.orders"], "type": "incremental"}"#,
            ),
        );
        assert_eq!(
            s,
            Some(Signal::Execute {
                id: "s1".into(),
                tables: vec!["public.products".into(), "app.orders".into()],
            })
        );
        // "blocking" runs the same way; a name without a schema is in public; repeats count once.
        let s = parse_ok(
            "s2",
            "execute-snapshot",
            Some(
                r#"{"data-collections": ["products", "public.products"], "type": "blocking", "other": 1}"#,
            ),
        );
        assert_eq!(
            s,
            Some(Signal::Execute {
                id: "s2".into(),
                tables: vec!["public.products".into()],
            })
        );
    }

    #[test]
    fn no_data_collections_means_every_configured_table() {
        for data in [
            None,
            Some(""),
            Some("{}"),
            Some(r#"{"data-collections": []}"#),
        ] {
            assert_eq!(
                parse_ok("all", "execute-snapshot", data),
                Some(Signal::Execute {
                    id: "all".into(),
                    tables: vec![]
                }),
                "{data:?}"
            );
        }
    }

    #[test]
    fn stop_snapshot_by_table_or_by_id() {
        assert_eq!(
            parse_ok(
                "c1",
                "stop-snapshot",
                Some(r#"{"data-collections": ["public.products"], "type": "incremental"}"#)
            ),
            Some(Signal::Stop {
                signal: "c1".into(),
                id: None,
                tables: vec!["public.products".into()],
            })
        );
        assert_eq!(
            parse_ok("c2", "stop-snapshot", None),
            Some(Signal::Stop {
                signal: "c2".into(),
                id: None,
                tables: vec![]
            })
        );
        let data = stop_data(Some("snap-7"), &[]);
        assert_eq!(
            parse_ok("c3", "stop-snapshot", Some(&data)),
            Some(Signal::Stop {
                signal: "c3".into(),
                id: Some("snap-7".into()),
                tables: vec![]
            })
        );
    }

    #[test]
    fn what_the_cli_writes_parses_back() {
        let tables = vec!["public.products".to_owned()];
        assert_eq!(
            parse_ok("x", EXECUTE_SNAPSHOT, Some(&execute_data(&tables))),
            Some(Signal::Execute {
                id: "x".into(),
                tables: tables.clone()
            })
        );
        assert_eq!(
            parse_ok("y", STOP_SNAPSHOT, Some(&stop_data(None, &tables))),
            Some(Signal::Stop {
                signal: "y".into(),
                id: None,
                tables
            })
        );
    }

    #[test]
    fn other_types_are_not_acted_on() {
        for kind in ["log", "pause-snapshot", "", "EXECUTE-SNAPSHOT"] {
            assert_eq!(parse_ok("z", kind, Some("not json at all")), None, "{kind}");
        }
    }

    #[test]
    fn bad_rows_are_refused_with_the_reason() {
        let cases = [
            ("execute-snapshot", "{not json", "not the JSON object"),
            ("execute-snapshot", "[1, 2]", "not the JSON object"),
            (
                "execute-snapshot",
                r#"{"data-collections": "public.products"}"#,
                "not the JSON object",
            ),
            (
                "execute-snapshot",
                r#"{"data-collections": ["public.customers"]}"#,
                "not one of [[snapshot.tables]] (public.products, app.orders)",
            ),
            (
                "execute-snapshot",
                r#"{"data-collections": ["a.b.c"]}"#,
                "schema.table",
            ),
            (
                "execute-snapshot",
                r#"{"type": "parallel"}"#,
                "\"incremental\" or \"blocking\"",
            ),
            (
                "execute-snapshot",
                r#"{"data-collections": ["public.products"], "additional-conditions": [{"data-collection": "public.products", "filter": "id > 1"}]}"#,
                "additional-conditions are not supported",
            ),
            ("stop-snapshot", "{", "not the JSON object"),
        ];
        for (kind, data, needle) in cases {
            let e = parse("bad", kind, Some(data), &configured()).unwrap_err();
            assert!(e.contains(needle), "{data}: {e}");
        }
        let e = parse("", EXECUTE_SNAPSHOT, None, &configured()).unwrap_err();
        assert!(e.contains("id is empty"), "{e}");
    }

    #[test]
    fn quotes_of_bad_rows_are_bounded_and_cut_on_characters() {
        let data = format!("{{\"data-collections\": [\"{}\"]}}", "é".repeat(10_000));
        let e = parse("big", EXECUTE_SNAPSHOT, Some(&data), &configured()).unwrap_err();
        assert!(e.len() < 2 * QUOTE_BYTES + 200, "{} bytes", e.len());
        let garbage = "ü".repeat(10_000);
        let e = parse("big", EXECUTE_SNAPSHOT, Some(&garbage), &configured()).unwrap_err();
        assert!(e.len() < 2 * QUOTE_BYTES + 200, "{} bytes", e.len());
    }

    #[test]
    fn signals_become_commands() {
        let start = Signal::Execute {
            id: "s".into(),
            tables: vec![],
        }
        .into_command(Box::new(|| {}));
        assert!(
            matches!(start, Command::Start { ref id, ref requested_by, accepted: Some(_), .. } if id == "s" && requested_by == "signal"),
            "{start:?}"
        );
        let stop = Signal::Stop {
            signal: "c".into(),
            id: Some("s".into()),
            tables: vec![],
        }
        .into_command(Box::new(|| {}));
        assert!(
            matches!(stop, Command::Cancel { id: Some(ref id), ref reason, accepted: Some(_), .. } if id == "s" && reason.contains("c")),
            "{stop:?}"
        );
    }
}
