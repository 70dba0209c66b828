//! Real parts for the sink's tests: four Postgres clusters shared by the tests of this binary
//! (each test on its own databases), the kit's shared Kafka (each test on its own topic), a
//! producer that publishes like the source, and a sink run in-process or as a child process.

#![allow(dead_code, clippy::result_large_err)]

pub mod model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use walcast_sink::{Sink, SinkConfig};
use walcast_telemetry::admin::{self, Health};
use walcast_telemetry::metrics::Registry;
use walcast_testkit::{Kafka, Postgres, unique_name};

use model::Event;

/// The target names of the shipped connector file.
pub const TARGETS: [&str; 4] = ["catalog_read", "replica-1", "replica-2", "replica-3"];

/// One line per read row: what [`model::Catalog::expected`] predicts.
pub const ROWS_SQL: &str = "SELECT concat_ws('|', product_id, sku, name, coalesce(description, '∅'), \
     price, currency, is_active, search_text, version, \
     (extract(epoch FROM occurred_at) * 1000000)::bigint, updated_at = occurred_at) \
     FROM catalog_product_read ORDER BY product_id";

/// Four clusters for the whole test binary; tests that stop one start their own.
pub fn clusters() -> &'static [Postgres] {
    static CLUSTERS: OnceLock<Vec<Postgres>> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        (0..4)
            .map(|_| Postgres::start().unwrap_or_else(|e| panic!("start postgres: {e}")))
            .collect()
    })
}

pub fn kafka() -> &'static Kafka {
    Kafka::shared().unwrap_or_else(|e| panic!("start kafka: {e}"))
}

/// A fresh database on each shared cluster: target name → dsn.
pub fn fresh_targets() -> BTreeMap<String, String> {
    clusters()
        .iter()
        .zip(TARGETS)
        .map(|(pg, name)| {
            let db = unique_name("read");
            pg.create_database(&db).unwrap_or_else(|e| panic!("{e}"));
            (name.to_owned(), pg.dsn(&db))
        })
        .collect()
}

/// A topic of its own for a test.
pub async fn fresh_topic(partitions: i32) -> String {
    let topic = unique_name("catalog_events");
    kafka()
        .create_topic(&topic, partitions)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    topic
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped connector file with this test's broker, topic, databases and batch size,
/// written to `dir`. Everything else (the mapping) is exactly what ships.
pub fn write_config(
    dir: &Path,
    topic: &str,
    targets: &BTreeMap<String, String>,
    max_events: usize,
) -> PathBuf {
    let shipped = repo_root().join("connectors/catalog-read-sink.toml");
    let mut text = std::fs::read_to_string(&shipped).unwrap_or_else(|e| panic!("{e}"));
    let read_sql = repo_root()
        .join("sql/read.sql")
        .canonicalize()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut replace = |from: &str, to: &str| {
        assert!(text.contains(from), "the shipped config has no {from:?}");
        text = text.replacen(from, to, 1);
    };
    replace(
        "brokers = \"127.0.0.1:19092\"",
        &format!("brokers = {:?}", kafka().bootstrap()),
    );
    replace("topic = \"catalog.events\"", &format!("topic = {topic:?}"));
    replace("listen = \"127.0.0.1:9465\"", "listen = \"127.0.0.1:0\"");
    replace(
        "files = [\"../sql/read.sql\"]",
        &format!("files = [{:?}]", read_sql.display().to_string()),
    );
    replace("max_events = 1000", &format!("max_events = {max_events}"));
    replace("metadata_refresh_secs = 30", "metadata_refresh_secs = 5");
    for (name, port) in [
        ("catalog_read", 5432),
        ("replica-1", 5433),
        ("replica-2", 5434),
        ("replica-3", 5435),
    ] {
        let old = format!(
            "[targets.{name}]\ndsn = \"host=127.0.0.1 port={port} user=postgres dbname=catalog_read\""
        );
        let new = format!("[targets.{name}]\ndsn = {:?}", targets[name]);
        replace(&old, &new);
    }
    let path = dir.join("sink.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

pub fn load(path: &Path) -> SinkConfig {
    SinkConfig::load(path).unwrap_or_else(|e| panic!("{e}"))
}

/// A sink running in this process, with its admin endpoint.
pub struct Running {
    pub registry: Registry,
    pub health: Health,
    pub admin: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<walcast_sink::Result<()>>,
    admin_task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn start(config: SinkConfig) -> Running {
        let registry = Registry::default();
        let health = Health::default();
        let listener = admin::bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let admin_task = tokio::spawn(admin::serve(
            listener,
            registry.clone(),
            health.clone(),
            std::future::pending(),
        ));
        let sink =
            Sink::new(config, registry.clone(), health.clone()).unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sink.run(async {
            let _ = rx.await;
        }));
        Running {
            registry,
            health,
            admin: addr,
            stop: Some(tx),
            task,
            admin_task,
        }
    }

    /// The value of `metric{target="..."}` in the Prometheus text.
    pub fn metric(&self, name: &str, target: &str) -> f64 {
        let text = self.registry.render();
        let prefix = format!("{name}{{target=\"{target}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .unwrap_or_else(|_| panic!("the sink did not stop within 30 s"));
        r.unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("sink failed: {e}"));
        self.admin_task.abort();
    }
}

/// An HTTP GET against the admin endpoint: (status line, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Publishes events like the source does (key = product id, envelope in headers) and waits for
/// the broker to acknowledge every one. `lsn` numbers the `walcast.commit_lsn` headers.
pub async fn produce(topic: &str, events: &[Event], lsn: &mut u64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut pending = Vec::new();
    for e in events {
        *lsn += 0x100;
        let id = e.id.to_string();
        let occurred = format_micros(e.occurred_at);
        let commit_lsn = walcast_pgoutput::Lsn::from(*lsn).to_string();
        let version = e.event_version.map(|v| v.to_string());
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "id",
                value: Some(&id),
            })
            .insert(Header {
                key: "event_type",
                value: Some(e.event_type),
            })
            .insert(Header {
                key: "occurred_at",
                value: Some(&occurred),
            })
            .insert(Header {
                key: "walcast.lsn",
                value: Some(&commit_lsn),
            })
            .insert(Header {
                key: "walcast.commit_lsn",
                value: Some(&commit_lsn),
            });
        if let Some(v) = &version {
            headers = headers.insert(Header {
                key: "event_version",
                value: Some(v),
            });
        }
        let key = e.product.to_string();
        let value = e.payload.to_string();
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    for d in pending {
        d.await
            .unwrap_or_else(|e| panic!("{e}"))
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("delivery: {e}"));
    }
}

/// A raw record: key, value, headers.
pub type RawRecord = (String, Vec<u8>, Vec<(String, String)>);

/// Publishes raw records (for poison tests).
pub async fn produce_raw(topic: &str, records: &[RawRecord]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    for (key, value, hs) in records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in hs {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(value)
            .headers(headers);
        producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("{e}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// ISO 8601 UTC from µs since the epoch (the test's own formatter, not the sink's).
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}+00:00",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

pub async fn connect(dsn: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("{dsn}: {e}"));
    tokio::spawn(conn);
    client
}

/// The read rows of a target, formatted by [`ROWS_SQL`].
pub async fn rows(dsn: &str) -> Vec<String> {
    let c = connect(dsn).await;
    c.query(ROWS_SQL, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub async fn count(dsn: &str, sql: &str) -> i64 {
    let c = connect(dsn).await;
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Sum of the target's stored next offsets (its progress through a topic that started at 0).
pub async fn progress(dsn: &str) -> Option<i64> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await.ok()?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM walcast_offsets",
            &[],
        )
        .await
        .ok()?;
    Some(row.get(0))
}

/// Waits until every target in `dsns` has consumed `records` records, or panics at the deadline.
pub async fn wait_caught_up<'a>(
    dsns: impl IntoIterator<Item = &'a String> + Clone,
    records: i64,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut behind = Vec::new();
        for dsn in dsns.clone() {
            let p = progress(dsn).await;
            if p != Some(records) {
                behind.push(format!("{dsn}: {p:?}/{records}"));
            }
        }
        if behind.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not caught up within {within:?}: {}", behind.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts the target's rows equal the model's, showing the first difference.
pub async fn assert_rows(target: &str, dsn: &str, expected: &[String]) {
    let actual = rows(dsn).await;
    if actual != expected {
        let first = actual
            .iter()
            .zip(expected)
            .position(|(a, e)| a != e)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "{target}: {} rows, expected {}; first difference at {first}:\n  actual:   {:?}\n  expected: {:?}",
            actual.len(),
            expected.len(),
            actual.get(first),
            expected.get(first)
        );
    }
}

/// The first `n` records of `<topic>.dlq`, or a panic after `within`.
pub async fn dead_letters(
    topic: &str,
    n: usize,
    within: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    use futures_util::StreamExt;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .set("group.id", unique_name("dlq_reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    consumer
        .subscribe(&[&format!("{topic}.dlq")])
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    let mut stream = consumer.stream();
    while out.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(m))) => out.push(m.detach()),
            Ok(other) => panic!("reading {topic}.dlq: {other:?}"),
            Err(_) => panic!("{} of {n} dead letters within {within:?}", out.len()),
        }
    }
    out
}

/// The value of header `name` of `m`, as text.
pub fn header_text(m: &impl rdkafka::Message, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Publishes one ProductCreated of a new product per `(partition, lsn)`, to that partition;
/// returns the products.
pub async fn produce_at(topic: &str, events: &[(i32, u64)]) -> Vec<uuid::Uuid> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut pending = Vec::new();
    let mut products = Vec::new();
    for (partition, lsn) in events {
        let p = uuid::Uuid::new_v4();
        products.push(p);
        let (id, lsn) = (
            uuid::Uuid::new_v4().to_string(),
            format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF),
        );
        let value =
            serde_json::json!({"productId": p, "sku": "S", "name": "N", "description": null,
            "price": "1.00", "currency": "EUR", "isActive": true, "version": 1})
            .to_string();
        let mut headers = OwnedHeaders::new();
        for (key, v) in [
            ("id", id.as_str()),
            ("event_type", "ProductCreated"),
            ("occurred_at", "2026-05-01T12:00:00Z"),
            ("walcast.commit_lsn", lsn.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(v),
            });
        }
        let key = p.to_string();
        let record = FutureRecord::to(topic)
            .partition(*partition)
            .key(&key)
            .payload(&value)
            .headers(headers);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in pending {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    products
}
