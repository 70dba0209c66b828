//! Shared helpers: one Postgres cluster for the tests that need no special
//! settings (each test gets its own database, slot and publication), waiting
//! on conditions with deadlines, and collecting events.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use walcast_config::Backoff;
use walcast_postgres::{Dsn, connect_sql};
use walcast_replication::{Change, ChangeStream, ChangeStreamConfig, Event, Lsn};
use walcast_testkit::{Postgres, unique_name};

/// The shared cluster. Its processes die with the test binary.
pub fn shared_pg() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| match Postgres::start() {
        Ok(pg) => pg,
        Err(e) => panic!("starting the shared Postgres: {e}"),
    })
}

/// A fresh database on `pg` with a slot and publication name reserved for it.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    pub slot: String,
    pub publication: String,
    pub dsn: String,
}

impl TestDb {
    pub fn new(pg: &Postgres, prefix: &str) -> TestDb {
        let name = unique_name(prefix);
        ok(pg.create_database(&name));
        TestDb {
            slot: format!("{name}_slot"),
            publication: format!("{name}_pub"),
            dsn: pg.dsn(&name),
            name,
        }
    }

    pub fn connect_config(&self) -> Dsn {
        ok(Dsn::parse(&self.dsn))
    }

    /// A change-stream config that creates publication and slot for `tables`.
    pub fn stream_config(&self, tables: &[&str]) -> ChangeStreamConfig {
        let mut c = ChangeStreamConfig::new(self.connect_config(), &self.slot, &self.publication);
        c.create = true;
        c.tables = tables.iter().map(|t| ok(t.parse())).collect();
        c.status_interval = Duration::from_millis(500);
        c.backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: Some(30),
        };
        c
    }

    /// Runs SQL in this database (simple query protocol, so several statements are fine).
    pub async fn exec(&self, sql: &str) {
        let client = ok(connect_sql(&self.connect_config()).await);
        if let Err(e) = client.batch_execute(sql).await {
            panic!("{sql}: {e}");
        }
    }

    /// Runs each string as its own transaction, in order, on one session.
    pub async fn each(&self, statements: &[&str]) {
        let client = ok(connect_sql(&self.connect_config()).await);
        for sql in statements {
            if let Err(e) = client.batch_execute(sql).await {
                panic!("{sql}: {e}");
            }
        }
    }

    /// One text value.
    pub async fn query_one(&self, sql: &str) -> Option<String> {
        let client = ok(connect_sql(&self.connect_config()).await);
        match client.query_opt(sql, &[]).await {
            Ok(row) => row.and_then(|r| r.get::<_, Option<String>>(0)),
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    pub async fn slot_confirmed_flush(&self) -> Lsn {
        let sql = format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        );
        self.query_one(&sql)
            .await
            .and_then(|s| s.parse().ok())
            .unwrap_or(Lsn::ZERO)
    }

    pub async fn slot_active_pid(&self) -> Option<i32> {
        let sql = format!(
            "SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        );
        self.query_one(&sql).await.and_then(|s| s.parse().ok())
    }

    /// Drops the slot once nobody uses it (frees one of the cluster's few slots).
    pub async fn drop_slot(&self) {
        let slot = self.slot.clone();
        let dropped = wait_until_async("the slot released", Duration::from_secs(20), || async {
            self.slot_active_pid().await.is_none()
        })
        .await
        .is_ok();
        if dropped {
            self.exec(&format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ))
            .await;
        }
    }
}

/// Unwraps, panicking with the error's Display (clearer than `Debug`).
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

pub use walcast_testkit::wait_until_async;

/// The next event within `limit`.
pub async fn next_event(stream: &mut ChangeStream, limit: Duration) -> Event {
    match tokio::time::timeout(limit, stream.next()).await {
        Ok(Ok(ev)) => ev,
        Ok(Err(e)) => panic!("stream error: {e}"),
        Err(_) => panic!("no event within {limit:?}"),
    }
}

/// Events up to and including the `commits`-th Commit, confirming each Commit.
pub async fn collect_txns(stream: &mut ChangeStream, commits: usize) -> Vec<Event> {
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < commits {
        let ev = next_event(stream, Duration::from_secs(30)).await;
        if let Event::Commit(c) = &ev {
            seen += 1;
            ok(stream.confirm(c.end_lsn).await);
        }
        out.push(ev);
    }
    out
}

/// Just the changes.
pub fn changes(events: &[Event]) -> Vec<&Change> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Change(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// The change as JSON, for compact assertions.
pub fn json(c: &Change) -> serde_json::Value {
    ok(serde_json::to_value(c))
}
