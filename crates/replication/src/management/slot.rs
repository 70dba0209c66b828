//! Replication slots: look up, create if missing, check usable.

use tokio_postgres::Client;
use tracing::info;
use walcast_pgoutput::Lsn;

use crate::connection::validate_slot_name;
use crate::error::{Error, Precondition, Result};

/// A row of `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// Slot name.
    pub name: String,
    /// Output plugin (`pgoutput`), `None` for physical slots.
    pub plugin: Option<String>,
    /// `logical` or `physical`.
    pub slot_type: String,
    /// Database of a logical slot.
    pub database: Option<String>,
    /// The walsender streaming from it, if any.
    pub active_pid: Option<i32>,
    /// Where streaming resumes.
    pub confirmed_flush_lsn: Option<Lsn>,
}

impl SlotInfo {
    /// Fails unless this is a pgoutput slot of `database` that nobody streams from.
    pub fn check_usable(&self, database: &str) -> Result<()> {
        let unusable = |problem: String| {
            Err(Precondition::SlotUnusable {
                slot: self.name.clone(),
                problem,
            }
            .into())
        };
        if self.slot_type != "logical" {
            return unusable(format!("is a {} slot, not a logical one", self.slot_type));
        }
        if self.plugin.as_deref() != Some("pgoutput") {
            return unusable(format!(
                "uses output plugin '{}', not 'pgoutput'",
                self.plugin.as_deref().unwrap_or("")
            ));
        }
        if self.database.as_deref() != Some(database) {
            return unusable(format!(
                "belongs to database \"{}\", not \"{database}\"",
                self.database.as_deref().unwrap_or("")
            ));
        }
        if let Some(pid) = self.active_pid {
            return Err(Precondition::SlotInUse {
                slot: self.name.clone(),
                pid,
            }
            .into());
        }
        Ok(())
    }
}

/// The slot's row, or `None` if there is no such slot.
pub async fn slot_info(client: &Client, name: &str) -> Result<Option<SlotInfo>> {
    let row = client
        .query_opt(
            "SELECT slot_name::text, plugin::text, slot_type, database::text, active_pid, \
                    confirmed_flush_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(Error::sql("looking up the replication slot"))?;
    Ok(row.map(|r| SlotInfo {
        name: r.get(0),
        plugin: r.get(1),
        slot_type: r.get(2),
        database: r.get(3),
        active_pid: r.get(4),
        confirmed_flush_lsn: r.get::<_, Option<String>>(5).and_then(|s| s.parse().ok()),
    }))
}

/// Creates a pgoutput slot if there is none; returns its row and whether it
/// was created now.
pub async fn ensure_slot(client: &Client, name: &str) -> Result<(SlotInfo, bool)> {
    validate_slot_name(name)?;
    if let Some(info) = slot_info(client, name).await? {
        return Ok((info, false));
    }
    let created = match client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&name],
        )
        .await
    {
        Ok(row) => {
            let lsn: String = row.get(0);
            info!(slot = name, consistent_point = %lsn, "replication slot created");
            true
        }
        // Created concurrently by somebody else.
        Err(e) if e.code().map(|c| c.code()) == Some("42710") => false,
        Err(e) => return Err(Error::sql("creating the replication slot")(e)),
    };
    let info = slot_info(client, name).await?.ok_or_else(|| {
        Error::Protocol(format!(
            "replication slot \"{name}\" vanished right after creation"
        ))
    })?;
    Ok((info, created))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> SlotInfo {
        SlotInfo {
            name: "s".into(),
            plugin: Some("pgoutput".into()),
            slot_type: "logical".into(),
            database: Some("db".into()),
            active_pid: None,
            confirmed_flush_lsn: Some(Lsn(1)),
        }
    }

    #[test]
    fn usable_slot() {
        assert!(slot().check_usable("db").is_ok());
    }

    #[test]
    fn unusable_slots_explain_themselves() {
        let cases = [
            (
                SlotInfo {
                    active_pid: Some(4242),
                    ..slot()
                },
                "in use by another process (pid 4242)",
            ),
            (
                SlotInfo {
                    plugin: Some("wal2json".into()),
                    ..slot()
                },
                "uses output plugin 'wal2json'",
            ),
            (slot(), "belongs to database \"db\", not \"other\""),
        ];
        for (i, (s, needle)) in cases.into_iter().enumerate() {
            let db = if i == 2 { "other" } else { "db" };
            match s.check_usable(db) {
                Ok(()) => unreachable!("case {i} passed"),
                Err(e) => assert!(e.to_string().contains(needle), "{e}"),
            }
        }
    }
}
