//! walcast's sink connector: keeps read databases current from the events on a Kafka topic,
//! with exactly-once effects per target.
//!
//! ```text
//!                       ┌─ consumer walcast.sink.catalog_read ─▶ batch tx ─▶ catalog_read DB
//!  catalog.events ──────┼─ consumer walcast.sink.replica-1    ─▶ batch tx ─▶ replica-1 DB
//!  (key = aggregate id) ├─ consumer walcast.sink.replica-2    ─▶ batch tx ─▶ replica-2 DB
//!                       └─ consumer walcast.sink.replica-3    ─▶ batch tx ─▶ replica-3 DB
//!                                    │ poison
//!                                    └──────────────▶ catalog.events.dlq
//!
//!  batch tx = BEGIN; rebuild lock (shared); lock + check walcast_offsets;
//!             INSERT processed_events … RETURNING (skip seen ids); read row guards,
//!             tombstones and held changes FOR UPDATE;
//!             one multi-row upsert / update / delete per table and shape; tombstones;
//!             held changes stored / released;
//!             [DLQ produce + ack]; walcast_offsets; walcast_applied_lsn; COMMIT
//! ```
//!
//! * **Independent targets**: one task, consumer and connection per target; a target that is
//!   down falls behind alone (`pipeline.rs`).
//! * **Progress** is stored in each target's database in the batch's own transaction
//!   (`store/mod.rs`: the failure cases).
//! * **Bookkeeping is bounded**: `processed_events` and tombstones older than their `[prune]`
//!   windows are deleted in small batches by a task per target (`prune.rs`).
//! * **Projection** is declarative ([`config`], [`Projections`]): event type → table, key,
//!   columns from payload fields, upsert / update / delete, computed columns, upcasts of older
//!   event versions. Writes are version-guarded and deletes leave tombstones; an update of a
//!   missing row, and every event of a key held behind a database refusal, waits in
//!   `walcast_held` until it can apply (`plan.rs`; [`discard()`] releases a held key).
//!
//! The files are named like the source's for the same jobs (`docs/architecture.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = walcast_sink::SinkConfig::load("connectors/catalog-read-sink.toml".as_ref())?;
//! let listener = tokio::net::TcpListener::bind(config.admin.listen).await?;
//! walcast_sink::serve(config, listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

// Items are crate-private unless the crate's users (the binary, tests) need them.
#![warn(unreachable_pub)]

mod batch;
pub mod config;
mod copy;
mod dead_letter;
mod discard;
mod error;
mod kafka;
pub mod metrics;
mod monitor;
mod partitions;
mod pipeline;
mod plan;
mod progress;
mod projection;
mod prune;
mod rebuild;
mod rebuilding;
mod retention;
mod runner;
mod sql;
mod store;
mod text;
mod value;

pub use config::SinkConfig;
pub use copy::CopiedTable;
pub use discard::{Discard, DiscardReport, discard};
pub use error::{Error, Result};
pub use projection::{Projections, RejectKind, Rejection};
pub use rebuild::{RebuildFrom, RebuildReport, rebuild, rebuild_from};
pub use runner::{Sink, serve};

use std::time::Duration;

use tokio::sync::watch;

/// Sleeps `d` unless shutdown comes first; true on shutdown (or when `stop`'s sender is gone).
pub(crate) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}
