//! Sink throughput against its floor, on real Postgres clusters and a real Kafka broker.
//!
//! ```text
//! cargo bench -p walcast-sink --bench apply            # 100,000 events, 4 targets
//! WALCAST_BENCH_EVENTS=20000 cargo bench -p walcast-sink --bench apply
//! ```
//!
//! For each workload, 100,000 events are published to a 3-partition topic first; then
//!
//! * **sink**: a `Sink` with the shipped mapping applies them to four fresh targets; timed from
//!   start until every target has stored the last offset (consume, decode, guard, bookkeeping,
//!   commit: the whole path);
//! * **floor**: the same final rows are written to four fresh databases by plain multi-row
//!   `INSERT … ON CONFLICT` (1,000 rows per statement), one connection per database, the four
//!   in parallel: the final `catalog_product_read` rows and one `processed_events` row per event
//!   (the sink's final state holds both; only its bookkeeping rows — offsets, applied LSN,
//!   tombstones of deleted rows — are left out of the floor).
//!
//! Both report events/s = events / seconds. Workload `create` is 100,000 new products (final
//! rows = events); `mixed` is the catalog model's stream (creates, renames, price changes,
//! (de)activations, deletes), whose final rows are fewer than its events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

#[path = "../tests/support/model.rs"]
#[allow(dead_code)]
mod model;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::Header;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;
use walcast_sink::{Sink, SinkConfig};
use walcast_telemetry::admin::Health;
use walcast_telemetry::metrics::Registry;
use walcast_testkit::{Kafka, Postgres, unique_name};

use model::{Catalog, Event};

const TARGETS: [&str; 4] = ["catalog_read", "replica-1", "replica-2", "replica-3"];

fn main() {
    let events: usize = std::env::var("WALCAST_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let max_events: usize = std::env::var("WALCAST_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kafka = Kafka::start().unwrap();
    let clusters: Vec<Postgres> = (0..4).map(|_| Postgres::start().unwrap()).collect();
    println!(
        "walcast sink benchmark: {events} events, 4 targets, batch {max_events}, 3 partitions"
    );
    for workload in ["create", "mixed"] {
        let mut catalog = Catalog::new(42);
        let stream: Vec<Event> = if workload == "create" {
            (0..events).map(|_| catalog.create(false)).collect()
        } else {
            (0..events).map(|_| catalog.change()).collect()
        };
        let final_rows = catalog.expected();
        rt.block_on(async {
            let topic = unique_name("bench");
            kafka.create_topic(&topic, 3).await.unwrap();
            publish(&kafka, &topic, &stream).await;
            let sink = run_sink(&kafka, &clusters, &topic, events as i64, max_events).await;
            println!("{workload:>6}: sink applied {events} events to 4 targets in {:.2} s", sink.as_secs_f64());
            let floor = run_floor(&clusters, &final_rows, &stream).await;
            let rate = |d: Duration| events as f64 / d.as_secs_f64();
            println!(
                "{workload:>6}: sink {:>8.0} events/s ({:.2} s)   floor {:>8.0} events/s ({:.2} s, {} product rows + {} processed_events rows)   sink/floor {:.2}",
                rate(sink),
                sink.as_secs_f64(),
                rate(floor),
                floor.as_secs_f64(),
                final_rows.len(),
                stream.len(),
                floor.as_secs_f64() / sink.as_secs_f64(),
            );
        });
    }
}

async fn publish(kafka: &Kafka, topic: &str, events: &[Event]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut pending = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let id = e.id.to_string();
        let at = iso(e.occurred_at);
        let lsn = walcast_pgoutput::Lsn::from((i as u64 + 1) * 0x100).to_string();
        let mut headers = common::envelope(&id, e.event_type, &at, &lsn);
        let version = e.event_version.map(|v| v.to_string());
        // Older-schema creates (v1: "title", no isActive) say so, as the source would; without
        // it they are dead-lettered and every later event of their product waits for a row.
        if let Some(v) = &version {
            headers = headers.insert(Header {
                key: "event_version",
                value: Some(v),
            });
        }
        let key = e.product.to_string();
        let value = e.payload.to_string();
        let mut record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(d) => {
                    pending.push(d);
                    break;
                }
                Err((_, r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for d in pending {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

fn fresh_dbs(clusters: &[Postgres]) -> BTreeMap<String, String> {
    clusters
        .iter()
        .zip(TARGETS)
        .map(|(pg, t)| {
            let db = unique_name("bench");
            pg.create_database(&db).unwrap();
            (t.to_owned(), pg.dsn(&db))
        })
        .collect()
}

async fn run_sink(
    kafka: &Kafka,
    clusters: &[Postgres],
    topic: &str,
    total: i64,
    max_events: usize,
) -> Duration {
    let dbs = fresh_dbs(clusters);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut text = std::fs::read_to_string(root.join("connectors/catalog-read-sink.toml")).unwrap();
    text = text
        .replacen(
            "brokers = \"127.0.0.1:19092\"",
            &format!("brokers = {:?}", kafka.bootstrap()),
            1,
        )
        .replacen(
            "topic = \"catalog.events\"",
            &format!("topic = {topic:?}"),
            1,
        )
        .replacen("listen = \"127.0.0.1:9465\"", "listen = \"127.0.0.1:0\"", 1)
        .replacen(
            "max_events = 1000",
            &format!("max_events = {max_events}"),
            1,
        )
        .replacen(
            "files = [\"../sql/read.sql\"]",
            &format!(
                "files = [{:?}]",
                root.join("sql/read.sql").display().to_string()
            ),
            1,
        );
    for (t, port) in TARGETS.iter().zip(5432..) {
        text = text.replacen(
            &format!("[targets.{t}]\ndsn = \"host=127.0.0.1 port={port} user=postgres dbname=catalog_read\""),
            &format!("[targets.{t}]\ndsn = {:?}", dbs[*t]),
            1,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.toml");
    std::fs::write(&path, text).unwrap();
    let config = SinkConfig::load(&path).unwrap();
    let sink = Sink::new(config, Registry::default(), Health::default()).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(sink.run(async {
        let _ = rx.await;
    }));
    let mut clients = Vec::new();
    for dsn in dbs.values() {
        clients.push(connect(dsn).await);
    }
    loop {
        if common::all_drained(&clients, total).await {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the sink did not finish in 15 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    elapsed
}

async fn connect(dsn: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

/// The final rows, written by plain multi-row INSERT … ON CONFLICT, one connection per database.
async fn run_floor(clusters: &[Postgres], rows: &[String], events: &[Event]) -> Duration {
    let dbs = fresh_dbs(clusters);
    let schema = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql/read.sql"),
    )
    .unwrap();
    let mut clients = Vec::new();
    for dsn in dbs.values() {
        let c = connect(dsn).await;
        c.batch_execute(&schema).await.unwrap();
        clients.push(c);
    }
    // Rows as formatted by the model: id|sku|name|desc|price|currency|active|search|version|µs|t
    let parsed: Vec<Vec<Option<String>>> = rows
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split('|').collect();
            let at = iso(f[9].parse().unwrap());
            vec![
                Some(f[0].into()),
                Some(f[1].into()),
                Some(f[2].into()),
                (f[3] != "∅").then(|| f[3].to_owned()),
                Some(f[4].into()),
                Some(f[5].into()),
                Some(f[6].into()),
                Some(f[7].into()),
                Some(f[8].into()),
                Some(at.clone()),
                Some(at),
            ]
        })
        .collect();
    let processed: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.id.to_string(), e.event_type.to_owned()))
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let rows = parsed.clone();
        let processed = processed.clone();
        tasks.push(tokio::spawn(async move {
            for chunk in processed.chunks(1000) {
                let mut sql = String::from("INSERT INTO processed_events (event_id, event_type) VALUES ");
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 2);
                for (i, (id, ty)) in chunk.iter().enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("(${}::text::uuid, ${})", i * 2 + 1, i * 2 + 2));
                    params.push(id);
                    params.push(ty);
                }
                sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
                c.execute(sql.as_str(), &params).await.unwrap();
            }
            for chunk in rows.chunks(1000) {
                let mut sql = String::from(
                    "INSERT INTO catalog_product_read (product_id, sku, name, description, price, currency, \
                     is_active, search_text, version, occurred_at, updated_at) VALUES ",
                );
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 11);
                for (i, row) in chunk.iter().enumerate() {
                    let b = i * 11;
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!(
                        "(${}::text::uuid, ${}, ${}, ${}, ${}::text::numeric, ${}, ${}::text::boolean, ${}, ${}::text::int, ${}::text::timestamptz, ${}::text::timestamptz)",
                        b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9, b + 10, b + 11
                    ));
                    params.extend(row.iter().map(|v| v as &(dyn ToSql + Sync)));
                }
                sql.push_str(
                    " ON CONFLICT (product_id) DO UPDATE SET sku = EXCLUDED.sku, name = EXCLUDED.name, \
                     description = EXCLUDED.description, price = EXCLUDED.price, currency = EXCLUDED.currency, \
                     is_active = EXCLUDED.is_active, search_text = EXCLUDED.search_text, version = EXCLUDED.version, \
                     occurred_at = EXCLUDED.occurred_at, updated_at = EXCLUDED.updated_at",
                );
                c.execute(sql.as_str(), &params).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

/// ISO 8601 UTC from µs since the epoch.
fn iso(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
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
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}
