//! Snapshot benchmark of the source: how fast `walcast source` turns the existing rows of
//! `products` into acknowledged Kafka records (`[snapshot] initial = true`), next to the
//! floor of reading the same columns with `COPY (SELECT …) TO STDOUT` by `psql` in the same
//! run, with walcast's peak RSS. A program, not a timed test.
//!
//! ```text
//! cargo bench -p walcast --bench snapshot
//! WALCAST_BENCH_ROWS=200000 WALCAST_BENCH_ROUNDS=1 cargo bench -p walcast --bench snapshot
//! ```
//!
//! Per round: a fresh slot (so the initial snapshot runs again, under a new id), the COPY
//! floor timed as a whole `psql` process, then `walcast source` timed from spawn until
//! `walcast_source_snapshot_rows_total` (counted at broker acknowledgement, scraped from its
//! `/metrics`) reaches the row count. Medians are reported. Not measured here: the live
//! stream's p99 during a snapshot (see docs/benchmarks.md for what is left).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{env_number, median, pg_client_args, time_process, time_until};
use walcast_testkit::{ConnectorFile, Kafka, Postgres, free_port, repo_root};

const DB: &str = "snapshot_bench";
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
const DEADLINE: Duration = Duration::from_secs(900);
const ROWS_METRIC: &str = "walcast_source_snapshot_rows_total";

fn main() -> anyhow::Result<()> {
    let rows: u64 = env_number("WALCAST_BENCH_ROWS", 1_000_000)?;
    let rounds = env_number("WALCAST_BENCH_ROUNDS", 3)?.max(1);
    let pg = Postgres::start()?;
    let kafka = Kafka::start()?;
    let dir = tempfile::tempdir()?;
    pg.create_database(DB)?;
    pg.psql(
        DB,
        &std::fs::read_to_string(repo_root().join("sql/write.sql"))?,
    )?;
    pg.psql(DB, "CREATE PUBLICATION bench_pub FOR TABLE outbox_messages")?;
    let started = Instant::now();
    pg.psql(
        DB,
        &format!(
            "INSERT INTO products (id, sku, name, description, price, currency, is_active, updated_at, version) \
             SELECT md5(i::text)::uuid, 'SKU-' || i, 'Espresso machine ' || i, \
                    'Dual boiler, PID controlled, 2.5 l water tank, model ' || i, 249.90, 'EUR', \
                    i % 10 <> 0, now() - i * interval '1 millisecond', 1 + i % 9 \
             FROM generate_series(1, {rows}) i; ANALYZE products"
        ),
    )?;
    eprintln!(
        "snapshot: {rows} products written in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut floor = Vec::new();
    let mut walcast = Vec::new();
    let mut rss = 0;
    for round in 0..rounds {
        let secs = copy_floor(&pg)?;
        floor.push(rows as f64 / secs);
        let (secs, peak) = snapshot(&pg, &kafka, dir.path(), round, rows)?;
        walcast.push(rows as f64 / secs);
        rss = rss.max(peak);
        eprintln!(
            "snapshot: round {round}: COPY {:.0} rows/s, walcast {:.0} rows/s, peak RSS {peak} KiB",
            floor[floor.len() - 1],
            walcast[walcast.len() - 1]
        );
    }
    let (f, w) = (median(&floor), median(&walcast));
    println!();
    println!(
        "| rows | COPY floor rows/s | walcast snapshot rows/s (acknowledged) | walcast / floor | peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {rows} | {f:.0} | {w:.0} | {:.2}× | {:.1} MiB |",
        w / f,
        rss as f64 / 1024.0
    );
    println!("\n(median of {rounds} round(s); each timed as a whole process)");
    Ok(())
}

/// `COPY (SELECT <the columns the snapshot reads>) TO STDOUT`, read fully by psql.
fn copy_floor(pg: &Postgres) -> anyhow::Result<f64> {
    let sql = "COPY (SELECT id::text, version::text, \
               (extract(epoch FROM updated_at) * 1000000)::bigint, id::text, sku::text, \
               name::text, description::text, price::text, currency::text, is_active::text, \
               created_at::text, updated_at::text, version::text FROM products ORDER BY id) TO STDOUT";
    time_process(
        Command::new(PSQL)
            .args(pg_client_args(pg, DB))
            .args(["-X", "-q", "-c", sql]),
        "psql",
    )
}

/// Runs `walcast source` with a new slot until the initial snapshot's rows are acknowledged;
/// the seconds and peak RSS (KiB).
fn snapshot(
    pg: &Postgres,
    kafka: &Kafka,
    dir: &Path,
    round: u64,
    rows: u64,
) -> anyhow::Result<(f64, u64)> {
    let port = free_port()?;
    let slot = format!("bench_{round}");
    let mut file = ConnectorFile::shipped(walcast_testkit::SOURCE_FILE)?;
    file.set(&["postgres", "dsn"], pg.dsn(DB))
        .set(&["postgres", "slot"], slot.as_str())
        .set(&["postgres", "publication"], "bench_pub")
        .set(&["kafka", "brokers"], kafka.bootstrap())
        .set(&["kafka", "topic"], format!("{DB}_{round}.events"))
        .set(&["admin", "listen"], format!("127.0.0.1:{port}"));
    let config = file.write(&dir.join(format!("{slot}.toml")))?;
    let args = vec!["source".into(), "--config".into(), config.into_os_string()];
    let result = time_until(&slot, dir, args, port, ROWS_METRIC, rows, DEADLINE);
    pg.psql(DB, &format!("SELECT pg_drop_replication_slot('{slot}')"))?;
    result
}
