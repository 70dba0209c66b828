//! [`FeedbackStream`]: a [`ReplicationStream`] that answers keepalives and
//! sends periodic status updates on its own, following [`Progress`].
//!
//! Updates go out while the caller waits in [`FeedbackStream::next`] and on
//! [`FeedbackStream::confirm`]. The caller must therefore poll `next` at least
//! every `wal_sender_timeout / 2` (30 s by default); a consumer that stalls
//! longer is disconnected by the server and resumes from its confirmed LSN.

use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, trace};
use walcast_pgoutput::Lsn;
use walcast_pgoutput::Timestamp;
use walcast_pgoutput::replication::{ReplicationMessage, XLogData};

use crate::copy_both::ReplicationStream;
use crate::error::Result;
use crate::progress::Progress;

/// Streams XLogData and keeps the server informed of progress.
#[derive(Debug)]
pub struct FeedbackStream {
    raw: ReplicationStream,
    progress: Progress,
}

impl FeedbackStream {
    /// Wraps a started stream. `start` is the position streaming resumed from
    /// (the slot's `confirmed_flush_lsn` or later).
    pub fn new(raw: ReplicationStream, start: Lsn, status_interval: Duration) -> FeedbackStream {
        FeedbackStream {
            raw,
            progress: Progress::new(start, status_interval),
        }
    }

    /// The next XLogData; keepalives are handled here. `None` when the server
    /// ended the stream.
    ///
    /// Cancel safe.
    pub async fn next(&mut self) -> Result<Option<XLogData>> {
        loop {
            let now = Instant::now();
            self.send_due(now).await?;
            let due = self.progress.next_due(now);
            // `biased`: when a message is already buffered (the common case
            // while draining a backlog) it is taken without ever arming the
            // timer, which would cost a timer-wheel insert and removal.
            let msg = tokio::select! {
                biased;
                msg = self.raw.recv() => msg?,
                () = tokio::time::sleep_until(due.into()) => continue,
            };
            match msg {
                None => return Ok(None),
                Some(ReplicationMessage::XLogData(x)) => {
                    self.progress.on_xlog_data(&x);
                    return Ok(Some(x));
                }
                Some(ReplicationMessage::PrimaryKeepalive(k)) => {
                    trace!(wal_end = %k.wal_end, reply = k.reply_requested, "keepalive");
                    self.progress.on_keepalive(&k);
                }
                Some(other) => debug!(?other, "ignoring unknown replication message"),
            }
        }
    }

    /// The caller's output is durable up to `lsn`; see [`crate::progress`]
    /// for which LSN that is. Sends an update if one is due.
    pub async fn confirm(&mut self, lsn: Lsn) -> Result<()> {
        self.progress.confirm(lsn);
        self.send_due(Instant::now()).await
    }

    /// Sends a status update now.
    pub async fn flush_status(&mut self) -> Result<()> {
        self.progress.force();
        self.send_due(Instant::now()).await
    }

    /// Highest LSN confirmed by the caller.
    pub fn confirmed(&self) -> Lsn {
        self.progress.confirmed()
    }

    /// The flush position reported (or about to be) to the server.
    pub fn reported_flush(&self) -> Lsn {
        self.progress.flush()
    }

    /// The walsender's pid.
    pub fn backend_pid(&self) -> i32 {
        self.raw.backend_pid()
    }

    /// Sends a final status update and ends streaming cleanly.
    pub async fn close(mut self) -> Result<()> {
        self.flush_status().await?;
        self.raw.close().await
    }

    async fn send_due(&mut self, now: Instant) -> Result<()> {
        // Called once per message: read the wall clock only when sending.
        if self.progress.next_due(now) > now {
            return Ok(());
        }
        let client_time = Timestamp::from_system_time(SystemTime::now()).pg_micros();
        if let Some(update) = self.progress.poll_update(now, client_time) {
            trace!(write = %update.write, flush = %update.flush, "standby status update");
            self.raw.send_status_update(&update).await?;
        }
        Ok(())
    }
}
