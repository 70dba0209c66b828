//! `walcast dlq discard`: release a key that a target holds behind one of its dead letters,
//! without replaying the dead letter.
//!
//! When a target's database refuses an event, the target dead-letters it and holds every later
//! event of the same key (`walcast_held`), so that a fixed replay of the dead letter applies
//! in order and the target converges ([`crate::plan`] module docs). When the dead letter is
//! not going to be replayed, `discard` removes the hold and, in the same transaction, applies
//! what waited behind it in position order. It runs in one transaction that takes the
//! target's rebuild lock shared and its offsets `FOR UPDATE`, so it never interleaves with a
//! batch or a rebuild; a running sink carries on afterwards.
//!
//! ```text
//! walcast dlq discard --config connectors/catalog-read-sink.toml --target replica-2 --event-id <uuid>
//! walcast dlq discard --config connectors/catalog-read-sink.toml --target replica-2 --aggregate <key>
//! ```

use crate::config::SinkConfig;
use crate::error::{Error, Result};
use crate::projection::Projections;
use crate::rebuild::target_config;
use crate::store::Store;

/// Which hold to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discard {
    /// The dead letter with this event id (the `id` header of the DLQ record).
    Event(uuid::Uuid),
    /// Every dead letter of this key (the aggregate id, as the read table's key prints it).
    Key(String),
}

impl Discard {
    /// [`Discard::Event`] from the text of an `id` header.
    pub fn event(id: &str) -> Result<Discard> {
        id.trim().parse().map(Discard::Event).map_err(|e| {
            Error::Config(format!(
                "--event-id {id:?} is not a UUID ({e}); give the dead letter's id header"
            ))
        })
    }
}

/// What a discard did.
#[derive(Debug, Clone, Default)]
pub struct DiscardReport {
    /// The keys released, as `(table, key)`.
    pub keys: Vec<(String, String)>,
    /// Held events applied (or found older than their row and discarded).
    pub released: u64,
    /// Held events still waiting: updates whose row does not exist.
    pub still_held: i64,
}

/// Releases the hold `what` on `target`, as described in the module docs. Nothing to release
/// is an error naming what is held.
pub async fn discard(config: &SinkConfig, target: &str, what: &Discard) -> Result<DiscardReport> {
    let t = target_config(config, target)?;
    let projections = Projections::compile(config)?;
    let group = config.group(target);
    let mut store = Store::connect(target, &t.dsn, &group, &config.kafka.topic).await?;
    store.discard(&projections, what).await
}
