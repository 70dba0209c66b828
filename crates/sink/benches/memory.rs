//! The sink's peak memory behind a backlog of large events, against its bound.
//!
//! ```text
//! cargo bench -p walcast-sink --bench memory                       # 2 GB backlog, 4 targets
//! WALCAST_BENCH_BACKLOG_MB=200 WALCAST_BENCH_TARGETS=2 cargo bench -p walcast-sink --bench memory
//! ```
//!
//! A 3-partition topic is filled with `ProductCreated` events of about 1 MB each (a 990,000
//! byte description) until it holds `WALCAST_BENCH_BACKLOG_MB`; then a sink with the shipped
//! mapping and `[batch] max_bytes` (`WALCAST_BENCH_MAX_BYTES`, default 16 MB) drains it into
//! `WALCAST_BENCH_TARGETS` fresh databases. The sink runs as a child process (this program,
//! re-executed), so its peak RSS (`VmHWM`) is its own; the program prints it next to the bound
//! `targets × (2 × max_bytes + 8 MB) + 64 MB` and exits 1 if it is above.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_postgres::NoTls;
use walcast_sink::{Sink, SinkConfig};
use walcast_telemetry::admin::Health;
use walcast_telemetry::metrics::Registry;
use walcast_testkit::{Kafka, Postgres, unique_name};

const TARGETS: [&str; 4] = ["catalog_read", "replica-1", "replica-2", "replica-3"];
const DESCRIPTION_BYTES: usize = 990_000;
const MB: usize = 1024 * 1024;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(config) = std::env::var("WALCAST_BENCH_SINK_CONFIG") {
        // The child: run the sink until the parent kills it.
        let config = SinkConfig::load(config.as_ref()).unwrap();
        let sink = Sink::new(config, Registry::default(), Health::default()).unwrap();
        rt.block_on(sink.run(std::future::pending())).unwrap();
        return;
    }
    let backlog = env("WALCAST_BENCH_BACKLOG_MB", 2048) * MB;
    let targets = env("WALCAST_BENCH_TARGETS", 4).clamp(1, 4);
    let max_bytes = env("WALCAST_BENCH_MAX_BYTES", 16 * MB);
    let events = backlog.div_ceil(DESCRIPTION_BYTES + 400);
    let bound = targets * (2 * max_bytes + 8 * MB) + 64 * MB;
    println!(
        "walcast sink memory benchmark: {events} events of ~1 MB ({} MB), {targets} targets, max_bytes {} MB",
        backlog / MB,
        max_bytes / MB
    );
    let kafka = Kafka::start().unwrap();
    let pg = Postgres::start().unwrap();
    rt.block_on(async {
        let topic = unique_name("bench_mem");
        kafka.create_topic(&topic, 3).await.unwrap();
        let started = Instant::now();
        publish(&kafka, &topic, events).await;
        println!("published in {:.1} s", started.elapsed().as_secs_f64());

        let dbs: BTreeMap<String, String> = TARGETS[..targets]
            .iter()
            .map(|t| {
                let db = unique_name("bench_mem");
                pg.create_database(&db).unwrap();
                (t.to_string(), pg.dsn(&db))
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sink.toml");
        std::fs::write(&path, config_text(&kafka, &topic, &dbs, max_bytes)).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("WALCAST_BENCH_SINK_CONFIG", &path)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut clients = Vec::new();
        for dsn in dbs.values() {
            clients.push(connect(dsn).await);
        }
        let mut peak = 0;
        loop {
            peak = peak.max(vm_hwm(child.id()));
            if common::all_drained(&clients, events as i64).await {
                break;
            }
            assert!(
                matches!(child.try_wait(), Ok(None)),
                "the sink exited early"
            );
            assert!(
                started.elapsed() < Duration::from_secs(3600),
                "the sink did not finish in an hour"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        peak = peak.max(vm_hwm(child.id()));
        let elapsed = started.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        println!(
            "drained {} MB into {targets} targets in {:.1} s; sink peak RSS {} MB, bound {targets} x (2 x {} MB + 8 MB) + 64 MB = {} MB: {}",
            backlog / MB,
            elapsed.as_secs_f64(),
            peak / MB,
            max_bytes / MB,
            bound / MB,
            if peak <= bound { "within" } else { "ABOVE" }
        );
        if peak > bound {
            std::process::exit(1);
        }
    });
}

/// Peak resident set of `pid` in bytes (`VmHWM`), 0 when unreadable.
fn vm_hwm(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The shipped connector file with this run's broker, topic, databases and `max_bytes`; the
/// targets not used are left out.
fn config_text(
    kafka: &Kafka,
    topic: &str,
    dbs: &BTreeMap<String, String>,
    max_bytes: usize,
) -> String {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut text = std::fs::read_to_string(root.join("connectors/catalog-read-sink.toml")).unwrap();
    let read_sql = root.join("sql/read.sql").display().to_string();
    for (from, to) in [
        (
            "brokers = \"127.0.0.1:19092\"".to_owned(),
            format!("brokers = {:?}", kafka.bootstrap()),
        ),
        (
            "topic = \"catalog.events\"".to_owned(),
            format!("topic = {topic:?}"),
        ),
        (
            "listen = \"127.0.0.1:9465\"".to_owned(),
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        (
            "files = [\"../sql/read.sql\"]".to_owned(),
            format!("files = [{read_sql:?}]"),
        ),
        (
            "max_bytes = 16777216".to_owned(),
            format!("max_bytes = {max_bytes}"),
        ),
    ] {
        assert!(text.contains(&from), "the shipped config has no {from:?}");
        text = text.replacen(&from, &to, 1);
    }
    for (t, port) in TARGETS.iter().zip(5432..) {
        let old = format!(
            "[targets.{t}]\ndsn = \"host=127.0.0.1 port={port} user=postgres dbname=catalog_read\""
        );
        let new = dbs
            .get(*t)
            .map(|dsn| format!("[targets.{t}]\ndsn = {dsn:?}"))
            .unwrap_or_default();
        text = text.replacen(&old, &new, 1);
    }
    text
}

/// `n` ProductCreated events of about 1 MB, acknowledged by the broker.
async fn publish(kafka: &Kafka, topic: &str, n: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let description = "lorem ipsum dolor sit amet ".repeat(DESCRIPTION_BYTES / 27);
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let product = uuid::Uuid::new_v4();
        let id = uuid::Uuid::new_v4().to_string();
        let lsn = walcast_pgoutput::Lsn::from((i as u64 + 1) * 0x100).to_string();
        let value = serde_json::json!({
            "productId": product, "sku": format!("SKU-{i:06}"), "name": format!("Big {i}"),
            "description": description, "price": "1.00", "currency": "EUR",
            "isActive": true, "version": 1,
        })
        .to_string();
        let headers = common::envelope(&id, "ProductCreated", "2026-05-01T12:00:00Z", &lsn);
        let key = product.to_string();
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        pending.push_back(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        // At most 64 records (64 MB) in flight.
        if pending.len() >= 64
            && let Some(d) = pending.pop_front()
        {
            d.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }
    for d in pending {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

async fn connect(dsn: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}
