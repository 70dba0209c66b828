//! Publications: create if missing, check which tables they cover.

use std::fmt;
use std::str::FromStr;

use tokio_postgres::Client;
use tracing::info;

use crate::error::{Error, Precondition, Result};

/// A table name, `schema.table`; the schema defaults to `public`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// Schema (namespace).
    pub schema: String,
    /// Table.
    pub name: String,
}

impl TableName {
    /// A table in a schema.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> TableName {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// `"schema"."table"`, safe to splice into SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted())
    }
}

impl FromStr for TableName {
    type Err = Error;
    /// `table` or `schema.table`, unquoted (names are taken literally).
    fn from_str(s: &str) -> Result<TableName> {
        let (schema, name) = s.split_once('.').unwrap_or(("public", s));
        if schema.is_empty() || name.is_empty() || name.contains('.') {
            return Err(Error::Config(format!(
                "table '{s}' is not of the form schema.table"
            )));
        }
        Ok(TableName::new(schema, name))
    }
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The tables a publication publishes, or `None` if it does not exist.
pub async fn publication_tables(
    client: &Client,
    publication: &str,
) -> Result<Option<Vec<TableName>>> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(Error::sql("looking up the publication"))?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .map_err(Error::sql("listing the publication's tables"))?;
    Ok(Some(
        rows.iter()
            .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect(),
    ))
}

/// Creates the publication `FOR TABLE tables` if missing, and adds any of
/// `tables` it lacks. Every table must exist. Only what is missing is created: an
/// existing publication needs no `tables` (nothing is added then).
pub async fn ensure_publication(
    client: &Client,
    publication: &str,
    tables: &[TableName],
) -> Result<()> {
    for t in tables {
        check_table_exists(client, t).await?;
    }
    match publication_tables(client, publication).await? {
        None if tables.is_empty() => {
            return Err(Error::Config(format!(
                "publication \"{publication}\" does not exist and no table was named to create it with; name at least one table (--table schema.table)"
            )));
        }
        None => {
            let list = tables
                .iter()
                .map(TableName::quoted)
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "CREATE PUBLICATION {} FOR TABLE {list}",
                quote_ident(publication)
            );
            match client.batch_execute(&sql).await {
                Ok(()) => info!(publication, tables = %list, "publication created"),
                // Somebody else created it just now: check it below.
                Err(e) if e.code().map(|c| c.code()) == Some("42710") => {}
                Err(e) => return Err(Error::sql("creating the publication")(e)),
            }
        }
        Some(existing) => {
            let missing: Vec<_> = tables.iter().filter(|t| !existing.contains(t)).collect();
            if !missing.is_empty() {
                let add = missing
                    .iter()
                    .map(|t| t.quoted())
                    .collect::<Vec<_>>()
                    .join(", ");
                client
                    .batch_execute(&format!(
                        "ALTER PUBLICATION {} ADD TABLE {add}",
                        quote_ident(publication)
                    ))
                    .await
                    .map_err(Error::sql("adding tables to the publication"))?;
                info!(publication, tables = %add, "tables added to publication");
            }
        }
    }
    Ok(())
}

/// Fails with [`Precondition::PublicationMissing`] /
/// [`Precondition::PublicationMissingTable`] unless `publication` covers all `tables`.
pub(crate) async fn check_publication(
    client: &Client,
    publication: &str,
    database: &str,
    tables: &[TableName],
) -> Result<Vec<TableName>> {
    let Some(published) = publication_tables(client, publication).await? else {
        return Err(Precondition::PublicationMissing {
            publication: publication.to_owned(),
            database: database.to_owned(),
        }
        .into());
    };
    for t in tables {
        if !published.contains(t) {
            check_table_exists(client, t).await?;
            return Err(Precondition::PublicationMissingTable {
                publication: publication.to_owned(),
                table: t.quoted(),
            }
            .into());
        }
    }
    Ok(published)
}

async fn check_table_exists(client: &Client, t: &TableName) -> Result<()> {
    let found = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t.quoted()])
        .await
        .map_err(Error::sql("looking up a table"))?
        .get::<_, bool>(0);
    if found {
        Ok(())
    } else {
        Err(Precondition::TableMissing { table: t.quoted() }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_quotes_table_names() {
        let t: TableName = "app.Orders"
            .parse()
            .unwrap_or_else(|_| TableName::new("", ""));
        assert_eq!(t, TableName::new("app", "Orders"));
        assert_eq!(t.quoted(), "\"app\".\"Orders\"");
        let t: TableName = "items".parse().unwrap_or_else(|_| TableName::new("", ""));
        assert_eq!(t.quoted(), "\"public\".\"items\"");
        assert!("a.b.c".parse::<TableName>().is_err());
        assert!(".x".parse::<TableName>().is_err());
        assert_eq!(
            TableName::new("s", "we\"ird").quoted(),
            "\"s\".\"we\"\"ird\""
        );
    }
}
