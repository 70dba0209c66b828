//! Shared helpers: one Postgres cluster for the whole binary (each test has its own database,
//! slot, publication and topic), the kit's shared Kafka broker, running the source in process
//! or as a child process, a topic reader, and a load generator with concurrent writers.

#![allow(dead_code)]

pub mod kafka;
pub mod load;
pub mod snapshot;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use walcast_pgoutput::Lsn;
use walcast_source::{Options, Source, SourceConfig};
use walcast_telemetry::admin::Health;
use walcast_telemetry::metrics::Registry;
use walcast_testkit::{Kafka, Postgres, unique_name};

/// The write schema (products + outbox_messages) the source is built for.
pub const WRITE_SQL: &str = include_str!("../../../../sql/write.sql");

/// The shared cluster. Its processes die with the test binary.
pub fn shared_pg() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| ok(Postgres::start()))
}

/// The kit's shared broker (never stopped; outage tests start their own).
pub fn shared_kafka() -> &'static Kafka {
    ok(Kafka::shared())
}

/// Unwraps, panicking with the error's Display (clearer than `Debug`).
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

pub use walcast_testkit::wait_until_async;

/// A database of its own, with slot, publication and topic names reserved for it.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    pub dsn: String,
    pub slot: String,
    pub publication: String,
    pub topic: String,
}

impl TestDb {
    pub fn new(prefix: &str) -> TestDb {
        TestDb::on(shared_pg(), prefix)
    }

    /// A database on another cluster (tests that restart Postgres own their cluster).
    pub fn on(pg: &Postgres, prefix: &str) -> TestDb {
        let name = unique_name(prefix);
        ok(pg.create_database(&name));
        TestDb {
            dsn: pg.dsn(&name),
            slot: format!("{name}_slot"),
            publication: format!("{name}_pub"),
            topic: format!("{name}.events"),
            name,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) =
            ok(tokio_postgres::connect(&self.dsn, tokio_postgres::NoTls).await);
        tokio::spawn(connection);
        client
    }

    pub async fn exec(&self, sql: &str) {
        if let Err(e) = self.client().await.batch_execute(sql).await {
            panic!(
                "{sql}: {}",
                e.as_db_error().map_or(e.to_string(), ToString::to_string)
            );
        }
    }

    pub async fn query_text(&self, sql: &str) -> Option<String> {
        match self.client().await.query_opt(sql, &[]).await {
            Ok(row) => row.and_then(|r| r.get::<_, Option<String>>(0)),
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    /// The write schema, the publication of the outbox and the slot, before any event is
    /// written (a publication created after the changes it should cover does not cover them).
    pub async fn prepare(&self) {
        self.prepare_with(WRITE_SQL).await;
    }

    /// Like [`TestDb::prepare`] with other DDL (it must create `public.outbox_messages`).
    pub async fn prepare_with(&self, ddl: &str) {
        self.exec(ddl).await;
        self.exec(&format!(
            "CREATE PUBLICATION {} FOR TABLE public.outbox_messages",
            self.publication
        ))
        .await;
        // Its own statement: a slot cannot be created in a transaction that wrote.
        self.exec(&format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            self.slot
        ))
        .await;
    }

    pub async fn slot_confirmed(&self) -> Lsn {
        let sql = format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        );
        self.query_text(&sql)
            .await
            .and_then(|s| s.parse().ok())
            .unwrap_or(Lsn::ZERO)
    }

    pub async fn slot_active(&self) -> bool {
        let sql = format!(
            "SELECT active::text FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        );
        self.query_text(&sql).await.as_deref() == Some("true")
    }

    /// Whether a source streams from the slot within `limit`.
    pub async fn streams_within(&self, limit: Duration) -> bool {
        wait_until_async("the source streaming from the slot", limit, || async {
            self.slot_active().await
        })
        .await
        .is_ok()
    }

    pub async fn current_lsn(&self) -> Lsn {
        self.query_text("SELECT pg_current_wal_lsn()::text")
            .await
            .and_then(|s| s.parse().ok())
            .unwrap_or(Lsn::ZERO)
    }

    /// Every outbox row as the database has it.
    pub async fn outbox(&self) -> Vec<OutboxRow> {
        let rows = ok(self
            .client()
            .await
            .query(
                "SELECT id::text, aggregate_id::text, event_type, occurred_at::text, \
                        correlation_id::text, payload::text FROM outbox_messages",
                &[],
            )
            .await);
        rows.iter()
            .map(|r| OutboxRow {
                id: r.get(0),
                aggregate_id: r.get(1),
                event_type: r.get(2),
                occurred_at: r.get(3),
                correlation_id: r.get(4),
                payload: r.get(5),
            })
            .collect()
    }

    /// Drops the slot once nobody streams from it (frees one of the cluster's slots).
    pub async fn drop_slot(&self) {
        let gone = wait_until_async("the slot released", Duration::from_secs(30), || async {
            !self.slot_active().await
        })
        .await
        .is_ok();
        if gone {
            self.exec(&format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{}'",
                self.slot
            ))
            .await;
        }
    }
}

/// An outbox row, as text.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: String,
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    pub occurred_at: Option<String>,
    pub correlation_id: Option<String>,
    pub payload: Option<String>,
}

/// Writes a connector file for `db` into `dir`; `kafka_extra` lines go into `[kafka]`,
/// `extra` at the end (whole sections).
pub fn config_file(
    dir: &Path,
    db: &TestDb,
    brokers: &str,
    kafka_extra: &str,
    extra: &str,
) -> PathBuf {
    let toml = format!(
        r#"
[postgres]
dsn = "{dsn}"
slot = "{slot}"
publication = "{publication}"
status_interval_ms = 200
lag_interval_secs = 1

[kafka]
brokers = "{brokers}"
topic = "{topic}"
partitions = 3
replication_factor = 1
{kafka_extra}

[admin]
listen = "127.0.0.1:0"

[retry]
initial_backoff_ms = 100
max_backoff_ms = 1000
{extra}
"#,
        dsn = db.dsn,
        slot = db.slot,
        publication = db.publication,
        topic = db.topic,
    );
    let path = dir.join(format!("{}.toml", db.name));
    ok(std::fs::write(&path, toml));
    path
}

pub fn load_config(path: &Path) -> SourceConfig {
    ok(SourceConfig::load(path))
}

/// The source for `db` on the kit's broker, running in this process; `kafka_extra` lines go
/// into `[kafka]`.
pub fn start_source(db: &TestDb, kafka_extra: &str) -> InProcess {
    let dir = ok(tempfile::tempdir());
    let path = config_file(dir.path(), db, &shared_kafka().bootstrap(), kafka_extra, "");
    InProcess::start(load_config(&path))
}

/// The source running in this process until [`InProcess::stop`].
#[derive(Debug)]
pub struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<walcast_source::Result<()>>,
    pub health: Health,
    pub registry: Registry,
}

impl InProcess {
    pub fn start(config: SourceConfig) -> InProcess {
        Self::start_with(config, Options::default())
    }

    pub fn start_with(config: SourceConfig, options: Options) -> InProcess {
        // Source logs on stderr only when asked for (RUST_LOG=...), to debug a test.
        if std::env::var_os("RUST_LOG").is_some() {
            walcast_telemetry::logging::init(walcast_telemetry::logging::LogFormat::Human);
        }
        let registry = Registry::default();
        let health = Health::default();
        let (tx, rx) = oneshot::channel::<()>();
        let source = Source::new(config, options, &registry, health.clone());
        let task = tokio::spawn(source.run(async {
            let _ = rx.await;
        }));
        InProcess {
            stop: Some(tx),
            task,
            health,
            registry,
        }
    }

    /// Whether the source stopped by itself (an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Graceful stop: what SIGTERM does.
    pub async fn stop(mut self) -> walcast_source::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(Duration::from_secs(60), &mut self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => panic!("source task panicked: {e}"),
            Err(_) => panic!("source did not stop within 60 s"),
        }
    }

    /// The metric's value in the Prometheus text (first sample with that name).
    pub fn metric(&self, name: &str) -> f64 {
        metric(&self.registry.render(), name)
    }
}

/// The first sample of `name` in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .find(|l| l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Runs blocking work (rdkafka's blocking consumer, the kit's process control) off the
/// runtime's workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    ok(tokio::task::spawn_blocking(f).await)
}
