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
//! * **The replication connection drops in the middle of a transaction** (Postgres restart,
//!   `pg_terminate_backend`, a network blip): the stream says so
//!   ([`walcast_replication::Event::Interrupted`]) and the server sends the transaction again
//!   from its Begin, as a new entry. The interrupted entry is *abandoned*: it never confirms
//!   anything, and it leaves the ledger once the records already produced for it are
//!   acknowledged (those records are the duplicate tail; the new entry produces them again).
//!   Without this, the entry would wait for a Commit that never comes and block every later
//!   transaction for good.
//!
//! # Bounded size
//!
//! Entries that have nothing outstanding and are complete (committed, or abandoned) are
//! folded into the complete entry before them. So while the broker is down and heartbeats or
//! transactions without events keep arriving, the ledger holds at most one complete entry
//! between two entries with outstanding records: its size is bounded by the in-flight bound,
//! not by how long the outage lasts.

use std::collections::VecDeque;

use walcast_pgoutput::Lsn;

/// Identifies a transaction entry in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TxnId(u64);

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    /// Records produced and not yet acknowledged.
    outstanding: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Begin read, Commit not yet.
    Open,
    /// Commit read: confirmable up to this end LSN once nothing is outstanding.
    Committed(Lsn),
    /// The connection broke before the Commit; the transaction is sent again as a new entry.
    Abandoned,
}

impl Entry {
    /// Complete and with nothing outstanding: only its LSN (if any) matters any more.
    fn is_done(&self) -> bool {
        self.outstanding == 0 && self.state != State::Open
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    /// Id of `entries[0]`.
    first: u64,
    entries: VecDeque<Entry>,
    confirmable: Lsn,
    taken: Lsn,
}

impl Ledger {
    /// Starts at `start` (the position streaming resumed from).
    pub(crate) fn new(start: Lsn) -> Ledger {
        Ledger {
            first: 0,
            entries: VecDeque::new(),
            confirmable: start,
            taken: start,
        }
    }

    /// A transaction began.
    pub(crate) fn begin(&mut self) -> TxnId {
        self.entries.push_back(Entry {
            state: State::Open,
            outstanding: 0,
        });
        TxnId(self.first + self.entries.len() as u64 - 1)
    }

    /// One record of `txn` was handed to the producer.
    pub(crate) fn produced(&mut self, txn: TxnId) {
        if let Some(e) = self.entry(txn) {
            e.outstanding += 1;
        }
    }

    /// One record of `txn` was acknowledged by the broker.
    pub(crate) fn acknowledged(&mut self, txn: TxnId) {
        if let Some(e) = self.entry(txn) {
            e.outstanding = e.outstanding.saturating_sub(1);
        }
        self.advance();
    }

    /// The Commit of `txn` was read; its end LSN is `end`.
    pub(crate) fn commit(&mut self, txn: TxnId, end: Lsn) {
        if let Some(e) = self.entry(txn) {
            e.state = State::Committed(end);
        }
        self.fold_back();
        self.advance();
    }

    /// The connection broke before the Commit of `txn` was read: the transaction comes again
    /// as a new entry; this one only waits for the records already produced for it.
    pub(crate) fn interrupted(&mut self, txn: TxnId) {
        if let Some(e) = self.entry(txn)
            && e.state == State::Open
        {
            e.state = State::Abandoned;
        }
        self.fold_back();
        self.advance();
    }

    /// A non-transactional message at `lsn` (nothing to deliver).
    pub(crate) fn message(&mut self, lsn: Lsn) {
        self.entries.push_back(Entry {
            state: State::Committed(lsn),
            outstanding: 0,
        });
        self.fold_back();
        self.advance();
    }

    /// The confirmable LSN if it moved since the last call.
    pub(crate) fn take(&mut self) -> Option<Lsn> {
        (self.confirmable > self.taken).then(|| {
            self.taken = self.confirmable;
            self.confirmable
        })
    }

    /// Highest LSN that may be confirmed.
    pub(crate) fn confirmable(&self) -> Lsn {
        self.confirmable
    }

    /// Transactions (and messages) not yet confirmable.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.entries.len()
    }

    /// Whether the newest entry is a transaction whose Commit has not been read.
    pub(crate) fn in_transaction(&self) -> bool {
        self.entries.back().is_some_and(|e| e.state == State::Open)
    }

    fn entry(&mut self, txn: TxnId) -> Option<&mut Entry> {
        let i = txn.0.checked_sub(self.first)?;
        self.entries.get_mut(usize::try_from(i).ok()?)
    }

    /// Folds a done newest entry into a done entry before it (see "Bounded size"). Only the
    /// newest entry is ever removed here, so no id of a live entry changes; the removed one
    /// has nothing outstanding, so no acknowledgement refers to it any more.
    fn fold_back(&mut self) {
        let n = self.entries.len();
        if n < 2 || !self.entries[n - 1].is_done() || !self.entries[n - 2].is_done() {
            return;
        }
        if let Some(last) = self.entries.pop_back() {
            let before = &mut self.entries[n - 2];
            before.state = match (before.state, last.state) {
                (State::Committed(a), State::Committed(b)) => State::Committed(a.max(b)),
                (State::Committed(a), _) | (_, State::Committed(a)) => State::Committed(a),
                (s, _) => s,
            };
        }
    }

    fn advance(&mut self) {
        while let Some(front) = self.entries.front() {
            if !front.is_done() {
                break;
            }
            if let State::Committed(end) = front.state {
                self.confirmable = self.confirmable.max(end);
            }
            self.entries.pop_front();
            self.first += 1;
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
        // The empty transaction and the message are folded into one entry.
        assert_eq!(l.pending(), 2);
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
    fn an_interrupted_transaction_does_not_block_its_resent_copy() {
        let mut l = Ledger::new(Lsn(100));
        let cut = l.begin();
        l.produced(cut);
        l.produced(cut);
        l.acknowledged(cut);
        // The connection breaks; the server sends the transaction again from its Begin.
        l.interrupted(cut);
        assert!(!l.in_transaction());
        let again = l.begin();
        l.produced(again);
        l.acknowledged(again);
        l.commit(again, Lsn(300));
        assert_eq!(
            l.take(),
            None,
            "a record of the cut copy is still outstanding"
        );
        l.acknowledged(cut);
        assert_eq!(l.take(), Some(Lsn(300)));
        assert_eq!(l.pending(), 0);
        // Later transactions confirm as usual.
        let next = l.begin();
        l.commit(next, Lsn(400));
        assert_eq!(l.take(), Some(Lsn(400)));
    }

    #[test]
    fn an_interrupted_transaction_with_nothing_outstanding_leaves_at_once() {
        let mut l = Ledger::new(Lsn(100));
        let cut = l.begin();
        l.interrupted(cut);
        assert_eq!(l.pending(), 0);
        assert_eq!(l.take(), None, "an abandoned entry confirms nothing");
        let t = l.begin();
        l.commit(t, Lsn(200));
        assert_eq!(l.take(), Some(Lsn(200)));
    }

    #[test]
    fn stays_small_while_a_record_is_outstanding() {
        let mut l = Ledger::new(Lsn(0));
        let blocked = l.begin();
        l.produced(blocked);
        l.commit(blocked, Lsn(10));
        // The broker is down: heartbeats and transactions without events keep coming.
        for i in 0..100_000u64 {
            if i % 2 == 0 {
                l.message(Lsn(20 + i));
            } else {
                let t = l.begin();
                l.commit(t, Lsn(20 + i));
            }
        }
        assert!(l.pending() <= 2, "{} entries", l.pending());
        assert_eq!(l.take(), None);
        l.acknowledged(blocked);
        assert_eq!(l.take(), Some(Lsn(20 + 99_999)));
        assert_eq!(l.pending(), 0);
    }

    #[test]
    fn folding_keeps_ids_of_open_transactions() {
        let mut l = Ledger::new(Lsn(0));
        let a = l.begin();
        l.produced(a);
        l.commit(a, Lsn(10));
        l.message(Lsn(15));
        let b = l.begin();
        l.produced(b);
        l.commit(b, Lsn(20));
        l.acknowledged(b);
        assert_eq!(l.take(), None);
        l.acknowledged(a);
        assert_eq!(l.take(), Some(Lsn(20)));
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
