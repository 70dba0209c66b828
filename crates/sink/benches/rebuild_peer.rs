//! `rebuild --from PEER` against its floor: a plain `COPY` out of one database into the other.
//!
//! ```text
//! cargo bench -p walcast-sink --bench rebuild_peer                 # 1,000,000 products
//! WALCAST_BENCH_ROWS=200000 cargo bench -p walcast-sink --bench rebuild_peer
//! ```
//!
//! A peer database (its own Postgres cluster) is filled with N read rows (`catalog_product_read`,
//! with the shipped schema's indexes, the trigram index included) and N `processed_events`
//! (one event per product), plus its offsets and applied LSN. Then, in one run, on a second
//! cluster:
//!
//! * **floor**: `COPY catalog_product_read TO STDOUT` and `COPY processed_events TO STDOUT`
//!   out of the peer, each piped into `COPY … FROM STDIN` of a fresh database with the same
//!   schema: what an operator would do by hand, with no consistency and no bookkeeping;
//! * **rebuild**: `walcast_sink::rebuild_from(…, Peer)` into a fresh target: one snapshot on the
//!   peer, every table and the bookkeeping, one transaction on the target, the marker.
//!
//! The floor runs before and after the rebuild (the peer's pages are as warm for each); both
//! report rows/s = 2 N rows / seconds, and the ratio is taken against the faster floor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, pin_mut};
use tokio_postgres::NoTls;
use walcast_sink::{RebuildFrom, SinkConfig};
use walcast_testkit::{Postgres, unique_name};

const TARGETS: [&str; 4] = ["catalog_read", "replica-1", "replica-2", "replica-3"];

fn main() {
    let rows: i64 = std::env::var("WALCAST_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (peer_pg, target_pg) = (Postgres::start().unwrap(), Postgres::start().unwrap());
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schema = std::fs::read_to_string(root.join("sql/read.sql")).unwrap();
    println!("walcast rebuild --from peer benchmark: {rows} products + {rows} processed events");
    rt.block_on(async {
        let peer = fresh_db(&peer_pg, &schema).await;
        let dir = tempfile::tempdir().unwrap();
        let config = config(&root, dir.path(), &peer, &target_pg);
        let filled = Instant::now();
        fill(&peer, rows, &config).await;
        println!("  peer filled in {:.1}s", filled.elapsed().as_secs_f64());

        let total = 2 * rows;
        let first = floor(&peer, &fresh_db(&target_pg, &schema).await).await;
        report("floor (plain COPY), before", total, first);

        let started = Instant::now();
        let r = walcast_sink::rebuild_from(
            &config,
            "replica-2",
            &RebuildFrom::Peer("catalog_read".into()),
            false,
        )
        .await
        .unwrap();
        let rebuild = started.elapsed();
        let copied: u64 = r.copied.iter().map(|c| c.rows).sum();
        assert!(copied >= total as u64, "{r:?}");
        for c in &r.copied {
            println!(
                "    {:<26} {:>9} rows {:>7.2}s",
                c.table,
                c.rows,
                c.elapsed.as_secs_f64()
            );
        }
        report("rebuild --from peer", total, rebuild);

        let second = floor(&peer, &fresh_db(&target_pg, &schema).await).await;
        report("floor (plain COPY), after", total, second);
        println!(
            "  ratio rebuild / floor: {:.2}x (target >= 0.5x)",
            first.min(second).as_secs_f64() / rebuild.as_secs_f64()
        );
    });
}

fn report(what: &str, rows: i64, took: Duration) {
    println!(
        "  {what:<28} {:>7.2}s  {:>9.0} rows/s",
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64()
    );
}

async fn connect(dsn: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// A fresh database with the read schema applied.
async fn fresh_db(pg: &Postgres, schema: &str) -> String {
    let db = unique_name("bench_read");
    pg.create_database(&db).unwrap();
    let dsn = pg.dsn(&db);
    connect(&dsn).await.batch_execute(schema).await.unwrap();
    dsn
}

/// The shipped connector file, its peer (`catalog_read`) on `peer`, every other target on a
/// fresh database of `target_pg`. No broker is reached: a copy from a peer reads no topic.
fn config(
    root: &std::path::Path,
    dir: &std::path::Path,
    peer: &str,
    target_pg: &Postgres,
) -> SinkConfig {
    let mut text = std::fs::read_to_string(root.join("connectors/catalog-read-sink.toml")).unwrap();
    let read_sql = root.join("sql/read.sql").display().to_string();
    text = text.replacen(
        "files = [\"../sql/read.sql\"]",
        &format!("files = [{read_sql:?}]"),
        1,
    );
    for (t, port) in TARGETS.iter().zip(5432..) {
        let dsn = if *t == "catalog_read" {
            peer.to_owned()
        } else {
            let db = unique_name("bench_target");
            target_pg.create_database(&db).unwrap();
            target_pg.dsn(&db)
        };
        text = text.replacen(
            &format!(
                "[targets.{t}]\ndsn = \"host=127.0.0.1 port={port} user=postgres dbname=catalog_read\""
            ),
            &format!("[targets.{t}]\ndsn = {dsn:?}"),
            1,
        );
    }
    let path = dir.join("sink.toml");
    std::fs::write(&path, text).unwrap();
    SinkConfig::load(&path).unwrap()
}

/// `rows` products and one processed event each, the peer group's offsets and applied LSN.
async fn fill(dsn: &str, rows: i64, config: &SinkConfig) {
    let c = connect(dsn).await;
    c.execute(
        "INSERT INTO catalog_product_read (product_id, sku, name, description, price, currency, \
         is_active, search_text, version, occurred_at, updated_at) \
         SELECT md5(i::text)::uuid, 'SKU-' || i, 'Product ' || i, 'Stoneware mug number ' || i, \
         (i % 100000) / 100.0, 'EUR', i % 7 <> 0, \
         lower('SKU-' || i || ' Product ' || i || ' Stoneware mug number ' || i), 1 + i % 5, \
         now(), now() FROM generate_series(1, $1::bigint) AS i",
        &[&rows],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO processed_events (event_id, event_type) \
         SELECT md5('event ' || i)::uuid, 'ProductCreated' FROM generate_series(1, $1::bigint) AS i",
        &[&rows],
    )
    .await
    .unwrap();
    let (group, topic) = (config.group("catalog_read"), config.kafka.topic.clone());
    c.execute(
        "INSERT INTO walcast_offsets (consumer_group, topic, partition, next_offset) \
         SELECT $1, $2, p, $3::bigint / 3 FROM generate_series(0, 2) AS p",
        &[&group, &topic, &rows],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO walcast_applied_lsn (consumer_group, commit_lsn) VALUES ($1, '0/5000000')",
        &[&group],
    )
    .await
    .unwrap();
    c.batch_execute("VACUUM ANALYZE").await.unwrap();
}

/// Plain `COPY t TO STDOUT` piped into `COPY t FROM STDIN` for the two big tables.
async fn floor(from: &str, into: &str) -> Duration {
    let (out, inc) = (connect(from).await, connect(into).await);
    let started = Instant::now();
    for t in ["catalog_product_read", "processed_events"] {
        let rows = out.copy_out(&format!("COPY {t} TO STDOUT")).await.unwrap();
        let sink = inc
            .copy_in::<_, Bytes>(&format!("COPY {t} FROM STDIN"))
            .await
            .unwrap();
        pin_mut!(rows);
        pin_mut!(sink);
        sink.send_all(&mut rows).await.unwrap();
        sink.finish().await.unwrap();
    }
    started.elapsed()
}
