//! Async Postgres logical replication client for walcast.
//!
//! placeholder docs

mod backoff;
mod change;
mod change_stream;
mod config;
mod connection;
mod copy_both;
mod error;
pub mod feedback;
pub mod management;
pub mod progress;
mod startup;
mod tail;
mod transport;
mod wire;

pub use backoff::Backoff;
pub use change::{Change, Event, Op, TxnBegin, TxnCommit};
pub use change_stream::{ChangeStream, ChangeStreamConfig};
pub use config::{ConnectConfig, Host, SslMode};
pub use connection::{
    CreatedSlot, ReplicationConnection, SnapshotAction, StartOptions, SystemIdentity,
};
pub use copy_both::ReplicationStream;
pub use error::{Error, Precondition, Result, ServerError, sqlstate_is_retryable};
pub use feedback::FeedbackStream;
pub use management::TableName;
pub use progress::{DEFAULT_STATUS_INTERVAL, Progress};
pub use tail::tail;
pub use walcast_pgoutput::Lsn;
