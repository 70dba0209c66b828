//! The whole pipeline on real parts, for the end-to-end proofs (crash matrix, sustained load,
//! latency): a Postgres leader (`catalog_write` + `catalog_read`), three replica clusters, an
//! Apache Kafka broker of its own (the crash matrix kills it), and the real `walcast` binary
//! as source, sink and catalog app child processes, each of which can be killed with SIGKILL
//! and started again.
//!
//! Every cluster runs with `track_commit_timestamp = on`, so the latency of an event is exact:
//! the commit time of its target transaction minus the commit time of its outbox row, both read
//! from Postgres (same machine, same clock), with no polling in between.

#![allow(dead_code)]

pub mod load;
pub mod measure;
pub mod verify;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio_postgres::NoTls;
use walcast_testkit::{Kafka, Postgres, Service, free_port, repo_root, unique_name};

/// The sink's four targets, in the shipped connector's order.
pub const TARGETS: [&str; 4] = ["catalog_read", "replica-1", "replica-2", "replica-3"];

/// `walcast ARGS` as a child process of the stack, with the environment `env` gives it.
fn service(name: &str, args: Vec<String>, env: &[(&str, String, String)], logs: &Path) -> Service {
    let mut s = Service::new(name, env!("CARGO_BIN_EXE_walcast"), logs)
        .args(args)
        .env("RUST_LOG", "info");
    for (_, k, v) in env.iter().filter(|(service, ..)| *service == name) {
        s = s.env(k, v);
    }
    s.start()
        .unwrap_or_else(|e| panic!("spawning walcast {name}: {e}"))
}

/// `Err(why)` if the service has exited on its own (or was stopped).
pub fn check_alive(s: &mut Service) -> Result<(), String> {
    if s.is_running() {
        return Ok(());
    }
    Err(match s.exit_status() {
        Some(status) => format!(
            "walcast {} exited on its own ({status}); its log ends with:\n{}",
            s.name(),
            s.log_tail(3000)
        ),
        None => format!("{} is not running", s.name()),
    })
}

/// Starts it again if it exited on its own; returns why it had exited.
pub fn revive(s: &mut Service) -> Option<String> {
    let why = check_alive(s).err()?;
    s.kill();
    s.restart()
        .unwrap_or_else(|e| panic!("spawning walcast {}: {e}", s.name()));
    Some(why)
}

/// Resident set size in KiB of a running service, from /proc.
pub fn service_rss_kib(s: &Service) -> Option<u64> {
    rss_kib(s.pid()?)
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The environment variable `key` parsed, or `default` when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A whole pipeline (or the whole local system) runs on this two-core machine one at a time:
/// the end-to-end proofs hold a guard of this lock for their run, as when each had a test
/// binary of its own (`.lock().await` in async tests, `.blocking_lock()` in the others).
pub static ONE_STACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Options of a [`Stack`].
pub struct StackOptions {
    /// Start the catalog app (write API) too.
    pub app: bool,
    /// Sink batch size.
    pub batch: usize,
    /// Extra environment per service: (`"source"`, `"sink"` or `"app"`, name, value), e.g.
    /// shorter pruning windows for the soak.
    pub env: Vec<(&'static str, String, String)>,
    /// Products already in `catalog_write` before walcast first starts (rows with no outbox
    /// event, as on a database that adopts walcast).
    pub existing_products: u64,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            app: true,
            batch: 1000,
            env: Vec::new(),
            existing_products: 0,
        }
    }
}

/// The pipeline, all parts running.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub kafka: Kafka,
    /// `catalog_write` and the `catalog_read` target.
    pub leader: Postgres,
    pub replicas: Vec<Postgres>,
    pub topic: String,
    pub slot: String,
    pub source: Service,
    pub sink: Service,
    pub app: Option<Service>,
    pub write_port: u16,
    pub source_admin: u16,
    pub sink_admin: u16,
    /// The connector files the services run.
    pub source_config: PathBuf,
    pub sink_config: PathBuf,
}

fn cluster() -> Postgres {
    Postgres::builder()
        .setting("track_commit_timestamp", "on")
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

impl Stack {
    pub async fn start(opts: StackOptions) -> Stack {
        let dir = tempfile::Builder::new()
            .prefix("walcast-e2e-")
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"));
        let kafka = Kafka::start().unwrap_or_else(|e| panic!("{e}"));
        let leader = cluster();
        let replicas: Vec<Postgres> = (0..3).map(|_| cluster()).collect();
        leader
            .create_database("catalog_write")
            .unwrap_or_else(|e| panic!("{e}"));
        leader
            .create_database("catalog_read")
            .unwrap_or_else(|e| panic!("{e}"));
        for r in &replicas {
            r.create_database("catalog_read")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let walcast = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_walcast"))
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                out.status.success(),
                "walcast {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        walcast(&[
            "schema",
            "apply",
            "write",
            "--dsn",
            &leader.dsn("catalog_write"),
        ]);
        if opts.existing_products > 0 {
            seed_products(&leader.dsn("catalog_write"), opts.existing_products).await;
        }
        let mut target_dsns = vec![leader.dsn("catalog_read")];
        target_dsns.extend(replicas.iter().map(|r| r.dsn("catalog_read")));
        for dsn in &target_dsns {
            walcast(&["schema", "apply", "read", "--dsn", dsn]);
        }

        let topic = unique_name("e2e");
        let slot = unique_name("e2e_slot");
        let (source_admin, sink_admin, write_port) = (
            free_port().unwrap_or_else(|e| panic!("{e}")),
            free_port().unwrap_or_else(|e| panic!("{e}")),
            free_port().unwrap_or_else(|e| panic!("{e}")),
        );
        let root = repo_root();
        let rewrite = |file: &str, pairs: &[(String, String)]| -> PathBuf {
            let mut text = std::fs::read_to_string(root.join("connectors").join(file))
                .unwrap_or_else(|e| panic!("{e}"));
            for (from, to) in pairs {
                assert!(text.contains(from.as_str()), "{file} has no {from:?}");
                text = text.replacen(from.as_str(), to, 1);
            }
            let path = dir.path().join(file);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            path
        };
        let kafka_pairs = [
            (
                "brokers = \"127.0.0.1:19092\"".to_owned(),
                format!("brokers = {:?}", kafka.bootstrap()),
            ),
            (
                "topic = \"catalog.events\"".to_owned(),
                format!("topic = {topic:?}"),
            ),
        ];
        let mut source_pairs = kafka_pairs.to_vec();
        source_pairs.extend([
            (
                "dsn = \"host=127.0.0.1 port=5432 user=postgres dbname=catalog_write\"".to_owned(),
                format!("dsn = {:?}", leader.dsn("catalog_write")),
            ),
            (
                "slot = \"walcast_catalog_outbox\"".to_owned(),
                format!("slot = {slot:?}"),
            ),
            (
                "publication = \"walcast_catalog_outbox\"".to_owned(),
                format!("publication = {slot:?}"),
            ),
            (
                "listen = \"127.0.0.1:9464\"".to_owned(),
                format!("listen = \"127.0.0.1:{source_admin}\""),
            ),
        ]);
        let source_cfg = rewrite("catalog-outbox-source.toml", &source_pairs);
        let mut sink_pairs = kafka_pairs.to_vec();
        sink_pairs.extend([
            (
                "listen = \"127.0.0.1:9465\"".to_owned(),
                format!("listen = \"127.0.0.1:{sink_admin}\""),
            ),
            (
                "max_events = 1000".to_owned(),
                format!("max_events = {}", opts.batch),
            ),
            (
                "files = [\"../sql/read.sql\"]".to_owned(),
                format!(
                    "files = [{:?}]",
                    root.join("sql/read.sql").display().to_string()
                ),
            ),
        ]);
        for (t, (port, dsn)) in TARGETS.iter().zip((5432..).zip(&target_dsns)) {
            sink_pairs.push((
                format!("[targets.{t}]\ndsn = \"host=127.0.0.1 port={port} user=postgres dbname=catalog_read\""),
                format!("[targets.{t}]\ndsn = {dsn:?}"),
            ));
        }
        let sink_cfg = rewrite("catalog-read-sink.toml", &sink_pairs);

        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
        let arg = |p: &Path| p.display().to_string();
        let source = service(
            "source",
            vec!["source".into(), "--config".into(), arg(&source_cfg)],
            &opts.env,
            &logs,
        );
        let sink = service(
            "sink",
            vec!["sink".into(), "--config".into(), arg(&sink_cfg)],
            &opts.env,
            &logs,
        );
        let app = opts.app.then(|| {
            let mut args: Vec<String> = vec![
                "app".into(),
                "--write-dsn".into(),
                leader.dsn("catalog_write"),
                "--write-listen".into(),
                format!("127.0.0.1:{write_port}"),
                "--query-listen".into(),
                format!(
                    "127.0.0.1:{}",
                    free_port().unwrap_or_else(|e| panic!("{e}"))
                ),
            ];
            for r in &replicas {
                args.push("--read-dsn".into());
                args.push(r.dsn("catalog_read"));
            }
            service("app", args, &opts.env, &logs)
        });
        let stack = Stack {
            dir,
            kafka,
            leader,
            replicas,
            topic,
            slot,
            source,
            sink,
            app,
            write_port,
            source_admin,
            sink_admin,
            source_config: source_cfg,
            sink_config: sink_cfg,
        };
        stack.wait_ready(Duration::from_secs(120)).await;
        if opts.existing_products == 0 {
            // The shipped source file snapshots `products` when it creates its slot. On an
            // empty catalog that snapshot emits nothing, unless a load writes products while it
            // runs: let it complete first, so the proofs see the outbox's events alone.
            stack.wait_initial_snapshot(Duration::from_secs(60)).await;
        }
        stack
    }

    /// Waits until the source's initial snapshot (`initial-<slot>`) is completed.
    pub async fn wait_initial_snapshot(&self, within: Duration) {
        let id = format!("initial-{}", self.slot);
        let topic = walcast_kafka::snapshots::default_topic(&self.topic);
        let (brokers, properties) = (
            self.kafka.bootstrap(),
            walcast_config::KafkaProperties::default(),
        );
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let settings = walcast_kafka::ClientSettings::new(&brokers, &properties);
            let state =
                walcast_kafka::snapshots::read_all(settings, &topic, Duration::from_secs(10))
                    .await
                    .ok()
                    .and_then(|mut states| states.remove(&id));
            if state.as_ref().is_some_and(|s| s.status.is_final()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the initial snapshot {id} did not complete within {within:?}: {state:?}; the source's log ends with:\n{}",
                self.source.log_tail(4000)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn write_dsn(&self) -> String {
        self.leader.dsn("catalog_write")
    }

    /// The DSN of each sink target, by target name.
    pub fn targets(&self) -> BTreeMap<&'static str, String> {
        let mut out = BTreeMap::new();
        out.insert(TARGETS[0], self.leader.dsn("catalog_read"));
        for (t, r) in TARGETS[1..].iter().zip(&self.replicas) {
            out.insert(*t, r.dsn("catalog_read"));
        }
        out
    }

    /// Waits until the source and the sink answer `/ready` with 200 (and the app, if any).
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut waits = vec![
            (self.source_admin, &self.source),
            (self.sink_admin, &self.sink),
        ];
        if let Some(app) = &self.app {
            waits.push((self.write_port, app));
        }
        for (port, service) in waits {
            loop {
                let ok = tokio::task::spawn_blocking(move || http_get_status(port, "/ready"))
                    .await
                    .ok()
                    .flatten()
                    == Some(200);
                if ok {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "walcast {} (port {port}) not ready within {within:?}; its log ends with:\n{}",
                    service.name(),
                    service.log_tail(4000)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Every service that exited on its own, with its log tail.
    pub fn dead_services(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for s in [
            Some(&mut self.source),
            Some(&mut self.sink),
            self.app.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if let Err(e) = check_alive(s) {
                out.push(e);
            }
        }
        out
    }

    /// Bytes of WAL the slot holds back.
    pub async fn slot_lag_bytes(&self) -> Option<i64> {
        let c = connect(&self.write_dsn()).await.ok()?;
        c.query_opt(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&self.slot],
        )
        .await
        .ok()
        .flatten()
        .and_then(|r| r.get(0))
    }
}

/// Inserts `n` products (no outbox rows: they predate walcast), at version 1.
async fn seed_products(dsn: &str, n: u64) {
    let c = connect(dsn).await.unwrap_or_else(|e| panic!("{e}"));
    c.execute(
        "INSERT INTO products (id, sku, name, description, price, currency, is_active, \
         created_at, updated_at, version) \
         SELECT gen_random_uuid(), 'OLD-' || g, 'Existing product ' || g, \
                CASE WHEN g % 3 = 0 THEN NULL ELSE 'Bought in ' || (2000 + g % 25) END, \
                (100 + g % 99900) / 100.0, 'EUR', g % 7 <> 0, now(), now(), 1 \
         FROM generate_series(1, $1::int8) AS g",
        &[&(n as i64)],
    )
    .await
    .unwrap_or_else(|e| panic!("seeding {n} products: {e}"));
}

pub async fn connect(dsn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The status code of a GET, or `None` if nothing answers.
/// The first sample of `name` in a Prometheus text exposition (0 when absent).
pub fn prometheus_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(name))
        .find(|rest| rest.starts_with([' ', '{']))
        .and_then(|rest| rest.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let (status, _) = http(port, "GET", path, None).ok()?;
    Some(status)
}

/// A minimal HTTP/1.1 request with `Connection: close`; returns the status and the body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = json.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if json.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if method != "GET" {
        // Every write carries a key of its own, as a careful client's does: the soak then
        // shows idempotency_keys bounded by its window.
        req.push_str(&format!("Idempotency-Key: {}\r\n", uuid::Uuid::new_v4()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    // Bytes, not text: a chunk boundary may fall inside a UTF-8 character.
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let (head, body) = split_head(&resp);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {head:.80}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The head of an HTTP response as text, and the body's bytes.
fn split_head(resp: &[u8]) -> (String, &[u8]) {
    match resp.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (
            String::from_utf8_lossy(&resp[..i]).into_owned(),
            &resp[i + 4..],
        ),
        None => (String::from_utf8_lossy(resp).into_owned(), &[]),
    }
}

/// The body of a chunked response (sizes in hex, each chunk followed by CRLF).
pub fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let Some(chunk) = s.get(eol + 2..eol + 2 + n) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.extend_from_slice(chunk);
        s = s.get(eol + 4 + n..).unwrap_or_default();
    }
    out
}

/// A small deterministic PRNG (xorshift64*), so a failing run can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// The `p`-th percentile (0–100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
