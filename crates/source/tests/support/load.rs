//! A load generator: concurrent writers inserting outbox events in transactions of random
//! size. Each writer owns its aggregates and numbers each aggregate's events (`seq` in the
//! payload) in the order it commits them, so per-aggregate commit order is known.

use std::time::Duration;

use super::{TestDb, ok};

/// What to write.
#[derive(Debug, Clone)]
pub struct Load {
    pub events: usize,
    pub writers: usize,
    pub aggregates: usize,
    /// Transactions have 1..=max_txn events.
    pub max_txn: usize,
    pub seed: u64,
    /// A pause after every transaction of a writer (spreads the load over time).
    pub pause: Option<Duration>,
}

impl Load {
    pub fn new(events: usize) -> Load {
        Load {
            events,
            writers: 4,
            aggregates: 200,
            max_txn: 500,
            seed: 0x5eed_0001,
            pause: None,
        }
    }
}

/// A small deterministic PRNG (xorshift64*), enough for transaction sizes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// The aggregate ids of a load: deterministic UUIDs.
pub fn aggregate_id(load: &Load, a: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", load.seed as u32, a)
}

/// Writes the load with `load.writers` concurrent sessions; returns the number of
/// transactions committed.
pub async fn write(db: &TestDb, load: &Load) -> usize {
    let mut tasks = Vec::new();
    for w in 0..load.writers {
        let db = db.clone();
        let load = load.clone();
        let share = load.events / load.writers + usize::from(w < load.events % load.writers);
        tasks.push(tokio::spawn(
            async move { writer(&db, &load, w, share).await },
        ));
    }
    let mut txns = 0;
    for t in tasks {
        txns += ok(t.await);
    }
    txns
}

async fn writer(db: &TestDb, load: &Load, w: usize, mut remaining: usize) -> usize {
    let client = db.client().await;
    let mut rng = Rng::new(load.seed ^ ((w as u64 + 1) * 0x9e37_79b9));
    let owned: Vec<usize> = (0..load.aggregates)
        .filter(|a| a % load.writers == w)
        .collect();
    let mut seq = vec![0u64; load.aggregates];
    let mut txns = 0;
    while remaining > 0 {
        let n = rng.range(1, load.max_txn).min(remaining);
        let mut sql = String::from(
            "INSERT INTO outbox_messages \
             (id, aggregate_id, event_type, occurred_at, correlation_id, payload) VALUES ",
        );
        for i in 0..n {
            let a = owned[rng.range(0, owned.len() - 1)];
            let s = seq[a];
            seq[a] += 1;
            let id = uuid::Uuid::new_v4();
            let correlation = if rng.next().is_multiple_of(2) {
                format!("'{}'", uuid::Uuid::new_v4())
            } else {
                "NULL".to_owned()
            };
            let event_type =
                ["ProductCreated", "ProductUpdated", "ProductPriceChanged"][s.min(2) as usize];
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('{id}', '{agg}', '{event_type}', clock_timestamp(), {correlation}, \
                 '{{\"productId\": \"{agg}\", \"seq\": {s}, \"writer\": {w}, \"price\": \"12.50\", \"note\": \"it''s {s}\"}}')",
                agg = aggregate_id(load, a),
            ));
        }
        if let Err(e) = client.batch_execute(&sql).await {
            panic!("writer {w}: {e}");
        }
        remaining -= n;
        txns += 1;
        if let Some(p) = load.pause {
            tokio::time::sleep(p).await;
        }
    }
    txns
}
