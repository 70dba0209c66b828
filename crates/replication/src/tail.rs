//! `walcast wal tail`: print changes as JSON lines, confirming as it goes.
//!
//! # When an LSN is confirmed
//!
//! Output is flushed before anything is confirmed, so "durable" here means
//! "written to the output". At each Commit the transaction's end LSN is
//! confirmed. With a change limit, the run stops after the N-th change: if
//! the next event is that transaction's Commit, its end LSN is confirmed
//! (the transaction is done); otherwise its commit LSN is, so the server
//! resends that transaction whole next time and nothing is skipped.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use tracing::info;

use crate::change::Event;
use crate::change_stream::{ChangeStream, ChangeStreamConfig};
use crate::error::{Error, Result};

/// How long to wait, after the last wanted change, for its Commit. The
/// server sends a transaction in one go, so this is only a safety net.
const COMMIT_PEEK: Duration = Duration::from_secs(2);

/// Streams changes to `out`, one JSON object per line, until `max_changes`
/// were written or `shutdown` resolves. Returns how many were written.
pub async fn tail<W: Write>(
    config: ChangeStreamConfig,
    max_changes: Option<u64>,
    out: &mut W,
    shutdown: impl Future<Output = ()>,
) -> Result<u64> {
    let mut stream = ChangeStream::start(config).await?;
    let mut written = 0u64;
    let mut in_txn = false;
    tokio::pin!(shutdown);
    if max_changes == Some(0) {
        stream.close().await?;
        return Ok(0);
    }
    loop {
        let event = tokio::select! {
            ev = stream.next() => ev?,
            () = &mut shutdown => {
                info!(written, "shutting down");
                stream.close().await?;
                return Ok(written);
            }
        };
        match event {
            Event::Begin(_) => in_txn = true,
            // The transaction is sent again whole; its changes printed so far repeat.
            Event::Interrupted(_) => in_txn = false,
            Event::Commit(c) => {
                in_txn = false;
                out.flush().map_err(output_error)?;
                stream.confirm(c.end_lsn).await?;
            }
            Event::Change(c) => {
                serde_json::to_writer(&mut *out, &c)
                    .map_err(|e| output_error(std::io::Error::other(e)))?;
                out.write_all(b"\n").map_err(output_error)?;
                written += 1;
                if !in_txn {
                    // A non-transactional message stands alone.
                    out.flush().map_err(output_error)?;
                    stream.confirm(c.commit_lsn).await?;
                }
                if max_changes.is_some_and(|m| written >= m) {
                    out.flush().map_err(output_error)?;
                    let mut confirm = c.commit_lsn;
                    if in_txn
                        && let Ok(Ok(Event::Commit(commit))) =
                            tokio::time::timeout(COMMIT_PEEK, stream.next()).await
                    {
                        confirm = commit.end_lsn;
                    }
                    stream.confirm(confirm).await?;
                    info!(written, confirmed = %confirm, "change limit reached");
                    stream.close().await?;
                    return Ok(written);
                }
            }
        }
    }
}

fn output_error(e: std::io::Error) -> Error {
    Error::io("writing changes to the output", e)
}
