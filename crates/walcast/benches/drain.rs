//! Drain benchmark of the source: how fast `walcast source` empties a backlog of outbox
//! inserts in discard mode (decode + route, nothing produced) and to Kafka (produced and
//! acknowledged), next to `pg_recvlogical` on the same backlog, with walcast's peak RSS.
//! A program, not a timed test.
//!
//! ```text
//! cargo bench -p walcast --bench drain
//! WALCAST_BENCH_ROWS=20000 WALCAST_BENCH_ROUNDS=1 cargo bench -p walcast --bench drain
//! ```
//!
//! For each backlog shape (1 and 100 rows per transaction):
//!
//! 1. a fresh database with `sql/write.sql`, a publication on `outbox_messages`, and the
//!    slots every drain will use, created *before* the backlog;
//! 2. the backlog: N outbox inserts (~300-byte JSON payload), one `DO` block committing every
//!    `per_txn` rows, then a logical message marking the end (`pg_recvlogical --endpos`);
//! 3. per round, three drains (the order rotates between rounds), each timed as a whole
//!    process from spawn to the last event, the median reported:
//!    * `pg_recvlogical --plugin=pgoutput -o proto_version=1 -o publication_names=…` into
//!      `/dev/null` until `--endpos`;
//!    * `walcast source --discard`: until `walcast_source_events_routed_total` (scraped from
//!      its `/metrics`) reaches N; discard mode confirms nothing, so its slot is reused;
//!    * `walcast source` to the kit's Kafka: until `walcast_source_events_published_total`
//!      (acknowledged by the broker) reaches N.
//!
//! Peak RSS is `VmHWM` of the walcast process, read just before it is stopped.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{env_number, median, pg_client_args, time_process, time_until};
use walcast_testkit::{ConnectorFile, Kafka, Postgres, free_port, repo_root};

const PUBLICATION: &str = "bench_pub";
const PG_RECVLOGICAL: &str = "/usr/lib/postgresql/15/bin/pg_recvlogical";
const DEADLINE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    PgRecvlogical,
    Discard,
    Kafka,
}

#[derive(Debug, Default)]
struct Drains {
    rates: [Vec<f64>; 3],
    rss_kib: [u64; 3],
}

fn main() -> anyhow::Result<()> {
    let rows: u64 = env_number("WALCAST_BENCH_ROWS", 100_000)?;
    let rounds: usize = env_number("WALCAST_BENCH_ROUNDS", 3)?.max(1) as usize;
    let pg = Postgres::start()?;
    let kafka = Kafka::start()?;
    let schema = std::fs::read_to_string(repo_root().join("sql/write.sql"))?;
    let dir = tempfile::tempdir()?;
    let mut table = Vec::new();
    for per_txn in [1u64, 100] {
        eprintln!("drain: {rows} inserts, {per_txn} per transaction");
        let drains = run_case(&pg, &kafka, &schema, dir.path(), rows, per_txn, rounds)?;
        table.push((per_txn, drains));
    }
    println!();
    println!(
        "| backlog | pg_recvlogical ev/s | discard ev/s | discard / pg_recvlogical | Kafka ev/s | Kafka / pg_recvlogical | peak RSS discard | peak RSS Kafka |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (per_txn, d) in &table {
        let [recv, discard, to_kafka] = [0, 1, 2].map(|i| median(&d.rates[i]));
        println!(
            "| {rows} inserts, {per_txn} row{}/txn | {recv:.0} | {discard:.0} | {:.2}× | {to_kafka:.0} | {:.2}× | {:.1} MiB | {:.1} MiB |",
            if *per_txn == 1 { "" } else { "s" },
            discard / recv,
            to_kafka / recv,
            d.rss_kib[1] as f64 / 1024.0,
            d.rss_kib[2] as f64 / 1024.0,
        );
    }
    println!("\n(median of {rounds} round(s) per client; each drain timed as a whole process)");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_case(
    pg: &Postgres,
    kafka: &Kafka,
    schema: &str,
    dir: &Path,
    rows: u64,
    per_txn: u64,
    rounds: usize,
) -> anyhow::Result<Drains> {
    let db = format!("drain_{per_txn}");
    pg.create_database(&db)?;
    pg.psql(&db, schema)?;
    pg.psql(
        &db,
        &format!("CREATE PUBLICATION {PUBLICATION} FOR TABLE outbox_messages"),
    )?;
    let slot = |c: Client, round: usize| match c {
        Client::PgRecvlogical => format!("recv_{round}"),
        Client::Discard => "discard".to_owned(),
        Client::Kafka => format!("kafka_{round}"),
    };
    let mut slots = vec![slot(Client::Discard, 0)];
    for round in 0..rounds {
        slots.push(slot(Client::PgRecvlogical, round));
        slots.push(slot(Client::Kafka, round));
    }
    for s in &slots {
        pg.psql(
            &db,
            &format!("SELECT pg_create_logical_replication_slot('{s}', 'pgoutput')"),
        )?;
    }
    let started = Instant::now();
    pg.psql(
        &db,
        &format!(
            "DO $$ BEGIN FOR i IN 1..{rows} LOOP
               INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, correlation_id, payload)
               VALUES (gen_random_uuid(), md5((i % 1000)::text)::uuid, 'ProductPriceChanged', clock_timestamp(),
                       gen_random_uuid(),
                       jsonb_build_object('productId', md5((i % 1000)::text)::uuid, 'sku', 'SKU-' || i,
                         'name', 'Espresso machine ' || i, 'price', '249.90', 'currency', 'EUR',
                         'previousPrice', '279.90', 'version', i, 'changedBy', 'pricing-service',
                         'reason', 'seasonal adjustment of the catalog price list'));
               IF i % {per_txn} = 0 THEN COMMIT; END IF;
             END LOOP; END $$"
        ),
    )?;
    let end = pg.psql(
        &db,
        "SELECT pg_logical_emit_message(false, 'bench.end', '')::text",
    )?;
    eprintln!(
        "drain: backlog written in {:.1}s, ends at {end}",
        started.elapsed().as_secs_f64()
    );

    let mut drains = Drains::default();
    let order = [Client::PgRecvlogical, Client::Discard, Client::Kafka];
    for round in 0..rounds {
        for k in 0..3 {
            let client = order[(k + round) % 3];
            let s = slot(client, round);
            let (secs, rss) = match client {
                Client::PgRecvlogical => (recvlogical(pg, &db, &s, end.trim())?, 0),
                Client::Discard | Client::Kafka => {
                    walcast(pg, kafka, dir, &db, &s, rows, client == Client::Discard)?
                }
            };
            let rate = rows as f64 / secs;
            eprintln!(
                "drain: round {round} {client:?}: {secs:.2}s, {rate:.0} ev/s, peak RSS {} KiB",
                rss
            );
            let i = client as usize;
            drains.rates[i].push(rate);
            drains.rss_kib[i] = drains.rss_kib[i].max(rss);
        }
    }
    for s in &slots {
        pg.psql(&db, &format!("SELECT pg_drop_replication_slot('{s}')"))?;
    }
    Ok(drains)
}

fn recvlogical(pg: &Postgres, db: &str, slot: &str, end: &str) -> anyhow::Result<f64> {
    time_process(
        Command::new(PG_RECVLOGICAL)
            .args(pg_client_args(pg, db))
            .args([
                "--slot",
                slot,
                "--start",
                "--endpos",
                end,
                "-f",
                "/dev/null",
                "--no-loop",
            ])
            .args([
                "-o",
                "proto_version=1",
                "-o",
                &format!("publication_names={PUBLICATION}"),
            ]),
        "pg_recvlogical",
    )
}

/// Runs `walcast source` on `slot` until `rows` events are routed (discard) or
/// acknowledged; returns the seconds and peak RSS (KiB).
fn walcast(
    pg: &Postgres,
    kafka: &Kafka,
    dir: &Path,
    db: &str,
    slot: &str,
    rows: u64,
    discard: bool,
) -> anyhow::Result<(f64, u64)> {
    let port = free_port()?;
    let mut file = ConnectorFile::new();
    file.set(&["postgres", "dsn"], pg.dsn(db))
        .set(&["postgres", "slot"], slot)
        .set(&["postgres", "publication"], PUBLICATION)
        .set(&["postgres", "create"], false)
        .set(&["kafka", "brokers"], kafka.bootstrap())
        .set(&["kafka", "topic"], format!("{db}.events"))
        .set(&["admin", "listen"], format!("127.0.0.1:{port}"));
    let config = file.write(&dir.join(format!("{db}_{slot}.toml")))?;
    let metric = if discard {
        "walcast_source_events_routed_total"
    } else {
        "walcast_source_events_published_total"
    };
    let mut args = vec!["source".into(), "--config".into(), config.into_os_string()];
    if discard {
        args.push("--discard".into());
    }
    time_until(
        &format!("{db}_{slot}"),
        dir,
        args,
        port,
        metric,
        rows,
        DEADLINE,
    )
}
