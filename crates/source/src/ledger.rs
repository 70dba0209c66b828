//! The confirm rule: which LSN the source may confirm to Postgres, given which records the
//! broker acknowledged. Sans-IO; the pipeline feeds it and confirms what it returns.
//!
//! # Progress tracking
//!
//! **The LSN confirmed to Postgres never passes an event the broker has not acknowledged.**
//!
//! Transactions arrive from the slot in commit order. The ledger keeps one entry per
//! transaction, oldest first, with the number of its records (events and dead letters)
//! produced but not yet acknowledged:
//!
//! ```text
//!   entries:  [ T1: end 0/1A0, 0 outstanding ][ T2: end 0/2B8, 3 outstanding ][ T3: open, 7 ]
//!               └─ confirmable: 0/1A0           └─ blocks T3 even when T3 is acknowledged first
//! ```
//!
//! A transaction's commit **end LSN** (`Commit::end_lsn`) becomes confirmable once its Commit
//! was read, all its records are acknowledged (`acks=all`, so replicated to the in-sync
//! replicas), and every earlier transaction is confirmable too. Acknowledgements arrive out
//! of order across partitions; the ledger only ever moves the confirmable LSN forward, over
//! a prefix of fully acknowledged transactions. A transaction with no events (only other
//! tables, or skipped UPDATEs of the outbox) is confirmable as soon as its Commit is read and
//! its predecessors are. A non-transactional logical message (the heartbeat) is an entry
//! with no records at the message's LSN.
//!
//! Postgres keeps the WAL from the confirmed position on and, after any restart, sends every
//! transaction whose commit ends after it. So:
//!
//! * **`kill -9` of the source** at any moment: everything up to the confirmed LSN was
//!   acknowledged by the broker; everything after it is sent again. The only duplicates are
//!   records of transactions that were not yet confirmed (the unacknowledged tail, plus at
//!   most one status interval of acknowledged-but-unreported transactions); consumers
//!   deduplicate by the `id` header.
//! * **A delivery that never succeeds** (broker down): the record stays outstanding, its
//!   transaction and all later ones stay unconfirmed, the in-flight bounds stop reading, and
//!   the slot lag grows until the broker is back. librdkafka retries without a timeout.
//! * **A record the broker refuses for size** becomes a dead letter in the same transaction
//!   entry: the transaction is confirmable once the dead letter is acknowledged.
//! * **Shutdown in the middle of a transaction**: its Commit was never read, so it is never
//!   confirmed; it is sent again, whole, after the restart.

use std::collections::VecDeque;

use walcast_pgoutput::Lsn;

/// Identifies a transaction entry in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(u64);

#[derive(Debug, Clone)]
struct Entry {
    /// The commit end LSN, once the Commit was read.
    end: Option<Lsn>,
    /// Records produced and not yet acknowledged.
    outstanding: u32,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// Id of `entries[0]`.
    first: u64,
    entries: VecDeque<Entry>,
    confirmable: Lsn,
    taken: Lsn,
}

impl Ledger {
    /// Starts at `start` (the position streaming resumed from).
    pub fn new(start: Lsn) -> Ledger {
        Ledger {
            first: 0,
            entries: VecDeque::new(),
            confirmable: start,
            taken: start,
        }
    }

    /// A transaction began.
    pub fn begin(&mut self) -> TxnId {
        self.entries.push_back(Entry {
            end: None,
            outstanding: 0,
        });
        TxnId(self.first + self.entries.len() as u64 - 1)
    }

    /// One record of `txn` was handed to the producer.
    pub fn produced(&mut self, txn: TxnId) {
        if let Some(e) = self.entry(txn) {
            e.outstanding += 1;
        }
    }

    /// One record of `txn` was acknowledged by the broker.
    pub fn acknowledged(&mut self, txn: TxnId) {
        if let Some(e) = self.entry(txn) {
            e.outstanding = e.outstanding.saturating_sub(1);
        }
        self.advance();
    }

    /// The Commit of `txn` was read; its end LSN is `end`.
    pub fn commit(&mut self, txn: TxnId, end: Lsn) {
        if let Some(e) = self.entry(txn) {
            e.end = Some(end);
        }
        self.advance();
    }

    /// A non-transactional message at `lsn` (nothing to deliver).
    pub fn message(&mut self, lsn: Lsn) {
        self.entries.push_back(Entry {
            end: Some(lsn),
            outstanding: 0,
        });
        self.advance();
    }

    /// The confirmable LSN if it moved since the last call.
    pub fn take(&mut self) -> Option<Lsn> {
        (self.confirmable > self.taken).then(|| {
            self.taken = self.confirmable;
            self.confirmable
        })
    }

    /// Highest LSN that may be confirmed.
    pub fn confirmable(&self) -> Lsn {
        self.confirmable
    }

    /// Transactions (and messages) not yet confirmable.
    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    /// Whether the newest entry is a transaction whose Commit has not been read.
    pub fn in_transaction(&self) -> bool {
        self.entries.back().is_some_and(|e| e.end.is_none())
    }

    fn entry(&mut self, txn: TxnId) -> Option<&mut Entry> {
        let i = txn.0.checked_sub(self.first)?;
        self.entries.get_mut(usize::try_from(i).ok()?)
    }

    fn advance(&mut self) {
        while let Some(front) = self.entries.front() {
            match front.end {
                Some(end) if front.outstanding == 0 => {
                    self.confirmable = self.confirmable.max(end);
                    self.entries.pop_front();
                    self.first += 1;
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn confirms_a_prefix_of_fully_acknowledged_transactions() {
        let mut l = Ledger::new(Lsn(100));
        let t1 = l.begin();
        l.produced(t1);
        l.produced(t1);
        l.commit(t1, Lsn(200));
        let t2 = l.begin();
        l.produced(t2);
        l.commit(t2, Lsn(300));
        // T2 acknowledged first: nothing may be confirmed, T1 is not done.
        l.acknowledged(t2);
        assert_eq!(l.take(), None);
        l.acknowledged(t1);
        assert_eq!(l.take(), None, "T1 still has one record outstanding");
        l.acknowledged(t1);
        assert_eq!(l.take(), Some(Lsn(300)), "T1 and T2 both complete");
        assert_eq!(l.pending(), 0);
        assert_eq!(l.take(), None);
    }

    #[test]
    fn an_open_transaction_is_never_confirmed() {
        let mut l = Ledger::new(Lsn(100));
        let t = l.begin();
        l.produced(t);
        l.acknowledged(t);
        assert!(l.in_transaction());
        assert_eq!(l.take(), None);
        l.commit(t, Lsn(150));
        assert_eq!(l.take(), Some(Lsn(150)));
    }

    #[test]
    fn empty_transactions_and_messages_confirm_behind_their_predecessors() {
        let mut l = Ledger::new(Lsn(0));
        let t1 = l.begin();
        l.produced(t1);
        l.commit(t1, Lsn(10));
        let t2 = l.begin();
        l.commit(t2, Lsn(20));
        l.message(Lsn(25));
        assert_eq!(l.take(), None);
        assert_eq!(l.pending(), 3);
        l.acknowledged(t1);
        assert_eq!(l.take(), Some(Lsn(25)));
    }

    #[test]
    fn never_moves_backwards() {
        let mut l = Ledger::new(Lsn(500));
        let t = l.begin();
        l.commit(t, Lsn(400));
        assert_eq!(l.confirmable(), Lsn(500));
        assert_eq!(l.take(), None);
    }

    #[test]
    fn stale_ids_are_ignored() {
        let mut l = Ledger::new(Lsn(0));
        let t = l.begin();
        l.commit(t, Lsn(10));
        assert_eq!(l.take(), Some(Lsn(10)));
        // A late duplicate acknowledgement of a confirmed transaction changes nothing.
        l.acknowledged(t);
        let t2 = l.begin();
        l.produced(t2);
        l.acknowledged(t);
        l.commit(t2, Lsn(20));
        assert_eq!(l.take(), None);
    }
}
