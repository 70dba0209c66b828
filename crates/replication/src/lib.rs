//! Async Postgres logical replication client for walcast.
//!
//! placeholder docs

mod config;
mod connection;
mod copy_both;
mod error;
pub mod feedback;
pub mod progress;
mod startup;
mod transport;
mod wire;

pub use config::{ConnectConfig, Host, SslMode};
pub use connection::{
    CreatedSlot, ReplicationConnection, SnapshotAction, StartOptions, SystemIdentity,
};
pub use copy_both::ReplicationStream;
pub use error::{Error, Precondition, Result, ServerError, sqlstate_is_retryable};
pub use feedback::FeedbackStream;
pub use progress::{DEFAULT_STATUS_INTERVAL, Progress};
pub use walcast_pgoutput::Lsn;
