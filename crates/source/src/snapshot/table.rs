//! One snapshot table: its columns as the database has them (looked up once), the keyset
//! chunk query, and the record of one row.
//!
//! Every column is read as text (`col::text`) and turned into JSON by its type
//! ([`walcast_pgoutput::value::text_to_json`], the rendering of the live path's dead letters):
//! no per-type binary decoding, and `numeric` stays an exact string.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio_postgres::Client;
use uuid::Uuid;
use walcast_pgoutput::value::{pg_type, text_to_json};
use walcast_pgoutput::{Lsn, Timestamp};
use walcast_replication::TableName;

use crate::config::{FieldNaming, SnapshotTable};
use crate::error::{Error, Result};
use crate::record::{self, Record, RecordKind};

/// The payload field the sink reads the aggregate version from (`[envelope]
/// aggregate_version_field`, `version` by default); a snapshot payload always has it.
const VERSION_FIELD: &str = "version";

/// Namespace of the deterministic event ids of snapshot rows (UUID v5).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x5f1c_8d2e_7a43_4b6e_9c0d_7761_6c63_6173);

/// A column of the payload.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    field: String,
    type_oid: u32,
}

/// A snapshot table, checked against the database.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// `schema.table` as configured (progress, metrics, logs).
    pub label: String,
    event_type: Bytes,
    columns: Vec<Column>,
    version_oid: u32,
    /// `SELECT ...` of the first chunk, and of the chunks after a key.
    first_sql: String,
    next_sql: String,
}

/// One row as read: key, version and occurred_at (µs since the Unix epoch), then the payload
/// columns, all text.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub key: String,
    version: Option<String>,
    occurred_at_us: Option<i64>,
    values: Vec<Option<String>>,
}

impl Table {
    /// Looks the table up; fails naming the fix when it or one of its configured columns is
    /// missing (the start-up check).
    pub(crate) async fn load(
        client: &Client,
        t: &SnapshotTable,
        naming: FieldNaming,
    ) -> Result<Table> {
        let name: TableName = t.table.parse().map_err(|e| Error::SnapshotTable {
            table: t.table.clone(),
            problem: format!("is not a table name ({e}); write it as schema.table"),
        })?;
        let row = client
            .query_one(
                "SELECT to_regclass($1)::oid, current_database()::text",
                &[&name.quoted()],
            )
            .await
            .map_err(Error::postgres("looking up a snapshot table"))?;
        let oid: Option<u32> = row.get(0);
        let database: String = row.get(1);
        let Some(oid) = oid else {
            return Err(Error::SnapshotTable {
                table: t.table.clone(),
                problem: format!(
                    "does not exist in database \"{database}\"; create it, or remove it from [[snapshot.tables]]"
                ),
            });
        };
        let present: Vec<(String, u32, String)> = client
            .query(
                "SELECT attname::text, atttypid, format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(Error::postgres("reading a snapshot table's columns"))?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let find = |column: &str, key: &str, fix: &str| {
            present
                .iter()
                .find(|(n, _, _)| n == column)
                .cloned()
                .ok_or_else(|| Error::SnapshotTable {
                    table: t.table.clone(),
                    problem: format!("has no column \"{column}\" (configured as {key}); {fix}"),
                })
        };
        let key = find(
            &t.key,
            "key",
            "name the table's unique key column (its primary key)",
        )?;
        // Chunks follow the key: a key that is not unique, or NULL, would skip rows.
        let unique: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
                   ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL \
                   AND i.indnkeyatts = 1 AND a.attname = $2 AND a.attnotnull)",
                &[&oid, &key.0],
            )
            .await
            .map_err(Error::postgres("checking a snapshot table's key"))?
            .get(0);
        if !unique {
            return Err(Error::SnapshotTable {
                table: t.table.clone(),
                problem: format!(
                    "key column \"{}\" is not NOT NULL with a unique index of its own; chunks follow the key, so name the primary key (or add such an index)",
                    key.0
                ),
            });
        }
        let version = find(
            &t.version_column,
            "version_column",
            "add a version column that every write bumps in the same transaction as its outbox row, \
             e.g. ALTER TABLE ... ADD COLUMN version bigint NOT NULL DEFAULT 0 (docs/delivery-guarantees.md, \"Snapshots\")",
        )?;
        let occurred = find(
            &t.occurred_at_column,
            "occurred_at_column",
            "name the column every write sets to its outbox row's occurred_at (e.g. updated_at)",
        )?;
        let mut columns = Vec::new();
        let wanted: Vec<&(String, u32, String)> = if t.columns.is_empty() {
            present.iter().collect()
        } else {
            let mut w = Vec::new();
            for c in &t.columns {
                w.push(
                    present
                        .iter()
                        .find(|(n, _, _)| n == c)
                        .ok_or_else(|| Error::SnapshotTable {
                            table: t.table.clone(),
                            problem: format!(
                                "has no column \"{c}\" (listed in columns); fix the list or add the column"
                            ),
                        })?,
                );
            }
            w
        };
        for (column, oid, _) in wanted {
            let field = t
                .rename
                .get(column)
                .cloned()
                .unwrap_or_else(|| field_name(column, naming));
            columns.push(Column {
                name: column.clone(),
                field,
                type_oid: *oid,
            });
        }
        let select = format!(
            "SELECT {k}::text, {v}::text, (extract(epoch FROM {o}) * 1000000)::bigint{rest} FROM {table}",
            k = quote(&key.0),
            v = quote(&version.0),
            o = quote(&occurred.0),
            rest = columns
                .iter()
                .map(|c| format!(", {}::text", quote(&c.name)))
                .collect::<String>(),
            table = name.quoted(),
        );
        let order = format!("ORDER BY {} LIMIT $1", quote(&key.0));
        Ok(Table {
            label: t.table.clone(),
            event_type: Bytes::from(t.event_type.clone()),
            version_oid: version.1,
            first_sql: format!("{select} {order}"),
            next_sql: format!(
                "{select} WHERE {k} > $2::text::{ty} {order}",
                k = quote(&key.0),
                ty = key.2
            ),
            columns,
        })
    }

    /// The planner's row estimate, for ETAs (`None` before the first ANALYZE).
    pub(crate) async fn estimate(&self, client: &Client) -> Option<u64> {
        let name: TableName = self.label.parse().ok()?;
        let row = client
            .query_one(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)",
                &[&name.quoted()],
            )
            .await
            .ok()?;
        let n: i64 = row.try_get(0).ok()?;
        u64::try_from(n).ok()
    }

    /// Up to `limit` rows after `after` (from the start when `None`), in key order: one
    /// statement, so its own short transaction.
    pub(crate) async fn read_chunk(
        &self,
        client: &Client,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Row>> {
        let limit = i64::from(limit);
        let rows = match after {
            None => client.query(&self.first_sql, &[&limit]).await,
            Some(k) => client.query(&self.next_sql, &[&limit, &k]).await,
        }
        .map_err(Error::postgres(format!(
            "reading a chunk of {}",
            self.label
        )))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let text = |i: usize| r.try_get::<_, Option<String>>(i).ok().flatten();
            let Some(key) = text(0) else { continue };
            out.push(Row {
                key,
                version: text(1),
                occurred_at_us: r.try_get::<_, Option<i64>>(2).ok().flatten(),
                values: (0..self.columns.len()).map(|i| text(i + 3)).collect(),
            });
        }
        Ok(out)
    }

    /// The record of `row` on `topic`, for snapshot `snapshot`.
    pub(crate) fn record(
        &self,
        row: &Row,
        topic: &Arc<str>,
        snapshot: &str,
        now_ms: i64,
    ) -> Record {
        let mut payload = Map::new();
        for (c, v) in self.columns.iter().zip(&row.values) {
            payload.insert(c.field.clone(), json(c.type_oid, v.as_deref()));
        }
        if !payload.contains_key(VERSION_FIELD) {
            payload.insert(
                VERSION_FIELD.to_owned(),
                json(self.version_oid, row.version.as_deref()),
            );
        }
        let value = serde_json::to_vec(&Value::Object(payload)).unwrap_or_default();
        let mut headers = vec![
            (
                record::ID.into(),
                Bytes::from(self.event_id(row).to_string()),
            ),
            (record::EVENT_TYPE.into(), self.event_type.clone()),
        ];
        if let Some(ts) = row.occurred_at_us.and_then(Timestamp::from_unix_micros) {
            headers.push((record::OCCURRED_AT.into(), Bytes::from(ts.to_rfc3339())));
        }
        headers.push((record::SNAPSHOT.into(), Bytes::from(snapshot.to_owned())));
        Record {
            kind: RecordKind::Event,
            topic: topic.clone(),
            key: Some(Bytes::from(row.key.clone())),
            value: Some(Bytes::from(value)),
            headers,
            // The time of the read, not of the row's last write: retention counts from here.
            timestamp_ms: now_ms,
            lsn: Lsn::ZERO,
        }
    }

    /// UUID v5 of `table \0 key \0 version \0 occurred_at µs`: the same row state always has
    /// the same id, so a re-emitted row is skipped by the sinks' processed ids.
    fn event_id(&self, row: &Row) -> Uuid {
        let name = format!(
            "{}\0{}\0{}\0{}",
            self.label,
            row.key,
            row.version.as_deref().unwrap_or(""),
            row.occurred_at_us
                .map(|m| m.to_string())
                .unwrap_or_default()
        );
        Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
    }
}

/// A column's text as JSON by its type; a value that does not parse stays its text.
fn json(type_oid: u32, text: Option<&str>) -> Value {
    match text {
        None => Value::Null,
        // `bool::text` is `true`/`false`, unlike the output function's `t`/`f`.
        Some("true") if type_oid == pg_type::BOOL => Value::Bool(true),
        Some("false") if type_oid == pg_type::BOOL => Value::Bool(false),
        Some(s) => text_to_json(type_oid, s).unwrap_or_else(|_| Value::String(s.to_owned())),
    }
}

/// A column name as a payload field name.
fn field_name(column: &str, naming: FieldNaming) -> String {
    match naming {
        FieldNaming::AsIs => column.to_owned(),
        FieldNaming::CamelCase => {
            let mut out = String::with_capacity(column.len());
            let mut upper = false;
            for (i, c) in column.chars().enumerate() {
                if c == '_' && i > 0 && !out.is_empty() {
                    upper = true;
                } else if upper {
                    out.extend(c.to_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        }
    }
}

/// A quoted SQL identifier.
fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn table() -> Table {
        let col = |name: &str, field: &str, type_oid| Column {
            name: name.into(),
            field: field.into(),
            type_oid,
        };
        Table {
            label: "public.products".into(),
            event_type: Bytes::from_static(b"ProductSnapshot"),
            columns: vec![
                col("id", "productId", pg_type::UUID),
                col("price", "price", pg_type::NUMERIC),
                col("is_active", "isActive", pg_type::BOOL),
                col("stock", "stock", pg_type::INT4),
                col("ratio", "ratio", pg_type::FLOAT8),
                col("attrs", "attrs", pg_type::JSONB),
                col("note", "note", pg_type::TEXT),
                col("version", "version", pg_type::INT4),
            ],
            version_oid: pg_type::INT4,
            first_sql: String::new(),
            next_sql: String::new(),
        }
    }

    fn row(version: &str) -> Row {
        Row {
            key: "7d6f0e4e-0000-4000-8000-000000000001".into(),
            version: Some(version.into()),
            occurred_at_us: Some(1_795_420_184_123_456),
            values: vec![
                Some("7d6f0e4e-0000-4000-8000-000000000001".into()),
                Some("12.50".into()),
                Some("true".into()),
                Some("7".into()),
                Some("Infinity".into()),
                Some("{\"a\": [1]}".into()),
                None,
                Some(version.into()),
            ],
        }
    }

    #[test]
    fn a_row_becomes_one_event_with_typed_values_and_a_deterministic_id() {
        let t = table();
        let topic: Arc<str> = Arc::from("catalog.events");
        let r = t.record(&row("3"), &topic, "snap-1", 5);
        let value: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "productId": "7d6f0e4e-0000-4000-8000-000000000001",
                "price": "12.50", "isActive": true, "stock": 7, "ratio": "Infinity",
                "attrs": {"a": [1]}, "note": null, "version": 3
            })
        );
        assert_eq!(
            r.key.as_deref(),
            Some(&b"7d6f0e4e-0000-4000-8000-000000000001"[..])
        );
        let h = |n: &str| String::from_utf8(r.header(n).unwrap().to_vec()).unwrap();
        assert_eq!(h(record::EVENT_TYPE), "ProductSnapshot");
        assert_eq!(h(record::OCCURRED_AT), "2026-11-23T07:49:44.123456Z");
        assert_eq!(h(record::SNAPSHOT), "snap-1");
        assert!(r.header(record::COMMIT_LSN).is_none() && r.header(record::LSN).is_none());
        // Same state, same id (whatever the snapshot); another version, another id.
        let again = t.record(&row("3"), &topic, "snap-2", 9);
        assert_eq!(r.header(record::ID), again.header(record::ID));
        let newer = t.record(&row("4"), &topic, "snap-1", 5);
        assert_ne!(r.header(record::ID), newer.header(record::ID));
        assert_eq!(
            Uuid::parse_str(&h(record::ID)).unwrap().get_version_num(),
            5
        );
    }

    #[test]
    fn the_version_is_always_in_the_payload() {
        let mut t = table();
        t.columns.pop();
        let mut r = row("8");
        r.values.pop();
        let rec = t.record(&r, &Arc::from("t"), "s", 0);
        let value: Value = serde_json::from_slice(rec.value.as_deref().unwrap()).unwrap();
        assert_eq!(value["version"], 8);
    }

    #[test]
    fn field_names() {
        assert_eq!(field_name("is_active", FieldNaming::CamelCase), "isActive");
        assert_eq!(
            field_name("created_at", FieldNaming::CamelCase),
            "createdAt"
        );
        assert_eq!(field_name("_x_y", FieldNaming::CamelCase), "_xY");
        assert_eq!(field_name("ä_ö", FieldNaming::CamelCase), "äÖ");
        assert_eq!(field_name("is_active", FieldNaming::AsIs), "is_active");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
