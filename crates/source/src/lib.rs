//! walcast's outbox source connector: outbox INSERTs, read from the write database's WAL
//! through a logical replication slot, become Kafka records in the layout of Debezium's
//! outbox event router, and the slot is confirmed only up to what the broker acknowledged.
//!
//! ```text
//!  write app: BEGIN; UPDATE products …; INSERT INTO outbox_messages …; COMMIT
//!                                   │ WAL
//!   slot (pgoutput) ─▶ ChangeStream (walcast-replication, raw rows)
//!                           │ Begin / Change / Commit, in commit order
//!                           ▼
//!                      outbox::Router ── not mappable ──▶ <topic>.dlq
//!                           │ Record: key = aggregate id, value = payload text,
//!                           ▼         headers id, event_type, occurred_at, walcast.*
//!                      Producer (idempotent, acks=all, murmur2) ─▶ catalog.events
//!                           │ acknowledgements
//!                           ▼
//!                      Ledger ─▶ confirm(commit end LSN) ─▶ slot's confirmed_flush_lsn
//! ```
//!
//! The files, named like the sink's for the same jobs (`docs/architecture.md`):
//!
//! * [`record`]: the record layout (headers and what they hold).
//! * `outbox/`: routing, topic templates, the start-up column check; `dead_letter.rs`: what
//!   cannot be published, and how a dead letter always fits.
//! * `progress.rs`: **the confirm rule** — exactly when an LSN may be confirmed, and what
//!   happens on `kill -9`, a broker outage or a shutdown mid-transaction.
//! * [`signal`]: rows of the signal table (Debezium's `execute-snapshot`, `stop-snapshot`)
//!   become snapshot commands; the pipeline holds their transaction until they are stored.
//! * `pipeline.rs`: the loop, bounded in-flight records, graceful shutdown; `kafka.rs`: the
//!   producer; `monitor.rs`: slot lag, stall detection, heartbeat.
//! * `runner.rs`: the supervisor ([`Source`]) and [`serve`]; [`metrics`]: metric names.
//!
//! Errors are one type, [`Error`]; retryable ones make the source start over from the
//! confirmed LSN with backoff ([`Source::run`]), the others stop it with a message naming
//! the cause and the fix.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use walcast_source::{Options, SourceConfig};
//! let config = SourceConfig::load("connectors/catalog-outbox-source.toml".as_ref())?;
//! let listener = tokio::net::TcpListener::bind(config.admin.listen).await?;
//! walcast_source::serve(config, Options::default(), listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

// Items are crate-private unless the crate's users (the binary, tests) need them.
#![warn(unreachable_pub)]

pub mod config;
mod dead_letter;
mod error;
mod kafka;
pub mod metrics;
mod monitor;
mod outbox;
mod pipeline;
mod progress;
pub mod record;
mod runner;
pub mod signal;
mod snapshot;

pub use config::SourceConfig;
pub use error::{Error, Result};
pub use monitor::HEARTBEAT_PREFIX;
pub use runner::{Options, Source, serve};

use tokio::sync::watch;

/// Completes once `stop` is true (or its sender is gone). The `watch::Ref` never outlives
/// this function, which keeps the futures that wait on it `Send`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
