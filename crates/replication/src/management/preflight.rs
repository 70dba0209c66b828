//! Checks run before streaming, so that a misconfigured server fails at
//! startup with a message saying what to change, rather than later with a
//! bare SQLSTATE.

use tokio_postgres::Client;
use tracing::debug;

use super::publication::{TableName, check_publication};
use crate::error::{Error, Precondition, Result};

/// What the server told us during [`preflight`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `server_version`, e.g. `15.18 (Debian ...)`.
    pub version: String,
    /// `server_version_num`, e.g. `150018`.
    pub version_num: u32,
    /// The connected role.
    pub role: String,
    /// The connected database.
    pub database: String,
    /// Tables in the publication.
    pub published_tables: Vec<TableName>,
}

/// Checks, in this order: server version (10+, 14+ for `proto_version` 2),
/// `wal_level = logical`, the REPLICATION attribute, the publication and
/// that it covers `tables`, and that every published table can replicate
/// UPDATE/DELETE (primary key or a replica identity).
pub async fn preflight(
    client: &Client,
    publication: &str,
    tables: &[TableName],
    proto_version: u32,
) -> Result<ServerFacts> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
                    current_setting('wal_level'), current_user::text, current_database()::text, \
                    r.rolreplication, r.rolsuper \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(Error::sql("reading server settings"))?;
    let version: String = row.get(0);
    let version_num = u32::try_from(row.get::<_, i32>(1)).unwrap_or(0);
    let wal_level: String = row.get(2);
    let role: String = row.get(3);
    let database: String = row.get(4);
    let (replication, superuser): (bool, bool) = (row.get(5), row.get(6));

    if version_num < 100_000 {
        return Err(Precondition::ServerTooOld {
            version,
            feature: "logical replication with pgoutput",
            required: 10,
            alternative: "",
        }
        .into());
    }
    if proto_version >= 2 && version_num < 140_000 {
        return Err(Precondition::ServerTooOld {
            version,
            feature: "pgoutput protocol version 2",
            required: 14,
            alternative: "; or configure proto_version 1",
        }
        .into());
    }
    if wal_level != "logical" {
        return Err(Precondition::WalLevel { actual: wal_level }.into());
    }
    if !replication && !superuser {
        return Err(Precondition::MissingReplicationRole { role }.into());
    }
    let published_tables = check_publication(client, publication, &database, tables).await?;
    check_replica_identity(client, publication).await?;
    debug!(%version, %role, %database, publication, tables = published_tables.len(), "preflight passed");
    Ok(ServerFacts {
        version,
        version_num,
        role,
        database,
        published_tables,
    })
}

/// UPDATE and DELETE on a table with `REPLICA IDENTITY DEFAULT` and no primary
/// key (or `NOTHING`) fail on the *source* once the table is in a publication
/// that publishes them; catch it here, naming the fix.
async fn check_replica_identity(client: &Client, publication: &str) -> Result<()> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text, \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_publication p \
             JOIN pg_publication_tables pt ON pt.pubname = p.pubname \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE p.pubname = $1 AND (p.pubupdate OR p.pubdelete) \
             ORDER BY 1",
            &[&publication],
        )
        .await
        .map_err(Error::sql("checking replica identities"))?;
    for r in rows {
        let table = TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)).quoted();
        let (ident, has_pk): (String, bool) = (r.get(2), r.get(3));
        let reason = match ident.as_str() {
            "d" if !has_pk => "has no primary key and REPLICA IDENTITY DEFAULT",
            "n" => "has REPLICA IDENTITY NOTHING",
            _ => continue,
        };
        return Err(Precondition::NoReplicaIdentity { table, reason }.into());
    }
    Ok(())
}
