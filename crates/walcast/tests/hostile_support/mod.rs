//! Helpers of `hostile.rs`: one Postgres cluster for the binary, the kit's shared broker,
//! `walcast` child processes with captured stderr, connector files derived from the shipped
//! ones, and a topic reader.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use walcast_testkit::{Kafka, Postgres, unique_name};

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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// Polls `cond` every 100 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
    pub fn wait_offsets(&self, n: i64, limit: Duration, sink: &Proc) {
        let reached = wait_until(limit, || self.stored_offsets() >= n);
        assert!(
            reached,
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

/// A `walcast` child process; stderr is collected line by line. Killed on drop.
pub struct Proc {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(name: &'static str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_walcast"));
        cmd.args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env_remove("WALCAST_LOG_JSON")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn walcast");
        let stderr = child.stderr.take().unwrap();
        let log: Arc<Mutex<String>> = Arc::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
                l.push_str(&strip_ansi(&line));
                l.push('\n');
            }
        });
        Proc { name, child, log }
    }

    /// `walcast source --config cfg`, once it logs that it streams (within 90 s).
    pub fn streaming_source(cfg: &Path) -> Proc {
        let mut source = Proc::spawn("source", &["source", "--config", path_str(cfg)]);
        source.wait_for_log("source streaming", Duration::from_secs(90));
        source
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until stderr contains `needle`; panics with the log after `limit`.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) {
        let found = wait_until(limit, || self.log().contains(needle));
        assert!(
            found,
            "{} did not log {needle:?} within {limit:?}:\n{}",
            self.name,
            self.log()
        );
    }

    /// Waits for the process to exit on its own; panics with the log after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        // Let the reader thread drain the pipe.
        std::thread::sleep(Duration::from_millis(200));
        status.unwrap_or_else(|| {
            panic!(
                "{} still running after {limit:?}:\n{}",
                self.name,
                self.log()
            )
        })
    }

    /// SIGTERM, then SIGKILL if it has not exited within 30 s.
    pub fn stop(&mut self) -> ExitStatus {
        if let Ok(Some(s)) = self.child.try_wait() {
            return s;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut status = None;
        wait_until(Duration::from_secs(30), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        std::thread::sleep(Duration::from_millis(200));
        status.unwrap_or_else(|| {
            let _ = self.child.kill();
            self.child.wait().unwrap()
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn replace_once(text: &mut String, from: &str, to: &str) {
    assert!(text.contains(from), "the shipped config has no {from:?}");
    *text = text.replacen(from, to, 1);
}

/// The shipped source file with this test's database, slot, publication, broker and topic
/// (one partition), extra `(from, to)` replacements applied last.
pub fn source_config(dir: &Path, db: &Db, names: &Names, extra: &[(&str, &str)]) -> PathBuf {
    source_config_dsn(dir, &db.dsn(), names, extra)
}

pub fn source_config_dsn(dir: &Path, dsn: &str, names: &Names, extra: &[(&str, &str)]) -> PathBuf {
    let shipped = repo_root().join("connectors/catalog-outbox-source.toml");
    let mut text = std::fs::read_to_string(shipped).unwrap();
    for (from, to) in [
        (
            "dsn = \"host=127.0.0.1 port=5432 user=postgres dbname=catalog_write\"".to_owned(),
            format!("dsn = {dsn:?}"),
        ),
        (
            "slot = \"walcast_catalog_outbox\"".to_owned(),
            format!("slot = {:?}", names.slot),
        ),
        (
            "publication = \"walcast_catalog_outbox\"".to_owned(),
            format!("publication = {:?}", names.publication),
        ),
        (
            "brokers = \"127.0.0.1:19092\"".to_owned(),
            format!("brokers = {:?}", kafka().bootstrap()),
        ),
        (
            "topic = \"catalog.events\"".to_owned(),
            format!("topic = {:?}", names.topic),
        ),
        ("partitions = 3".to_owned(), "partitions = 1".to_owned()),
        (
            "listen = \"127.0.0.1:9464\"".to_owned(),
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        (
            "max_backoff_ms = 5000".to_owned(),
            "max_backoff_ms = 1000".to_owned(),
        ),
    ] {
        replace_once(&mut text, &from, &to);
    }
    for (from, to) in extra {
        replace_once(&mut text, from, to);
    }
    let path = dir.join(format!("{}.source.toml", names.slot));
    std::fs::write(&path, text).unwrap();
    path
}

/// The shipped sink file with this test's broker, topic, admin port and targets.
pub fn sink_config(dir: &Path, topic: &str, targets: &[(&str, String)], admin: u16) -> PathBuf {
    let shipped = repo_root().join("connectors/catalog-read-sink.toml");
    let mut text = std::fs::read_to_string(shipped).unwrap();
    let read_sql = repo_root().join("sql/read.sql").canonicalize().unwrap();
    for (from, to) in [
        (
            "brokers = \"127.0.0.1:19092\"".to_owned(),
            format!("brokers = {:?}", kafka().bootstrap()),
        ),
        (
            "topic = \"catalog.events\"".to_owned(),
            format!("topic = {topic:?}"),
        ),
        (
            "listen = \"127.0.0.1:9465\"".to_owned(),
            format!("listen = \"127.0.0.1:{admin}\""),
        ),
        (
            "files = [\"../sql/read.sql\"]".to_owned(),
            format!("files = [{:?}]", read_sql.display().to_string()),
        ),
        (
            "max_backoff_ms = 5000".to_owned(),
            "max_backoff_ms = 1000".to_owned(),
        ),
        (
            "metadata_refresh_secs = 30".to_owned(),
            "metadata_refresh_secs = 5".to_owned(),
        ),
    ] {
        replace_once(&mut text, &from, &to);
    }
    let start = text.find("[targets.catalog_read]").unwrap();
    let end = text.find("# Where the envelope lives").unwrap();
    let mine: String = targets
        .iter()
        .map(|(name, dsn)| format!("[targets.{name}]\ndsn = {dsn:?}\n\n"))
        .collect();
    text.replace_range(start..end, &mine);
    let path = dir.join(format!("{topic}.sink.toml"));
    std::fs::write(&path, text).unwrap();
    path
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
