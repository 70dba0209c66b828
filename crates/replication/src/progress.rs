//! Progress tracking: which LSNs we tell the server, and when. Sans-IO.
//!
//! # What the three positions mean
//!
//! A standby status update carries `write`, `flush` and `apply`. For a logical
//! slot only `flush` matters to the server: it becomes the slot's
//! `confirmed_flush_lsn`, the server may recycle WAL before it, and after a
//! reconnect streaming resumes there (every transaction whose commit record
//! starts before it is skipped). So:
//!
//! * `write` = the highest position received (XLogData `wal_start`), never
//!   below `flush`. Informational.
//! * `flush` = `apply` = the highest position the **caller confirmed** with
//!   [`Progress::confirm`], i.e. everything before it is durable downstream
//!   (for walcast: acknowledged by Kafka). Plus the idle advance below.
//!
//! # When an LSN may be confirmed
//!
//! The caller confirms, after its output is durable:
//!
//! * a transaction's commit **end LSN** (`Commit::end_lsn`, the `wal_start` of
//!   the Commit message) once all its changes are durable — the server will
//!   not resend it;
//! * the transaction's **commit LSN** (`Begin::final_lsn`) when it stopped
//!   part-way through a transaction — the server resends that transaction
//!   whole, so nothing is lost (its first changes are repeated);
//! * a non-transactional logical message's LSN once that message is durable.
//!
//! Confirming anything larger than that loses data on a crash; confirming
//! less only causes redelivery. Nothing here ever reports a position lower
//! than one already reported: in Postgres before 17 the server would move
//! `confirmed_flush_lsn` backwards.
//!
//! # Idle advance
//!
//! A slot whose tables are quiet would otherwise never move while the rest of
//! the cluster writes WAL, pinning it on disk. So when
//!
//! * no transaction is open (after Commit, before the next Begin; no streamed
//!   in-progress transaction is open either), and
//! * the caller confirmed everything received (the last commit end LSN and any
//!   non-transactional message),
//!
//! the `wal_end` of a keepalive becomes the flush position. This is safe
//! because the server sends in order: a keepalive's `wal_end` is how far the
//! walsender has decoded, and any transaction committing before it that
//! touches our publication was already sent (and confirmed). Transactions
//! whose commit is after `wal_end` are still sent in full after a restart.
//!
//! # When updates are sent
//!
//! * at once when a keepalive has `reply_requested` set (else the server drops
//!   us after `wal_sender_timeout`),
//! * every `status_interval` (default 10 s, well under the default 60 s
//!   `wal_sender_timeout`),
//! * when the caller asks for it ([`Progress::force`]), e.g. before shutdown.
//!
//! # Failure cases
//!
//! * Crash after confirm, before the update went out: the server resumes
//!   from its older `confirmed_flush_lsn`; the client passes its own confirmed
//!   position to `START_REPLICATION` and skips transactions committed before it.
//! * Crash before confirm: the transaction is redelivered (at-least-once).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use walcast_pgoutput::Lsn;
use walcast_pgoutput::replication::{PrimaryKeepalive, StandbyStatusUpdate, XLogData};

/// Default period of status updates.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// The feedback state machine. See the module docs.
#[derive(Debug, Clone)]
pub struct Progress {
    received: Lsn,
    confirmed: Lsn,
    flush: Lsn,
    /// What the caller must confirm for "everything received is confirmed".
    pending_until: Lsn,
    in_txn: bool,
    open_streams: HashSet<u32>,
    interval: Duration,
    last_sent: Option<(Instant, Lsn, Lsn)>,
    reply_now: bool,
}

impl Progress {
    /// Starts at `start`: the position streaming resumed from, which the
    /// server already considers confirmed.
    pub fn new(start: Lsn, interval: Duration) -> Progress {
        Progress {
            received: start,
            confirmed: start,
            flush: start,
            pending_until: start,
            in_txn: false,
            open_streams: HashSet::new(),
            interval,
            last_sent: None,
            reply_now: false,
        }
    }

    /// Records an XLogData; peeks at the pgoutput tag to follow transaction
    /// boundaries.
    pub fn on_xlog_data(&mut self, x: &XLogData) {
        self.received = self.received.max(x.wal_start);
        let d = &x.data[..];
        match d.first() {
            Some(b'B') => self.in_txn = true,
            Some(b'C') => {
                self.in_txn = false;
                if let Some(end) = be_u64(d, 10) {
                    self.pending_until = self.pending_until.max(Lsn(end));
                }
            }
            Some(b'M') if !self.in_txn && self.open_streams.is_empty() => {
                self.pending_until = self.pending_until.max(x.wal_start);
            }
            Some(b'S') => {
                if let Some(xid) = be_u32(d, 1) {
                    self.open_streams.insert(xid);
                }
            }
            Some(b'c') => {
                if let Some(xid) = be_u32(d, 1) {
                    self.open_streams.remove(&xid);
                }
                if let Some(end) = be_u64(d, 14) {
                    self.pending_until = self.pending_until.max(Lsn(end));
                }
            }
            Some(b'A') => {
                if let (Some(xid), Some(sub)) = (be_u32(d, 1), be_u32(d, 5))
                    && xid == sub
                {
                    self.open_streams.remove(&xid);
                }
            }
            _ => {}
        }
    }

    /// Records a keepalive: idle advance, and a reply if requested.
    pub fn on_keepalive(&mut self, k: &PrimaryKeepalive) {
        if self.is_idle() && k.wal_end > self.flush {
            self.flush = k.wal_end;
            self.received = self.received.max(k.wal_end);
        }
        if k.reply_requested {
            self.reply_now = true;
        }
    }

    /// The caller's output is durable up to `lsn` (see the module docs for
    /// which LSN to pass). Never moves backwards.
    pub fn confirm(&mut self, lsn: Lsn) {
        self.confirmed = self.confirmed.max(lsn);
        self.flush = self.flush.max(lsn);
    }

    /// Send an update at the next opportunity.
    pub fn force(&mut self) {
        self.reply_now = true;
    }

    /// No transaction open and everything received confirmed.
    pub fn is_idle(&self) -> bool {
        !self.in_txn && self.open_streams.is_empty() && self.confirmed >= self.pending_until
    }

    /// What the caller has confirmed.
    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    /// What is (or will be) reported as flush.
    pub fn flush(&self) -> Lsn {
        self.flush
    }

    /// When the next periodic update is due.
    pub fn next_due(&self, now: Instant) -> Instant {
        if self.reply_now {
            return now;
        }
        match self.last_sent {
            Some((at, _, _)) => at + self.interval,
            None => now,
        }
    }

    /// The update to send now, if one is due; marks it sent.
    pub fn poll_update(&mut self, now: Instant, client_time: i64) -> Option<StandbyStatusUpdate> {
        if self.next_due(now) > now {
            return None;
        }
        self.reply_now = false;
        let write = self.received.max(self.flush);
        self.last_sent = Some((now, write, self.flush));
        Some(StandbyStatusUpdate {
            write,
            flush: self.flush,
            apply: self.flush,
            client_time,
            reply_requested: false,
        })
    }
}

fn be_u64(d: &[u8], at: usize) -> Option<u64> {
    d.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

fn be_u32(d: &[u8], at: usize) -> Option<u32> {
    d.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn xlog(at: u64, data: Vec<u8>) -> XLogData {
        XLogData {
            wal_start: Lsn(at),
            wal_end: Lsn(at),
            server_time: 0,
            data: Bytes::from(data),
        }
    }
    fn begin(final_lsn: u64) -> Vec<u8> {
        let mut v = vec![b'B'];
        v.extend_from_slice(&final_lsn.to_be_bytes());
        v.extend_from_slice(&0i64.to_be_bytes());
        v.extend_from_slice(&7u32.to_be_bytes());
        v
    }
    fn commit(commit_lsn: u64, end_lsn: u64) -> Vec<u8> {
        let mut v = vec![b'C', 0];
        v.extend_from_slice(&commit_lsn.to_be_bytes());
        v.extend_from_slice(&end_lsn.to_be_bytes());
        v.extend_from_slice(&0i64.to_be_bytes());
        v
    }
    fn keepalive(wal_end: u64, reply: bool) -> PrimaryKeepalive {
        PrimaryKeepalive {
            wal_end: Lsn(wal_end),
            server_time: 0,
            reply_requested: reply,
        }
    }
    fn send(p: &mut Progress, now: Instant) -> Option<(Lsn, Lsn)> {
        p.poll_update(now, 0).map(|u| (u.write, u.flush))
    }

    #[test]
    fn flush_is_what_the_caller_confirmed() {
        let now = Instant::now();
        let mut p = Progress::new(Lsn(100), Duration::from_secs(10));
        assert_eq!(send(&mut p, now), Some((Lsn(100), Lsn(100))));
        p.on_xlog_data(&xlog(110, begin(150)));
        p.on_xlog_data(&xlog(120, b"I...".to_vec()));
        p.on_xlog_data(&xlog(160, commit(150, 160)));
        // Not due yet, and nothing confirmed.
        assert_eq!(send(&mut p, now), None);
        let later = now + Duration::from_secs(10);
        assert_eq!(send(&mut p, later), Some((Lsn(160), Lsn(100))));
        p.confirm(Lsn(160));
        p.force();
        assert_eq!(send(&mut p, later), Some((Lsn(160), Lsn(160))));
    }

    #[test]
    fn never_goes_backwards() {
        let now = Instant::now();
        let mut p = Progress::new(Lsn(100), Duration::from_secs(10));
        p.confirm(Lsn(300));
        p.confirm(Lsn(200));
        assert_eq!(p.confirmed(), Lsn(300));
        assert_eq!(send(&mut p, now), Some((Lsn(300), Lsn(300))));
        p.on_keepalive(&keepalive(250, true));
        assert_eq!(send(&mut p, now), Some((Lsn(300), Lsn(300))));
    }

    #[test]
    fn keepalive_reply_is_immediate() {
        let now = Instant::now();
        let mut p = Progress::new(Lsn(100), Duration::from_secs(10));
        assert!(send(&mut p, now).is_some());
        p.on_keepalive(&keepalive(100, false));
        assert_eq!(send(&mut p, now), None);
        p.on_keepalive(&keepalive(100, true));
        assert_eq!(p.next_due(now), now);
        assert!(send(&mut p, now).is_some());
    }

    #[test]
    fn idle_slot_advances_on_keepalive() {
        let now = Instant::now();
        let mut p = Progress::new(Lsn(100), Duration::from_secs(10));
        p.on_keepalive(&keepalive(500, true));
        assert_eq!(send(&mut p, now), Some((Lsn(500), Lsn(500))));
    }

    #[test]
    fn no_idle_advance_inside_a_transaction_or_with_unconfirmed_data() {
        let mut p = Progress::new(Lsn(100), Duration::from_secs(10));
        p.on_xlog_data(&xlog(110, begin(150)));
        p.on_keepalive(&keepalive(500, true));
        assert_eq!(p.flush(), Lsn(100), "transaction open");
        p.on_xlog_data(&xlog(160, commit(150, 160)));
        p.on_keepalive(&keepalive(600, true));
        assert_eq!(p.flush(), Lsn(100), "commit 160 not confirmed yet");
        p.confirm(Lsn(150));
        p.on_keepalive(&keepalive(600, true));
        assert_eq!(p.flush(), Lsn(150), "confirmed only part-way");
        p.confirm(Lsn(160));
        p.on_keepalive(&keepalive(700, true));
        assert_eq!(p.flush(), Lsn(700));
    }

    #[test]
    fn non_transactional_message_must_be_confirmed() {
        let mut p = Progress::new(Lsn(100), Duration::from_secs(10));
        p.on_xlog_data(&xlog(200, vec![b'M', 0]));
        p.on_keepalive(&keepalive(500, false));
        assert_eq!(p.flush(), Lsn(100));
        p.confirm(Lsn(200));
        p.on_keepalive(&keepalive(500, false));
        assert_eq!(p.flush(), Lsn(500));
    }

    #[test]
    fn open_streamed_transaction_blocks_idle_advance() {
        let mut p = Progress::new(Lsn(100), Duration::from_secs(10));
        let mut start = vec![b'S'];
        start.extend_from_slice(&9u32.to_be_bytes());
        start.push(1);
        p.on_xlog_data(&xlog(110, start));
        p.on_xlog_data(&xlog(120, vec![b'E']));
        p.on_keepalive(&keepalive(500, false));
        assert_eq!(p.flush(), Lsn(100));
        let mut abort = vec![b'A'];
        abort.extend_from_slice(&9u32.to_be_bytes());
        abort.extend_from_slice(&9u32.to_be_bytes());
        p.on_xlog_data(&xlog(130, abort));
        p.on_keepalive(&keepalive(500, false));
        assert_eq!(p.flush(), Lsn(500));
    }
}
