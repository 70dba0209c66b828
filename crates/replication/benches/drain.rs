//! Drain benchmark: how fast walcast's [`ChangeStream`] empties a backlog of
//! outbox inserts, next to `pg_recvlogical --plugin=pgoutput` on the same
//! backlog, and walcast's peak memory. A program, not a timed test.
//!
//! ```text
//! cargo bench -p walcast-replication --bench drain
//! # smaller backlogs, more rounds:
//! WALCAST_BENCH_ROWS=20000 WALCAST_BENCH_ROUNDS=5 cargo bench -p walcast-replication --bench drain
//! # profile walcast's side (the last drain's profile is kept):
//! WALCAST_BENCH_WRAP='perf record -g -o /tmp/drain.perf' cargo bench -p walcast-replication --bench drain
//! ```
//!
//! For each backlog shape (1 and 100 rows per transaction; N and 2N rows, to
//! show that memory does not grow with the backlog):
//!
//! 1. a fresh database with `sql/write.sql` and a publication on
//!    `outbox_messages`; `ROUNDS` pgoutput slots per client, created *before*
//!    the backlog;
//! 2. the backlog: N inserts of a realistic outbox row (~300-byte JSON
//!    payload), written by one `DO` block that commits every `per_txn` rows;
//! 3. per round, each client drains one of its slots (alternating which goes
//!    first); the table shows the median rate:
//!    * `pg_recvlogical` to `/dev/null` until `--endpos` (a logical message
//!      written after the backlog): wall time of the process;
//!    * walcast in a **child process** of this binary, so that its peak RSS
//!      (VmHWM) is walcast's alone, not the setup's: `ChangeStream`, on a
//!      tokio worker, decodes every message into typed JSON changes and
//!      confirms each Commit; timed from `ChangeStream::start` (preflight
//!      queries and connecting included) to the Commit of the last insert.
//!
//! Both clients connect over TCP to 127.0.0.1 with protocol version 1, so the
//! walsender does the same work for both; the difference is the client.
//! The walsender is the bottleneck (it decodes the WAL), so both rates are
//! close; "walcast CPU/event" (user + system time of the child, whole run)
//! tells how much headroom walcast has. It includes the wake-up per message
//! (epoll, recv) of a client that keeps up with the server, which is why it is
//! higher per event with one row per transaction (three messages per row).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use walcast_postgres::Dsn;
use walcast_replication::{ChangeStream, ChangeStreamConfig, Event, Op};
use walcast_testkit::{Postgres, repo_root};

/// Set in the child process that runs walcast's drain.
const CHILD_ENV: &str = "WALCAST_BENCH_DRAIN";
const PUBLICATION: &str = "bench_pub";
const PG_RECVLOGICAL: &str = "/usr/lib/postgresql/15/bin/pg_recvlogical";
/// A drain taking longer than this is stuck.
const DEADLINE: Duration = Duration::from_secs(600);

fn main() -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child::run(&spec);
    }
    let rows = env_number("WALCAST_BENCH_ROWS", 100_000)?;
    let rounds = env_number("WALCAST_BENCH_ROUNDS", 3)?.max(1);
    let pg = Postgres::start()?;
    let schema = std::fs::read_to_string(repo_root().join("sql/write.sql"))
        .context("reading sql/write.sql")?;
    let mut results = Vec::new();
    for (total, per_txn) in [(rows, 1), (rows, 100), (2 * rows, 1), (2 * rows, 100)] {
        let case = Case { total, per_txn };
        eprintln!("drain: preparing {}", case.label());
        results.push(case.run(&pg, &schema, rounds)?);
    }
    print_table(&results, rounds);
    Ok(())
}

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name} must be a number")),
        Err(_) => Ok(default),
    }
}

/// One backlog shape.
#[derive(Debug, Clone, Copy)]
struct Case {
    total: u64,
    per_txn: u64,
}

/// Medians over the rounds; peak RSS is the highest of any round.
#[derive(Debug)]
struct Outcome {
    case: Case,
    walcast: Duration,
    walcast_cpu: Duration,
    walcast_peak_rss_kib: u64,
    recvlogical: Duration,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{} inserts, {} row{}/txn",
            thousands(self.total),
            self.per_txn,
            if self.per_txn == 1 { "" } else { "s" }
        )
    }

    /// Builds the backlog once, behind `rounds` slots per client, then drains
    /// it `rounds` times with each client, alternating which goes first so
    /// that neither profits from a warmer cache or a quieter machine.
    fn run(&self, pg: &Postgres, schema: &str, rounds: u64) -> anyhow::Result<Outcome> {
        let db = format!("drain_{}_{}", self.total, self.per_txn);
        pg.create_database(&db)?;
        pg.psql(&db, schema)?;
        pg.psql(
            &db,
            &format!("CREATE PUBLICATION {PUBLICATION} FOR TABLE outbox_messages"),
        )?;
        let slots: Vec<(String, String)> = (0..rounds)
            .map(|i| (format!("{db}_walcast_{i}"), format!("{db}_recv_{i}")))
            .collect();
        for slot in slots.iter().flat_map(|(a, b)| [a, b]) {
            pg.psql(
                &db,
                &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
            )?;
        }

        let started = Instant::now();
        pg.psql(&db, &self.backlog_sql())?;
        // pg_recvlogical stops at the first position at or past this; pgoutput
        // does not send the message itself unless asked (it is not).
        let end = pg.psql(
            &db,
            "SELECT pg_logical_emit_message(false, 'walcast-bench', 'backlog end')",
        )?;
        eprintln!(
            "drain: backlog written in {:.1} s, ends at {end}",
            started.elapsed().as_secs_f64()
        );

        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for (i, (our_slot, their_slot)) in slots.iter().enumerate() {
            let walcast = || child::spawn(&pg.dsn(&db), our_slot, self.total);
            if i.is_multiple_of(2) {
                theirs.push(run_pg_recvlogical(pg, &db, their_slot, &end)?);
                ours.push(walcast()?);
            } else {
                ours.push(walcast()?);
                theirs.push(run_pg_recvlogical(pg, &db, their_slot, &end)?);
            }
            for slot in [our_slot, their_slot] {
                pg.psql(&db, &format!("SELECT pg_drop_replication_slot('{slot}')"))?;
            }
        }
        Ok(Outcome {
            case: *self,
            walcast: median(ours.iter().map(|r| r.elapsed).collect()),
            walcast_cpu: median(ours.iter().map(|r| r.cpu).collect()),
            walcast_peak_rss_kib: ours.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0),
            recvlogical: median(theirs),
        })
    }

    /// One `DO` block; `COMMIT` inside it ends a transaction every `per_txn` rows.
    fn backlog_sql(&self) -> String {
        let (txns, per) = (self.total / self.per_txn, self.per_txn);
        format!(
            "DO $$
             BEGIN
               FOR b IN 0..{last} LOOP
                 INSERT INTO outbox_messages
                     (id, aggregate_id, event_type, occurred_at, correlation_id, payload)
                 SELECT gen_random_uuid(), gen_random_uuid(), 'ProductCreated', clock_timestamp(),
                        gen_random_uuid(),
                        jsonb_build_object(
                          'productId', gen_random_uuid(),
                          'sku', 'SKU-' || lpad(n::text, 8, '0'),
                          'name', 'Ergonomic desk lamp ' || n,
                          'description', 'Adjustable LED desk lamp with three colour temperatures, '
                                         || 'a USB-C charging port and a weighted aluminium base.',
                          'price', round((n % 10000) / 100.0 + 9.99, 2),
                          'currency', 'EUR',
                          'isActive', true,
                          'version', 1,
                          'updatedAt', clock_timestamp())
                 FROM generate_series(b * {per} + 1, b * {per} + {per}) AS n;
                 COMMIT;
               END LOOP;
             END $$",
            last = txns - 1,
        )
    }
}

/// Wall time of `pg_recvlogical` draining `slot` up to `end`.
fn run_pg_recvlogical(pg: &Postgres, db: &str, slot: &str, end: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = Command::new(PG_RECVLOGICAL)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", db, "--slot", slot, "--start", "--no-loop"])
        .args(["--plugin=pgoutput", "-o", "proto_version=1"])
        .args(["-o", &format!("publication_names={PUBLICATION}")])
        .args(["--endpos", end, "-f", "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {PG_RECVLOGICAL}"))?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!(
            "pg_recvlogical failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed)
}

fn print_table(results: &[Outcome], rounds: u64) {
    println!();
    println!("median of {rounds} drains per client and backlog");
    println!(
        "| backlog | walcast events/s | pg_recvlogical events/s | ratio | walcast peak RSS | walcast CPU/event |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in results {
        let ours = rate(r.case.total, r.walcast);
        let theirs = rate(r.case.total, r.recvlogical);
        println!(
            "| {} | {} | {} | {:.2}× | {:.1} MiB | {:.1} µs |",
            r.case.label(),
            thousands(ours as u64),
            thousands(theirs as u64),
            ours / theirs,
            r.walcast_peak_rss_kib as f64 / 1024.0,
            r.walcast_cpu.as_secs_f64() * 1e6 / r.case.total as f64,
        );
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// walcast's side, run in a child process of the bench binary.
mod child {
    use super::*;

    /// What the child measured.
    #[derive(Debug)]
    pub(super) struct Report {
        pub(super) elapsed: Duration,
        /// CPU time (user + system) of the whole child process.
        pub(super) cpu: Duration,
        pub(super) peak_rss_kib: u64,
    }

    /// Re-executes this binary to drain `slot`; parses its one-line report.
    pub(super) fn spawn(dsn: &str, slot: &str, expect: u64) -> anyhow::Result<Report> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let spec = serde_json::json!({ "dsn": dsn, "slot": slot, "expect": expect });
        // WALCAST_BENCH_WRAP: a command (e.g. a profiler) to run the child under.
        let wrap = std::env::var("WALCAST_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let out = cmd
            .env(CHILD_ENV, spec.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("running the walcast drain child")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("walcast drain child failed ({}): {stdout}", out.status);
        }
        let report: Value = serde_json::from_str(stdout.trim())
            .with_context(|| format!("walcast drain child printed {stdout:?}"))?;
        let field = |k: &str| {
            report[k]
                .as_f64()
                .with_context(|| format!("no {k} in {report}"))
        };
        Ok(Report {
            elapsed: Duration::from_secs_f64(field("seconds")?),
            cpu: Duration::from_secs_f64(field("cpu_seconds")?),
            peak_rss_kib: field("peak_rss_kib")? as u64,
        })
    }

    /// The child: drain, then print `{"seconds", "events", "peak_rss_kib"}`.
    pub(super) fn run(spec: &str) -> anyhow::Result<()> {
        let spec: Value = serde_json::from_str(spec).context("child spec")?;
        let text = |k: &str| spec[k].as_str().map(str::to_owned).context(k.to_owned());
        let (dsn, slot) = (text("dsn")?, text("slot")?);
        let expect = spec["expect"].as_u64().context("expect")?;
        // As in a walcast service: the stream is driven by a task on a
        // multi-threaded runtime's worker, which also polls the socket.
        let runtime = tokio::runtime::Runtime::new()?;
        let task = runtime
            .spawn(async move { tokio::time::timeout(DEADLINE, drain(&dsn, &slot, expect)).await });
        let elapsed = runtime
            .block_on(task)?
            .with_context(|| format!("the drain took longer than {DEADLINE:?}"))??;
        drop(runtime);
        let report = serde_json::json!({
            "seconds": elapsed.as_secs_f64(),
            "cpu_seconds": cpu_seconds(),
            "events": expect,
            "peak_rss_kib": peak_rss_kib(),
        });
        println!("{report}");
        Ok(())
    }

    /// Streams until `expect` inserts were seen and their transaction
    /// committed, confirming every Commit as the pipeline would.
    async fn drain(dsn: &str, slot: &str, expect: u64) -> anyhow::Result<Duration> {
        let mut config = ChangeStreamConfig::new(Dsn::parse(dsn)?, slot, PUBLICATION);
        config.proto_version = 1;
        let started = Instant::now();
        let mut stream = ChangeStream::start(config).await?;
        let (mut inserts, mut untyped) = (0u64, 0u64);
        loop {
            match stream.next().await? {
                Event::Begin(_) | Event::Interrupted(_) => {}
                Event::Change(c) if c.op == Op::Insert => {
                    inserts += 1;
                    // jsonb must arrive embedded as JSON, not as a string.
                    if !matches!(
                        c.new.as_ref().and_then(|n| n.get("payload")),
                        Some(Value::Object(_))
                    ) {
                        untyped += 1;
                    }
                }
                Event::Change(_) => {}
                Event::Commit(c) => {
                    stream.confirm(c.end_lsn).await?;
                    if inserts >= expect {
                        break;
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        stream.close().await?;
        if inserts != expect || untyped > 0 {
            bail!("saw {inserts} inserts (expected {expect}), {untyped} with an untyped payload");
        }
        Ok(elapsed)
    }

    /// CPU time of this process so far: utime + stime of /proc/self/stat,
    /// which Linux counts in ticks of 1/100 s.
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let ticks: u64 = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|t| t.parse::<u64>().ok())
            .sum();
        ticks as f64 / 100.0
    }

    /// Peak resident set size of this process (VmHWM), in KiB.
    fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}
