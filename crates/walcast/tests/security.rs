//! Security, end to end with the real `walcast` binary: Postgres over TLS (`verify-full`) with
//! SCRAM passwords, Kafka over `SASL_SSL` with SCRAM-SHA-256, wrong credentials that fail with
//! an error naming the cause, a least-privilege replication role, and no secret in any log
//! line of any process (JSON logs at `RUST_LOG=debug`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use walcast_testkit::{Kafka, Postgres, unique_name};

/// The Postgres role the TLS cluster is created with, and its password (a secret to hunt).
const PG_USER: &str = "walcast_app";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A password nobody else prints: unique per call, with a quote and a space so DSN quoting is
/// exercised too.
fn secret(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}-S3cr3t {nanos:x}'{}", std::process::id())
}

/// `'...'` for a libpq key=value DSN.
fn quoted(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A TOML basic string.
fn toml_str(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

fn secure_dsn(pg: &Postgres, db: &str, user: &str, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} password={} dbname={db} sslmode=verify-full sslrootcert={}",
        pg.port(),
        quoted(password),
        pg.ca_file().unwrap().display()
    )
}

/// A running `walcast` child with its stderr (JSON log lines) and stdout in files.
struct Walcast {
    child: Child,
    log: PathBuf,
}

impl Walcast {
    fn spawn(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Walcast {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_walcast"))
            .arg("--log-json")
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Walcast { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own; its exit status, or None at the deadline.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a log line contains `needle`; false at the deadline.
    fn wait_log(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.output().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (60 s at most) until the log names `fix`, stops the process, asserts the log also
    /// names `cause`, and returns the whole log.
    fn stop_once_named(mut self, cause: &str, fix: &str) -> String {
        let named = self.wait_log(fix, Duration::from_secs(60));
        self.stop();
        let out = self.output();
        assert!(
            named && out.contains(cause),
            "{} must name {cause:?} and {fix:?}:\n{out}",
            self.log.display()
        );
        out
    }

    /// SIGTERM, then SIGKILL after 20 s.
    fn stop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            if self.wait_exit(Duration::from_secs(20)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

impl Drop for Walcast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every line of every log, checked for every secret; the offending line is shown masked.
fn assert_no_secret(logs: &[(&str, String)], secrets: &[&str]) {
    let mut lines = 0;
    for (name, text) in logs {
        for line in text.lines() {
            lines += 1;
            for s in secrets {
                // The whole secret, and its first word (in case a parser split it at the space).
                let head = s.split(' ').next().unwrap();
                assert!(
                    !line.contains(s) && !line.contains(head),
                    "{name} logged a secret: {}",
                    line.replace(s, "<SECRET>").replace(head, "<SECRET>")
                );
            }
        }
    }
    assert!(lines > 0, "no log lines captured");
}

/// The shipped source connector file with this test's database, slot, topic and broker.
fn source_config(
    dir: &Path,
    name: &str,
    slot: &str,
    topic: &str,
    create: bool,
    kafka: &Kafka,
    sasl_password: &str,
) -> PathBuf {
    let shipped =
        std::fs::read_to_string(repo().join("connectors/catalog-outbox-source.toml")).unwrap();
    let mut out = String::new();
    for line in shipped.lines() {
        let line = if line.starts_with("dsn = ") {
            // Given by WALCAST_POSTGRES__DSN, as docs/operations.md recommends for passwords.
            "dsn = \"host=127.0.0.1 user=nobody dbname=nothing\"".to_owned()
        } else if line.starts_with("slot = ") {
            format!("slot = \"{slot}\"")
        } else if line.starts_with("publication = ") {
            format!("publication = \"{slot}\"")
        } else if line.starts_with("create = ") {
            format!("create = {create}")
        } else if line.starts_with("brokers = ") {
            format!("brokers = \"{}\"", kafka.secure_bootstrap().unwrap())
        } else if line.starts_with("topic = ") {
            format!("topic = \"{topic}\"")
        } else if line.starts_with("listen = ") {
            format!("listen = \"127.0.0.1:{}\"", free_port())
        } else if line.starts_with("lag_interval_secs") {
            "lag_interval_secs = 1".to_owned()
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
        if line == "[kafka.properties]" {
            out.push_str(&sasl_properties(kafka, sasl_password));
        }
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, out).unwrap();
    path
}

/// The SASL_SSL settings for `[kafka.properties]`, with `password` as `sasl.password`.
fn sasl_properties(kafka: &Kafka, password: &str) -> String {
    let mut out = String::new();
    for (k, v) in kafka.secure_properties().unwrap() {
        let v = if k == "sasl.password" {
            password.to_owned()
        } else {
            v
        };
        out.push_str(&format!("\"{k}\" = {}\n", toml_str(&v)));
    }
    out
}

/// The shipped sink connector file with this test's targets, topic, group and broker.
fn sink_config(
    dir: &Path,
    name: &str,
    topic: &str,
    targets: &[(&str, String)],
    kafka: &Kafka,
    sasl_password: &str,
) -> PathBuf {
    let shipped =
        std::fs::read_to_string(repo().join("connectors/catalog-read-sink.toml")).unwrap();
    let (head, rest) = shipped.split_once("[targets.catalog_read]").unwrap();
    let (_, tail) = rest.split_once("# Where the envelope lives").unwrap();
    let mut out = String::new();
    for line in head.lines() {
        let line = if line.starts_with("brokers = ") {
            format!("brokers = \"{}\"", kafka.secure_bootstrap().unwrap())
        } else if line.starts_with("topic = ") {
            format!("topic = \"{topic}\"")
        } else if line.starts_with("group_prefix = ") {
            format!("group_prefix = \"{}\"", unique_name("sec_sink"))
        } else if line.starts_with("listen = ") {
            format!("listen = \"127.0.0.1:{}\"", free_port())
        } else if line.starts_with("files = ") {
            format!(
                "files = [{}]",
                toml_str(&repo().join("sql/read.sql").display().to_string())
            )
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
        if line == "[kafka.properties]" {
            out.push_str(&sasl_properties(kafka, sasl_password));
        }
    }
    for (target, dsn) in targets {
        out.push_str(&format!("[targets.{target}]\ndsn = {}\n\n", toml_str(dsn)));
    }
    out.push_str("# Where the envelope lives");
    out.push_str(tail);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, out).unwrap();
    path
}

/// Inserts `n` ProductCreated outbox rows (the v2 payload the sink's mapping expects).
fn insert_products(pg: &Postgres, db: &str, prefix: &str, n: usize) {
    let sql = format!(
        "INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, correlation_id, payload) \
         SELECT gen_random_uuid(), p.id, 'ProductCreated', now(), gen_random_uuid(), \
                jsonb_build_object('productId', p.id, 'sku', '{prefix}-' || p.i, 'name', 'Product ' || p.i, \
                                   'description', 'made over TLS', 'price', '12.50', 'currency', 'EUR', \
                                   'isActive', true, 'version', 1) \
         FROM (SELECT i, gen_random_uuid() AS id FROM generate_series(1, {n}) AS i) p"
    );
    pg.psql(db, &sql).unwrap();
}

fn wait_rows(pg: &Postgres, db: &str, prefix: &str, n: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let count: usize = pg
            .psql(
                db,
                &format!(
                    "SELECT count(*) FROM catalog_product_read WHERE sku LIKE '{prefix}-%' AND price = 12.50"
                ),
            )
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if count >= n || Instant::now() >= deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn schema_apply(dir: &Path, name: &str, schema: &str, dsn: &str) -> Walcast {
    let mut w = Walcast::spawn(
        dir,
        name,
        &["schema", "apply", schema],
        &[("WALCAST_DSN", dsn)],
    );
    assert!(
        w.wait_exit(Duration::from_secs(60)).is_some(),
        "schema apply hung"
    );
    w
}

#[test]
fn tls_and_sasl_end_to_end_with_no_secret_in_any_log() {
    let kafka = Kafka::shared_secure().unwrap();
    let kafka_password = kafka
        .secure_properties()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "sasl.password")
        .unwrap()
        .1;
    let pg_password = secret("pg");
    let pg = Postgres::builder()
        .tls_scram(PG_USER, &pg_password)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (write_db, read_a, read_b) = (unique_name("sw"), unique_name("sra"), unique_name("srb"));
    for db in [&write_db, &read_a, &read_b] {
        pg.create_database(db).unwrap();
    }
    let write_dsn = secure_dsn(&pg, &write_db, PG_USER, &pg_password);

    let schema = schema_apply(dir.path(), "schema-write", "write", &write_dsn);
    let mut logs = vec![("schema-write", schema.output())];
    assert!(
        schema.output().contains("schema applied"),
        "{}",
        schema.output()
    );
    assert!(
        schema.output().contains("sslmode=verify-full"),
        "the logged DSN shows the TLS mode: {}",
        schema.output()
    );

    let (slot, topic) = (unique_name("sec_slot"), unique_name("sec_topic"));
    let source_cfg = source_config(
        dir.path(),
        "source",
        &slot,
        &topic,
        true,
        kafka,
        &kafka_password,
    );
    let mut source = Walcast::spawn(
        dir.path(),
        "source",
        &["source", "--config", source_cfg.to_str().unwrap()],
        &[("WALCAST_POSTGRES__DSN", &write_dsn)],
    );
    assert!(
        source.wait_log("source streaming", Duration::from_secs(90)),
        "source did not start:\n{}",
        source.output()
    );

    let targets = [
        ("read_a", secure_dsn(&pg, &read_a, PG_USER, &pg_password)),
        ("read_b", secure_dsn(&pg, &read_b, PG_USER, &pg_password)),
    ];
    let sink_cfg = sink_config(dir.path(), "sink", &topic, &targets, kafka, &kafka_password);
    let mut sink = Walcast::spawn(
        dir.path(),
        "sink",
        &["sink", "--config", sink_cfg.to_str().unwrap()],
        &[],
    );

    insert_products(&pg, &write_db, "TLS", 20);
    for db in [&read_a, &read_b] {
        let got = wait_rows(&pg, db, "TLS", 20, Duration::from_secs(90));
        assert_eq!(
            got,
            20,
            "{db}: rows missing.\nsource:\n{}\nsink:\n{}",
            source.output(),
            sink.output()
        );
    }
    // The connections really are TLS: every walcast backend on the cluster uses SSL.
    let plain = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name LIKE 'walcast%' AND NOT s.ssl",
        )
        .unwrap();
    assert_eq!(plain, "0", "a walcast connection without TLS");
    let tls = pg
        .psql(
            "postgres",
            "SELECT count(DISTINCT a.application_name) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'walcast%' AND s.ssl",
        )
        .unwrap();
    assert!(
        tls.parse::<i32>().unwrap() >= 2,
        "source and sink over TLS: {tls}"
    );

    source.stop();
    sink.stop();
    logs.push(("source", source.output()));
    logs.push(("sink", sink.output()));
    assert!(
        logs.iter().any(|(_, l)| l.contains("\"level\":\"DEBUG\"")),
        "debug logging was on"
    );
    assert_no_secret(&logs, &[&pg_password, &kafka_password]);
}

#[test]
fn wrong_passwords_fail_with_the_cause_and_are_never_logged() {
    let kafka = Kafka::shared_secure().unwrap();
    let pg_password = secret("pgok");
    let pg = Postgres::builder()
        .tls_scram(PG_USER, &pg_password)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (write_db, read_db) = (unique_name("ww"), unique_name("wr"));
    pg.create_database(&write_db).unwrap();
    pg.create_database(&read_db).unwrap();
    let good_dsn = secure_dsn(&pg, &write_db, PG_USER, &pg_password);
    let schema = schema_apply(dir.path(), "schema-ok", "write", &good_dsn);
    assert!(
        schema.output().contains("schema applied"),
        "{}",
        schema.output()
    );

    let wrong_pg = secret("pgwrong");
    let wrong_sasl = secret("saslwrong");
    let mut logs = Vec::new();

    // Postgres: `walcast schema apply`, the source and the sink each stop with the cause.
    let bad_dsn = secure_dsn(&pg, &write_db, PG_USER, &wrong_pg);
    let mut schema = schema_apply(dir.path(), "schema-bad", "write", &bad_dsn);
    assert!(!schema.wait_exit(Duration::ZERO).unwrap().success());
    assert!(
        schema
            .output()
            .contains("password authentication failed for user \\\"walcast_app\\\""),
        "{}",
        schema.output()
    );
    logs.push(("schema-bad", schema.output()));

    let topic = unique_name("wrong_topic");
    let source_cfg = source_config(
        dir.path(),
        "source-bad-pg",
        &unique_name("wrong_slot"),
        &topic,
        true,
        kafka,
        &secret("unused"),
    );
    let mut source = Walcast::spawn(
        dir.path(),
        "source-bad-pg",
        &["source", "--config", source_cfg.to_str().unwrap()],
        &[("WALCAST_POSTGRES__DSN", &bad_dsn)],
    );
    let status = source.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success()),
        "a wrong password must stop the source: {}",
        source.output()
    );
    assert!(
        source.output().contains("password authentication failed"),
        "{}",
        source.output()
    );
    logs.push(("source-bad-pg", source.output()));

    let bad_target = [("read", secure_dsn(&pg, &read_db, PG_USER, &wrong_pg))];
    let kafka_password = kafka
        .secure_properties()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "sasl.password")
        .unwrap()
        .1;
    let sink_cfg = sink_config(
        dir.path(),
        "sink-bad-pg",
        &topic,
        &bad_target,
        kafka,
        &kafka_password,
    );
    // A misconfigured target does not stop the sink (the other targets keep flowing, see
    // tests/hostile.rs): it is retried slowly and named with the cause and the fix.
    let sink = Walcast::spawn(
        dir.path(),
        "sink-bad-pg",
        &["sink", "--config", sink_cfg.to_str().unwrap()],
        &[],
    );
    let out = sink.stop_once_named(
        "password authentication failed",
        "fix user/password in the target's dsn",
    );
    logs.push(("sink-bad-pg", out));

    // Kafka: a wrong SASL password is reported as an authentication failure.
    let source_cfg = source_config(
        dir.path(),
        "source-bad-sasl",
        &unique_name("sasl_slot"),
        &topic,
        true,
        kafka,
        &wrong_sasl,
    );
    let source = Walcast::spawn(
        dir.path(),
        "source-bad-sasl",
        &["source", "--config", source_cfg.to_str().unwrap()],
        &[("WALCAST_POSTGRES__DSN", &good_dsn)],
    );
    let out = source.stop_once_named(
        "invalid credentials",
        "check sasl.username, sasl.password and sasl.mechanism",
    );
    logs.push(("source-bad-sasl", out));

    let good_target = [("read", secure_dsn(&pg, &read_db, PG_USER, &pg_password))];
    let sink_cfg = sink_config(
        dir.path(),
        "sink-bad-sasl",
        &topic,
        &good_target,
        kafka,
        &wrong_sasl,
    );
    let sink = Walcast::spawn(
        dir.path(),
        "sink-bad-sasl",
        &["sink", "--config", sink_cfg.to_str().unwrap()],
        &[],
    );
    let out = sink.stop_once_named(
        "invalid credentials",
        "check sasl.username, sasl.password and sasl.mechanism",
    );
    logs.push(("sink-bad-sasl", out));

    assert_no_secret(
        &logs,
        &[&pg_password, &wrong_pg, &wrong_sasl, &kafka_password],
    );
}

#[test]
fn a_least_privilege_replication_role_streams_the_outbox() {
    let kafka = Kafka::shared_secure().unwrap();
    let kafka_password = kafka
        .secure_properties()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "sasl.password")
        .unwrap()
        .1;
    let pg = Postgres::builder()
        .tls_scram(PG_USER, &secret("admin"))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write_db = unique_name("lp");
    pg.create_database(&write_db).unwrap();
    pg.psql(&write_db, walcast_schema_sql()).unwrap();

    // What docs/operations.md ("Least-privilege replication role") tells an admin to run.
    let (role, slot) = (unique_name("walcast_repl"), unique_name("lp_slot"));
    let role_password = secret("repl");
    pg.psql(
        &write_db,
        &format!(
            "CREATE ROLE {role} LOGIN REPLICATION PASSWORD '{}';
             GRANT SELECT ON public.outbox_messages TO {role};
             CREATE PUBLICATION {slot} FOR TABLE public.outbox_messages;",
            role_password.replace('\'', "''")
        ),
    )
    .unwrap();
    // A slot cannot be created in a transaction that wrote: its own statement.
    pg.psql(
        &write_db,
        &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
    )
    .unwrap();
    // The role can read the outbox and nothing else.
    let denied = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-At", "-c", "SELECT count(*) FROM products"])
        .arg(secure_dsn(&pg, &write_db, &role, &role_password))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    let topic = unique_name("lp_topic");
    let source_cfg = source_config(
        dir.path(),
        "source-lp",
        &slot,
        &topic,
        false,
        kafka,
        &kafka_password,
    );
    let mut source = Walcast::spawn(
        dir.path(),
        "source-lp",
        &["source", "--config", source_cfg.to_str().unwrap()],
        &[(
            "WALCAST_POSTGRES__DSN",
            &secure_dsn(&pg, &write_db, &role, &role_password),
        )],
    );
    assert!(
        source.wait_log("source streaming", Duration::from_secs(90)),
        "the least-privilege role must be enough to stream:\n{}",
        source.output()
    );
    insert_products(&pg, &write_db, "LP", 5);
    // The slot advances past the inserts: the source read them and the broker acknowledged them.
    let target_lsn = pg.psql(&write_db, "SELECT pg_current_wal_lsn()").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let confirmed = pg
            .psql(
                &write_db,
                &format!(
                    "SELECT confirmed_flush_lsn >= '{target_lsn}'::pg_lsn \
                     FROM pg_replication_slots WHERE slot_name = '{slot}'"
                ),
            )
            .unwrap();
        if confirmed == "t" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was not confirmed past {target_lsn}:\n{}",
            source.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    source.stop();
    assert_no_secret(
        &[("source-lp", source.output())],
        &[&role_password, &kafka_password],
    );
}

/// `sql/write.sql`, as `walcast schema apply write` applies it.
fn walcast_schema_sql() -> &'static str {
    include_str!("../../../sql/write.sql")
}

#[test]
fn admin_endpoints_bind_loopback_by_default() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped files without their [admin] sections: the defaults apply.
    let strip_admin = |text: &str| {
        let mut out = String::new();
        let mut skip = false;
        for line in text.lines() {
            if line.starts_with('[') {
                skip = line == "[admin]";
            }
            if !skip {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    };
    let source = dir.path().join("source.toml");
    std::fs::write(
        &source,
        strip_admin(
            &std::fs::read_to_string(repo().join("connectors/catalog-outbox-source.toml")).unwrap(),
        ),
    )
    .unwrap();
    let config = walcast_source::SourceConfig::load(&source).unwrap();
    assert!(
        config.admin.listen.ip().is_loopback(),
        "{}",
        config.admin.listen
    );
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9464");

    let sink = dir.path().join("sink.toml");
    let text = strip_admin(
        &std::fs::read_to_string(repo().join("connectors/catalog-read-sink.toml")).unwrap(),
    )
    .replace(
        "\"../sql/read.sql\"",
        &toml_str(&repo().join("sql/read.sql").display().to_string()),
    );
    std::fs::write(&sink, text).unwrap();
    let config = walcast_sink::SinkConfig::load(&sink).unwrap();
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9465");

    // The app's write and query APIs, and what `walcast status` asks by default.
    let help = Command::new(env!("CARGO_BIN_EXE_walcast"))
        .args(["app", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 127.0.0.1:3000]"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:4000]"), "{help}");
    assert!(!help.contains("0.0.0.0"), "{help}");
}
