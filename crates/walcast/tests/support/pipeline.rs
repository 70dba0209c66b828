//! One Postgres cluster for the binary (each test has its own databases), the kit's shared
//! broker, `walcast` child processes with their logs, connector files derived from the shipped
//! ones, and a topic reader.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use walcast_testkit::{
    ConnectorFile, Kafka, Postgres, SINK_FILE, SOURCE_FILE, Service, TomlValue, repo_root,
    unique_name, wait_until,
};

use super::walcast;

/// The write schema (products + outbox_messages).
pub const WRITE_SQL: &str = include_str!("../../../../sql/write.sql");

/// A role that logs in with a password (scram) instead of trust, for wrong-password cases.
pub const PW_ROLE: &str = "walcast_pw";
pub const PW: &str = "right-password";

/// One cluster for this binary; every test has its own databases.
pub fn pg() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| {
        let pg = Postgres::builder()
            .hba_line(&format!("host all {PW_ROLE} 127.0.0.1/32 scram-sha-256"))
            .hba_line(&format!(
                "host replication {PW_ROLE} 127.0.0.1/32 scram-sha-256"
            ))
            // jsonb input and output recurse per nesting level: room for 10,000 levels.
            .setting("max_stack_depth", "'6MB'")
            .start()
            .expect("start Postgres");
        pg.psql(
            "postgres",
            &format!("CREATE ROLE {PW_ROLE} LOGIN SUPERUSER REPLICATION PASSWORD '{PW}'"),
        )
        .unwrap();
        pg
    })
}

pub fn kafka() -> &'static Kafka {
    Kafka::shared().expect("start Kafka")
}

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Product (aggregate) id number `n`.
pub fn pid(n: u32) -> String {
    format!("0000000a-0000-4000-8000-{n:012}")
}

/// Event id number `n`.
pub fn eid(n: u32) -> String {
    format!("0000000e-0000-4000-8000-{n:012}")
}

/// A database of its own on [`pg`].
pub struct Db {
    pub name: String,
}

impl Db {
    pub fn new(prefix: &str) -> Db {
        let name = unique_name(prefix);
        pg().create_database(&name).unwrap();
        Db { name }
    }

    pub fn dsn(&self) -> String {
        pg().dsn(&self.name)
    }

    pub fn psql(&self, sql: &str) -> String {
        pg().psql(&self.name, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn client(&self) -> tokio_postgres::Client {
        let dsn = self.dsn();
        rt().block_on(async {
            let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
        })
    }

    /// One outbox row in its own transaction, every value a bound parameter.
    pub fn insert_outbox(&self, id: &str, aggregate: &str, event_type: &str, payload: &str) {
        let client = self.client();
        rt().block_on(async {
            client
                .execute(
                    "INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, \
                     payload) VALUES ($1::text::uuid, $2::text::uuid, $3, now(), $4::text::jsonb)",
                    &[&id, &aggregate, &event_type, &payload],
                )
                .await
                .unwrap_or_else(|e| panic!("insert {id}: {e:?}"))
        });
    }

    /// The outbox row's payload as Postgres prints it (what pgoutput sends).
    pub fn payload_text(&self, id: &str) -> String {
        self.query_text(
            "SELECT payload::text FROM outbox_messages WHERE id = $1::text::uuid",
            id,
        )
        .unwrap_or_else(|| panic!("no outbox row {id}"))
    }

    /// The first column of the first row of `sql` with one text parameter.
    pub fn query_text(&self, sql: &str, param: &str) -> Option<String> {
        let client = self.client();
        rt().block_on(async {
            client
                .query_opt(sql, &[&param])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
                .and_then(|r| r.get::<_, Option<String>>(0))
        })
    }

    /// Sum of the sink's stored next offsets in this target.
    pub fn stored_offsets(&self) -> i64 {
        pg().psql(
            &self.name,
            "SELECT coalesce(sum(next_offset), 0) FROM walcast_offsets",
        )
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
    }

    /// Waits until the sink stored offsets past `n` records of a one-partition topic.
    pub fn wait_offsets(&self, n: i64, limit: Duration, sink: &Service) {
        let reached = wait_until("the stored offsets", limit, || self.stored_offsets() >= n);
        assert!(
            reached.is_ok(),
            "{}: stored offsets {} of {n}\nsink log:\n{}",
            self.name,
            self.stored_offsets(),
            sink.log()
        );
    }

    /// The read rows, one text line each, in key order.
    pub fn rows(&self) -> String {
        self.psql(
            "SELECT concat_ws('|', product_id, sku, name, coalesce(description, '∅'), price, \
             currency, is_active, coalesce(search_text, '∅'), version, occurred_at) \
             FROM catalog_product_read ORDER BY product_id",
        )
    }
}

/// Topic, slot and publication names of a test's write database.
pub struct Names {
    pub topic: String,
    pub slot: String,
    pub publication: String,
}

impl Names {
    pub fn for_db(db: &Db) -> Names {
        Names {
            topic: format!("{}.events", db.name),
            slot: format!("{}_slot", db.name),
            publication: format!("{}_pub", db.name),
        }
    }
}

/// Where the `walcast` children of this binary write their logs (one file per start).
fn logs() -> &'static Path {
    static LOGS: OnceLock<PathBuf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("walcast-pipeline-")
            .tempdir()
            .unwrap()
            .keep();
        // The kit's sweep removes it once this process is gone.
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string()).unwrap();
        dir
    })
}

/// `walcast ARGS` as a child process, its output in a log file of its own. Killed on drop.
pub fn spawn(name: &str, args: &[&str]) -> Service {
    walcast(&unique_name(name), args, logs())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env_remove("WALCAST_LOG_JSON")
        .start()
        .unwrap()
}

/// `walcast source --config cfg`, once it logs that it streams (within 90 s).
pub fn streaming_source(cfg: &Path) -> Service {
    let source = spawn("source", &["source", "--config", path_str(cfg)]);
    source.expect_log("source streaming", Duration::from_secs(90));
    source
}

/// What the tests ask of a `walcast` child beyond the kit's [`Service`].
pub trait Child {
    /// Waits until its log contains `needle`; panics with the log after `limit`.
    fn expect_log(&self, needle: &str, limit: Duration);
    /// Waits for it to exit on its own; panics with the log after `limit`.
    fn exited(&mut self, limit: Duration) -> ExitStatus;
    /// SIGTERM, then SIGKILL if it has not exited within 30 s; whether it exited with success.
    fn stop(&mut self) -> bool;
}

impl Child for Service {
    fn expect_log(&self, needle: &str, limit: Duration) {
        if let Err(e) = self.wait_for_log(needle, limit) {
            panic!("{e}");
        }
    }

    fn exited(&mut self, limit: Duration) -> ExitStatus {
        self.wait_exit(limit).unwrap_or_else(|| {
            panic!(
                "{} still running after {limit:?}:\n{}",
                self.name(),
                self.log()
            )
        })
    }

    fn stop(&mut self) -> bool {
        self.terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    }
}

/// The shipped source file with this test's database, slot, publication, broker and topic
/// (one partition), then `extra` keys set.
pub fn source_config(
    dir: &Path,
    db: &Db,
    names: &Names,
    extra: &[(&[&str], TomlValue)],
) -> PathBuf {
    source_config_dsn(dir, &db.dsn(), names, extra)
}

pub fn source_config_dsn(
    dir: &Path,
    dsn: &str,
    names: &Names,
    extra: &[(&[&str], TomlValue)],
) -> PathBuf {
    let mut file = ConnectorFile::shipped(SOURCE_FILE).unwrap();
    file.set(&["postgres", "dsn"], dsn)
        .set(&["postgres", "slot"], names.slot.as_str())
        .set(&["postgres", "publication"], names.publication.as_str())
        .set(&["kafka", "brokers"], kafka().bootstrap())
        .set(&["kafka", "topic"], names.topic.as_str())
        .set(&["kafka", "partitions"], 1)
        .set(&["admin", "listen"], "127.0.0.1:0")
        .set(&["retry", "max_backoff_ms"], 1000);
    for (key, value) in extra {
        file.set(key, value.clone());
    }
    file.write(&dir.join(format!("{}.source.toml", names.slot)))
        .unwrap()
}

/// The shipped sink file with this test's broker, topic, admin port and targets.
pub fn sink_config(dir: &Path, topic: &str, targets: &[(&str, String)], admin: u16) -> PathBuf {
    let read_sql = repo_root().join("sql/read.sql").canonicalize().unwrap();
    let mut file = ConnectorFile::shipped(SINK_FILE).unwrap();
    file.set(&["kafka", "brokers"], kafka().bootstrap())
        .set(&["kafka", "topic"], topic)
        .set(&["kafka", "metadata_refresh_secs"], 5)
        .set(&["admin", "listen"], format!("127.0.0.1:{admin}"))
        .set(
            &["schema", "files"],
            TomlValue::from_iter([read_sql.display().to_string()]),
        )
        .set(&["retry", "max_backoff_ms"], 1000);
    file.remove(&["targets"]);
    for (name, dsn) in targets {
        file.set(&["targets", name, "dsn"], dsn.as_str());
    }
    file.write(&dir.join(format!("{topic}.sink.toml"))).unwrap()
}

/// One record as read back.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

impl Rec {
    /// A header's value, "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// A short description of records for assertion messages (values can be huge).
pub fn summary(rs: &[Rec]) -> String {
    rs.iter()
        .map(|r| {
            format!(
                "p{} o{} id={} type={} target={} kind={} error={} len={}\n",
                r.partition,
                r.offset,
                r.header("id"),
                r.header("event_type"),
                r.header("walcast.target"),
                r.header("walcast.error.kind"),
                r.header("walcast.error")
                    .chars()
                    .take(200)
                    .collect::<String>(),
                r.value.as_ref().map_or(0, Vec::len)
            )
        })
        .collect()
}

/// Reads every partition of `topic` from the beginning until `done` holds; panics after
/// `limit` with what was read.
pub fn read_topic(topic: &str, limit: Duration, done: impl Fn(&[Rec]) -> bool) -> Vec<Rec> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .set("group.id", unique_name("hostile_reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .set("log_level", "3")
        .create()
        .unwrap();
    let deadline = Instant::now() + limit;
    let partitions = loop {
        let n = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|md| md.topics().first().map(|t| t.partitions().len() as i32))
            .unwrap_or(0);
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < deadline, "topic {topic} did not appear");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut records = Vec::new();
    loop {
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: condition not met within {limit:?}; read:\n{}",
            summary(&records)
        );
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap_or_else(|e| panic!("consuming {topic}: {e}"));
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            records.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
}

/// Creates a topic on the shared broker.
pub fn create_topic(topic: &str, partitions: i32) {
    rt().block_on(kafka().create_topic(topic, partitions))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Produces events the way the source does (key, value, `id`/`event_type`/`occurred_at`).
pub fn produce(topic: &str, events: &[(String, String, &str, String)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (id, key, event_type, payload) in events {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "id",
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: "event_type",
                value: Some(*event_type),
            })
            .insert(Header {
                key: "occurred_at",
                value: Some("2026-05-01T12:00:00Z"),
            });
        producer
            .send(
                BaseRecord::to(topic)
                    .key(key.as_str())
                    .payload(payload.as_str())
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// `GET path` on an admin endpoint: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub fn created(product: &str, sku: &str, name: &str, description: &str, price: &str) -> Value {
    json!({"productId": product, "sku": sku, "name": name, "description": description,
           "price": price, "currency": "EUR", "isActive": true, "version": 1})
}

pub fn product_events(
    range: std::ops::Range<u32>,
    name: impl Fn(u32) -> String,
) -> Vec<(String, String, &'static str, String)> {
    range
        .map(|n| {
            let p = pid(n);
            (
                eid(n),
                p.clone(),
                "ProductCreated",
                created(&p, &format!("SKU-{n}"), &name(n), "d", "1.00").to_string(),
            )
        })
        .collect()
}

/// A write database with the outbox, the signal table the shipped source file names, their
/// publication and the slot created by the superuser, so a source connecting with another
/// role (or with `create = false`) gets as far as replication.
pub fn prepared_write_db(prefix: &str) -> (Db, Names) {
    let db = Db::new(prefix);
    let names = Names::for_db(&db);
    db.psql(WRITE_SQL);
    db.psql(&format!(
        "CREATE TABLE public.walcast_signal (id text PRIMARY KEY, type text NOT NULL, data text); \
         CREATE PUBLICATION {} FOR TABLE public.outbox_messages, public.walcast_signal",
        names.publication
    ));
    db.psql(&format!(
        "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
        names.slot
    ));
    (db, names)
}

/// `/ready` reason and the `walcast_sink_target_up` gauge of a target.
pub fn target_state(admin: u16, target: &str) -> (String, Option<f64>) {
    let (_, ready) = http_get(admin, "/ready");
    let (_, metrics) = http_get(admin, "/metrics");
    let prefix = format!("walcast_sink_target_up{{target=\"{target}\"}} ");
    let up = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok());
    (ready, up)
}
