//! The raw CopyBoth stream after `START_REPLICATION`: replication messages
//! in, standby status updates out. No policy here; see [`crate::feedback`] for
//! when to send which LSN.

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tracing::debug;
use walcast_pgoutput::replication::{ReplicationMessage, StandbyStatusUpdate};

use crate::error::Result;
use crate::wire::{Backend, Wire, server_error, unexpected};

/// A connection in CopyBoth mode.
#[derive(Debug)]
pub struct ReplicationStream {
    wire: Wire,
    slot: String,
    backend_pid: i32,
    done: bool,
    scratch: BytesMut,
}

impl ReplicationStream {
    pub(crate) fn new(wire: Wire, slot: String, backend_pid: i32) -> ReplicationStream {
        ReplicationStream {
            wire,
            slot,
            backend_pid,
            done: false,
            scratch: BytesMut::with_capacity(StandbyStatusUpdate::LEN),
        }
    }

    /// The slot being streamed.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// The walsender's process id (for `pg_stat_replication`,
    /// `pg_terminate_backend`).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// The next XLogData or keepalive; `None` once the server ended the copy.
    ///
    /// Cancel safe.
    pub async fn recv(&mut self) -> Result<Option<ReplicationMessage>> {
        const DOING: &str = "streaming replication";
        if self.done {
            return Ok(None);
        }
        loop {
            match self.wire.recv(DOING).await? {
                Backend::Message(Message::CopyData(body)) => {
                    return Ok(Some(ReplicationMessage::parse_bytes(body.into_bytes())?));
                }
                Backend::Message(Message::CopyDone) => {
                    debug!(slot = %self.slot, "server ended the replication stream");
                    self.done = true;
                    return Ok(None);
                }
                // A walsender that stops with the server (smart or fast shutdown) sends
                // everything, then `CommandComplete` without a `CopyDone`, and exits.
                Backend::Message(Message::CommandComplete(_) | Message::ReadyForQuery(_)) => {
                    debug!(slot = %self.slot, "server finished the replication command (shutting down?)");
                    self.done = true;
                    return Ok(None);
                }
                Backend::Message(Message::ErrorResponse(e)) => {
                    self.done = true;
                    return Err(server_error(&e).into());
                }
                Backend::Message(Message::ParameterStatus(_)) => {}
                other => return Err(unexpected(&other, DOING)),
            }
        }
    }

    /// Sends one standby status update.
    pub async fn send_status_update(&mut self, update: &StandbyStatusUpdate) -> Result<()> {
        self.scratch.clear();
        update.encode(&mut self.scratch);
        let payload = &self.scratch[..];
        self.wire.encode(|b| {
            frontend::CopyData::new(payload)?.write(b);
            Ok(())
        })?;
        self.wire.flush().await
    }

    /// Ends streaming cleanly: `CopyDone`, wait (bounded) for the server to
    /// finish, then `Terminate`. Status updates sent before are processed by
    /// the walsender before it sees `CopyDone`.
    pub async fn close(mut self) -> Result<()> {
        self.wire.encode(|b| {
            frontend::copy_done(b);
            Ok(())
        })?;
        self.wire.flush().await?;
        let drain = async {
            loop {
                match self.wire.recv("ending replication").await {
                    Ok(Backend::Message(Message::ReadyForQuery(_))) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
        self.wire.encode(|b| {
            frontend::terminate(b);
            Ok(())
        })?;
        let _ = self.wire.flush().await;
        self.wire.shutdown().await;
        Ok(())
    }
}
