//! A loader that writes catalog events the way write apps do: through the catalog write API
//! (one command per request) and directly in SQL (transactions of 1–500 events, each changing
//! `products` and inserting the matching `outbox_messages` row in one statement), from
//! several concurrent writers, optionally at a fixed total rate.
//!
//! Writers ride out outages: a failed request or transaction is counted and retried later
//! (after a leader restart the pool and the connections come back). A transaction whose
//! COMMIT was lost with the connection may or may not have committed; that does not matter,
//! because the proofs compare the targets with what the write database holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::{Rng, connect, http};

#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Events to write in total (all writers together).
    pub events: u64,
    pub sql_writers: usize,
    pub http_writers: usize,
    /// Events per second over all writers; `None`: as fast as they go.
    pub rate: Option<f64>,
    /// Largest SQL transaction, in events.
    pub max_tx: u64,
    pub seed: u64,
    /// Give up on a writer that cannot write for this long.
    pub patience: Duration,
    /// Products that exist before the load starts (e.g. rows a snapshot brings in); shared
    /// out among the writers, which change and delete them like their own.
    pub existing: Vec<Uuid>,
}

#[derive(Debug, Default)]
pub struct Counters {
    /// Budget handed out (events claimed by writers).
    claimed: AtomicU64,
    /// Outbox rows in transactions whose COMMIT returned OK.
    pub committed: AtomicU64,
    /// Failed requests or transactions (each retried later).
    pub failures: AtomicU64,
}

#[derive(Debug)]
pub struct LoadReport {
    pub committed: u64,
    pub failures: u64,
    pub seconds: f64,
}

/// Runs the load to completion. `counters` may be watched while it runs.
pub async fn run(
    write_dsn: String,
    write_port: u16,
    spec: LoadSpec,
    counters: Arc<Counters>,
) -> LoadReport {
    let started = Instant::now();
    let mut tasks = Vec::new();
    let writers = spec.sql_writers + spec.http_writers;
    for w in 0..writers {
        let (dsn, spec, counters) = (write_dsn.clone(), spec.clone(), counters.clone());
        let writer = Writer {
            tag: spec.seed,
            id: w,
            rng: Rng::new(spec.seed.wrapping_mul(31).wrapping_add(w as u64 + 1)),
            products: spec
                .existing
                .iter()
                .skip(w)
                .step_by(writers)
                .copied()
                .collect(),
            serial: 0,
        };
        if w < spec.sql_writers {
            tasks.push(tokio::spawn(writer.sql(dsn, spec, counters, started)));
        } else {
            tasks.push(tokio::spawn(
                writer.http(write_port, spec, counters, started),
            ));
        }
    }
    for t in tasks {
        if let Err(e) = t.await {
            panic!("a writer panicked: {e}");
        }
    }
    LoadReport {
        committed: counters.committed.load(Ordering::SeqCst),
        failures: counters.failures.load(Ordering::SeqCst),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Claims up to `want` events of the budget: how many were granted, and when (at the fixed
/// rate) they may be written.
fn claim(spec: &LoadSpec, c: &Counters, want: u64, started: Instant) -> Option<(u64, Instant)> {
    let mut before = c.claimed.load(Ordering::SeqCst);
    loop {
        if before >= spec.events {
            return None;
        }
        let n = want.min(spec.events - before);
        match c
            .claimed
            .compare_exchange(before, before + n, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => {
                let at = match spec.rate {
                    Some(r) => started + Duration::from_secs_f64(before as f64 / r),
                    None => Instant::now(),
                };
                return Some((n, at));
            }
            Err(now) => before = now,
        }
    }
}

/// Gives a failed claim back, so the budget is still written in full.
fn unclaim(c: &Counters, n: u64) {
    c.claimed.fetch_sub(n, Ordering::SeqCst);
}

/// A failed write of `n` events: counted, its budget given back, retried after 200 ms unless
/// the writer has been failing for longer than its patience.
async fn failed(
    c: &Counters,
    n: u64,
    spec: &LoadSpec,
    failing_since: &mut Option<Instant>,
    who: &str,
    why: &str,
) {
    c.failures.fetch_add(1, Ordering::SeqCst);
    unclaim(c, n);
    let since = *failing_since.get_or_insert_with(Instant::now);
    assert!(
        since.elapsed() < spec.patience,
        "{who} could not write for {:?}: {why}",
        spec.patience
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
}

enum Op {
    Create,
    Rename,
    Price,
    Toggle,
    Delete,
}

struct Writer {
    /// Part of every SKU, so runs with different seeds never collide.
    tag: u64,
    id: usize,
    rng: Rng,
    /// Products this writer created and believes still exist.
    products: Vec<Uuid>,
    serial: u64,
}

const CREATE: &str = "WITH p AS (INSERT INTO products (id, sku, name, description, price, currency, \
     is_active, version) VALUES ($1, $2, $3, $4, $5::text::numeric, 'EUR', true, 1) RETURNING *) \
     INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
     SELECT gen_random_uuid(), p.id, 'ProductCreated', now(), jsonb_build_object('productId', p.id, \
     'sku', p.sku, 'name', p.name, 'description', p.description, 'price', p.price::text, \
     'currency', p.currency, 'isActive', p.is_active, 'version', p.version) FROM p";
const RENAME: &str = "WITH p AS (UPDATE products SET name = $2, description = $3, \
     version = version + 1, updated_at = now() WHERE id = $1 RETURNING *) \
     INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
     SELECT gen_random_uuid(), p.id, 'ProductUpdated', now(), jsonb_build_object('productId', p.id, \
     'name', p.name, 'description', p.description, 'version', p.version) FROM p";
const PRICE: &str = "WITH p AS (UPDATE products SET price = $2::text::numeric, \
     version = version + 1, updated_at = now() WHERE id = $1 RETURNING *) \
     INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
     SELECT gen_random_uuid(), p.id, 'ProductPriceChanged', now(), jsonb_build_object('productId', \
     p.id, 'price', p.price::text, 'currency', p.currency, 'version', p.version) FROM p";
const TOGGLE: &str = "WITH p AS (UPDATE products SET is_active = NOT is_active, \
     version = version + 1, updated_at = now() WHERE id = $1 RETURNING *) \
     INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
     SELECT gen_random_uuid(), p.id, CASE WHEN p.is_active THEN 'ProductActivated' \
     ELSE 'ProductDeactivated' END, now(), jsonb_build_object('productId', p.id, 'version', p.version) FROM p";
const DELETE: &str = "WITH p AS (DELETE FROM products WHERE id = $1 RETURNING id, version) \
     INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
     SELECT gen_random_uuid(), p.id, 'ProductDeleted', now(), jsonb_build_object('productId', p.id, \
     'version', p.version + 1) FROM p";

impl Writer {
    fn op(&mut self) -> Op {
        if self.products.len() < 5 {
            return Op::Create;
        }
        match self.rng.below(100) {
            0..=24 => Op::Create,
            25..=49 => Op::Price,
            50..=69 => Op::Rename,
            70..=89 => Op::Toggle,
            _ => Op::Delete,
        }
    }

    fn pick(&mut self) -> Uuid {
        let i = self.rng.below(self.products.len() as u64) as usize;
        self.products[i]
    }

    fn new_product(&mut self) -> (Uuid, String, String, Option<String>, String) {
        self.serial += 1;
        let sku = format!("W{:x}-{}-{:07}", self.tag, self.id, self.serial);
        let name = format!("Product {} {}", self.id, self.serial);
        let desc = (self.rng.below(3) > 0).then(|| format!("A fine thing no. {}", self.serial));
        (Uuid::now_v7(), sku, name, desc, self.price())
    }

    fn price(&mut self) -> String {
        let cents = 100 + self.rng.below(99_900);
        format!("{}.{:02}", cents / 100, cents % 100)
    }

    fn tx_size(&mut self, max: u64) -> u64 {
        let n = match self.rng.below(100) {
            0..=49 => self.rng.between(1, 10),
            50..=84 => self.rng.between(10, 100),
            _ => self.rng.between(100, 500),
        };
        n.clamp(1, max.max(1))
    }

    async fn sql(mut self, dsn: String, spec: LoadSpec, c: Arc<Counters>, started: Instant) {
        let mut client: Option<tokio_postgres::Client> = None;
        let mut failing_since: Option<Instant> = None;
        loop {
            let want = self.tx_size(spec.max_tx);
            let Some((n, at)) = claim(&spec, &c, want, started) else {
                return;
            };
            tokio::time::sleep_until(at).await;
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = connect(&dsn).await.ok();
            }
            let before = self.products.clone();
            let result = match client.as_mut() {
                Some(cl) => self.sql_tx(cl, n).await,
                None => Err("cannot connect".to_owned()),
            };
            match result {
                Ok(written) => {
                    c.committed.fetch_add(written, Ordering::SeqCst);
                    // An event whose row was gone (a delete committed in a lost reply)
                    // writes nothing; only written events count against the budget.
                    if written < n {
                        unclaim(&c, n - written);
                    }
                    failing_since = None;
                }
                Err(e) => {
                    self.products = before;
                    client = None;
                    let who = format!("SQL writer {}", self.id);
                    failed(&c, n, &spec, &mut failing_since, &who, &e).await;
                }
            }
        }
    }

    /// One transaction of `n` events; returns the outbox rows written. `self.products`
    /// follows the transaction's creates and deletes (the caller restores it on failure).
    async fn sql_tx(&mut self, client: &mut tokio_postgres::Client, n: u64) -> Result<u64, String> {
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        let mut written = 0u64;
        for _ in 0..n {
            let rows = match self.op() {
                Op::Create => {
                    let (id, sku, name, desc, price) = self.new_product();
                    self.products.push(id);
                    tx.execute(CREATE, &[&id, &sku, &name, &desc, &price]).await
                }
                Op::Rename => {
                    let id = self.pick();
                    self.serial += 1;
                    let name = format!("Renamed {} {}", self.id, self.serial);
                    let desc = (self.rng.below(4) > 0).then(|| format!("Now v{}", self.serial));
                    tx.execute(RENAME, &[&id, &name, &desc]).await
                }
                Op::Price => {
                    let id = self.pick();
                    let price = self.price();
                    tx.execute(PRICE, &[&id, &price]).await
                }
                Op::Toggle => {
                    let id = self.pick();
                    tx.execute(TOGGLE, &[&id]).await
                }
                Op::Delete => {
                    let i = self.rng.below(self.products.len() as u64) as usize;
                    let id = self.products.swap_remove(i);
                    tx.execute(DELETE, &[&id]).await
                }
            }
            .map_err(|e| e.to_string())?;
            written += rows;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(written)
    }

    async fn http(mut self, port: u16, spec: LoadSpec, c: Arc<Counters>, started: Instant) {
        let mut failing_since: Option<Instant> = None;
        loop {
            let Some((_, at)) = claim(&spec, &c, 1, started) else {
                return;
            };
            tokio::time::sleep_until(at).await;
            let (method, path, body, target) = match self.op() {
                Op::Create => {
                    let (_, sku, name, desc, price) = self.new_product();
                    let body = serde_json::json!({
                        "sku": sku, "name": name, "description": desc,
                        "price": price, "currency": "EUR",
                    });
                    ("POST", "/products".to_owned(), Some(body.to_string()), None)
                }
                Op::Rename => {
                    let id = self.pick();
                    self.serial += 1;
                    let body = serde_json::json!({
                        "name": format!("Renamed {} {}", self.id, self.serial),
                        "description": format!("Now v{}", self.serial),
                    });
                    (
                        "PUT",
                        format!("/products/{id}"),
                        Some(body.to_string()),
                        Some(id),
                    )
                }
                Op::Price => {
                    let id = self.pick();
                    let body = serde_json::json!({"price": self.price(), "currency": "EUR"});
                    (
                        "PUT",
                        format!("/products/{id}/price"),
                        Some(body.to_string()),
                        Some(id),
                    )
                }
                Op::Toggle => {
                    let id = self.pick();
                    let what = if self.rng.below(2) == 0 {
                        "activate"
                    } else {
                        "deactivate"
                    };
                    ("POST", format!("/products/{id}/{what}"), None, Some(id))
                }
                Op::Delete => {
                    let id = self.pick();
                    ("DELETE", format!("/products/{id}"), None, Some(id))
                }
            };
            let reply =
                tokio::task::spawn_blocking(move || http(port, method, &path, body.as_deref()))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|r| r);
            match reply {
                Ok((status, body)) if status < 300 => {
                    c.committed.fetch_add(1, Ordering::SeqCst);
                    if method == "POST" && target.is_none() {
                        match serde_json::from_str::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["id"].as_str().and_then(|s| s.parse().ok()))
                        {
                            Some(id) => self.products.push(id),
                            None => {
                                panic!("POST /products answered {status} without an id: {body}")
                            }
                        }
                    }
                    if method == "DELETE" {
                        self.products.retain(|p| Some(*p) != target);
                    }
                    failing_since = None;
                }
                Ok((404, _)) => {
                    // A create or delete whose reply was lost in an outage: forget the id.
                    self.products.retain(|p| Some(*p) != target);
                    unclaim(&c, 1);
                }
                other => {
                    let why = match other {
                        Ok((status, body)) => format!("{status}: {body:.200}"),
                        Err(e) => e.to_string(),
                    };
                    let who = format!("HTTP writer {}", self.id);
                    failed(&c, 1, &spec, &mut failing_since, &who, &why).await;
                }
            }
        }
    }
}
