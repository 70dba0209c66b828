//! Start-up check: the outbox table exists and has every column the connector file names,
//! so a typo fails at once with the column's name instead of dead-lettering every event.

use tokio_postgres::Client;
use tracing::debug;

use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::outbox::TopicTemplate;

/// Every column the config reads, with the key that names it: `("[outbox.columns] key",
/// "aggregate_id")`.
pub(crate) fn configured_columns(config: &SourceConfig) -> Vec<(String, String)> {
    let c = &config.outbox.columns;
    let mut out = vec![
        ("[outbox.columns] id".to_owned(), c.id.clone()),
        ("[outbox.columns] key".to_owned(), c.key.clone()),
        (
            "[outbox.columns] event_type".to_owned(),
            c.event_type.clone(),
        ),
        ("[outbox.columns] payload".to_owned(), c.payload.clone()),
    ];
    if !c.occurred_at.is_empty() {
        out.push((
            "[outbox.columns] occurred_at".to_owned(),
            c.occurred_at.clone(),
        ));
    }
    for (header, column) in &config.outbox.headers {
        out.push((format!("[outbox.headers] {header}"), column.clone()));
    }
    if let Ok(t) = TopicTemplate::parse(&config.kafka.topic) {
        for column in t.columns() {
            out.push(("[kafka] topic".to_owned(), column.to_owned()));
        }
    }
    out
}

/// Fails with [`Error::MissingTable`] or [`Error::MissingColumn`] (naming the column and the
/// config key) unless the outbox table has every configured column.
pub(crate) async fn check_columns(client: &Client, config: &SourceConfig) -> Result<()> {
    let table = config.table();
    let row = client
        .query_one(
            "SELECT to_regclass($1)::oid, current_database()::text",
            &[&table.quoted()],
        )
        .await
        .map_err(Error::postgres("looking up the outbox table"))?;
    let oid: Option<u32> = row.get(0);
    let database: String = row.get(1);
    let Some(oid) = oid else {
        return Err(Error::MissingTable {
            table: table.to_string(),
            database,
        });
    };
    let present: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&oid],
        )
        .await
        .map_err(Error::postgres("reading the outbox table's columns"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (key, column) in configured_columns(config) {
        if !present.contains(&column) {
            return Err(Error::MissingColumn {
                table: table.to_string(),
                column,
                key,
            });
        }
    }
    debug!(table = %table, columns = ?present, "outbox columns checked");
    Ok(())
}
