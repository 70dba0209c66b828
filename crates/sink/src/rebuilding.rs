//! The "rebuilding" marker of a target: a `walcast_rebuilding` row for its consumer group.
//!
//! Every rebuild (`walcast sink rebuild`, from the topic or from a peer) commits the row
//! *before* it empties the target, and deletes it in the transaction that writes the target's
//! final applied LSN. While the row exists the sink writes no applied LSN for the group
//! ([`crate::sql::STORE_APPLIED_LSN`]) and the query API's replica probe treats the database
//! as not eligible, so a half-built target never answers queries. A rebuild that dies leaves
//! the row: the target stays out of rotation until a rebuild runs again and completes.

use tokio_postgres::Client;
use walcast_pgoutput::Lsn;

use crate::error::{Error, Result};
use crate::sql;

/// Commits the marker of `group` (autocommit), with `mode` (`topic`, `peer <name>`).
pub(crate) async fn mark(client: &Client, target: &str, group: &str, mode: &str) -> Result<()> {
    client
        .execute(sql::MARK_REBUILDING, &[&group, &mode])
        .await
        .map_err(Error::pg(target, "writing the rebuilding marker"))?;
    Ok(())
}

/// Deletes the marker of `group` and writes the final applied LSN in one transaction.
pub(crate) async fn finish(
    client: &Client,
    target: &str,
    group: &str,
    applied: Option<Lsn>,
) -> Result<()> {
    let pg = |what: &str| Error::pg(target, what.to_owned());
    client.batch_execute("BEGIN").await.map_err(pg("BEGIN"))?;
    client
        .execute(sql::CLEAR_REBUILDING, &[&group])
        .await
        .map_err(pg("deleting the rebuilding marker"))?;
    if let Some(lsn) = applied {
        client
            .execute(sql::STORE_APPLIED_LSN, &[&group, &lsn.to_string()])
            .await
            .map_err(pg("writing walcast_applied_lsn"))?;
    }
    client.batch_execute("COMMIT").await.map_err(pg("COMMIT"))?;
    Ok(())
}

/// `rebuilding (<mode>) since <time>` when `group` has a marker (a database whose schema
/// predates the table has none).
pub(crate) async fn of(client: &Client, target: &str, group: &str) -> Result<Option<String>> {
    let pg = |what: &str| Error::pg(target, what.to_owned());
    let exists: bool = client
        .query_one("SELECT to_regclass('walcast_rebuilding') IS NOT NULL", &[])
        .await
        .map_err(pg("looking for walcast_rebuilding"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT mode, started_at::text FROM walcast_rebuilding WHERE consumer_group = $1",
            &[&group],
        )
        .await
        .map_err(pg("reading walcast_rebuilding"))?;
    Ok(row.map(|r| {
        format!(
            "rebuilding ({}) since {}",
            r.get::<_, String>(0),
            r.get::<_, String>(1)
        )
    }))
}
