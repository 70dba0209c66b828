//! Security, end to end with the real `walcast` binary: Postgres over TLS (`verify-full`) with
//! SCRAM passwords, Kafka over `SASL_SSL` with SCRAM-SHA-256, wrong credentials that fail with
//! an error naming the cause, a least-privilege replication role, and no secret in any log
//! line of any process (JSON logs at `RUST_LOG=debug`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{WALCAST, free_port, walcast};

use walcast_testkit::{
    ConnectorFile, Kafka, Postgres, SINK_FILE, SOURCE_FILE, Service, TomlValue, repo_root,
    unique_name, wait_until,
};

/// The Postgres role the TLS cluster is created with, and its password (a secret to hunt).
const PG_USER: &str = "walcast_app";

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

fn secure_dsn(pg: &Postgres, db: &str, user: &str, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} password={} dbname={db} sslmode=verify-full sslrootcert={}",
        pg.port(),
        quoted(password),
        pg.ca_file().unwrap().display()
    )
}

/// `walcast --log-json ARGS` at `RUST_LOG=debug` as a child process; its stderr (JSON log
/// lines) and stdout in `dir/<name>-1.log`.
fn spawn_walcast(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
    let mut w = walcast(name, &["--log-json"], dir)
        .args(args)
        .env("RUST_LOG", "debug");
    for (k, v) in env {
        w = w.env(k, v);
    }
    w.start().unwrap()
}

/// Waits (60 s at most) until the log names `fix`, stops the process, asserts the log also
/// names `cause`, and returns the whole log.
fn stop_once_named(mut w: Service, cause: &str, fix: &str) -> String {
    let named = w.wait_for_log(fix, Duration::from_secs(60)).is_ok();
    w.terminate(Duration::from_secs(20));
    let out = w.log();
    assert!(
        named && out.contains(cause),
        "{} must name {cause:?} and {fix:?}:\n{out}",
        w.log_path(w.starts()).display()
    );
    out
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
    let mut file = ConnectorFile::shipped(SOURCE_FILE).unwrap();
    // Given by WALCAST_POSTGRES__DSN, as docs/operations.md recommends for passwords.
    file.set(
        &["postgres", "dsn"],
        "host=127.0.0.1 user=nobody dbname=nothing",
    )
    .set(&["postgres", "slot"], slot)
    .set(&["postgres", "publication"], slot)
    .set(&["postgres", "create"], create)
    .set(&["postgres", "lag_interval_secs"], 1)
    .set(&["kafka", "brokers"], kafka.secure_bootstrap().unwrap())
    .set(&["kafka", "topic"], topic)
    .set(&["admin", "listen"], format!("127.0.0.1:{}", free_port()));
    sasl_properties(&mut file, kafka, sasl_password);
    file.write(&dir.join(format!("{name}.toml"))).unwrap()
}

/// The SASL_SSL settings in `[kafka.properties]`, with `password` as `sasl.password`.
fn sasl_properties(file: &mut ConnectorFile, kafka: &Kafka, password: &str) {
    for (k, v) in kafka.secure_properties().unwrap() {
        let v = if k == "sasl.password" {
            password.to_owned()
        } else {
            v
        };
        file.set(&["kafka", "properties", &k], v);
    }
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
    let mut file = ConnectorFile::shipped(SINK_FILE).unwrap();
    file.set(&["kafka", "brokers"], kafka.secure_bootstrap().unwrap())
        .set(&["kafka", "topic"], topic)
        .set(&["kafka", "group_prefix"], unique_name("sec_sink"))
        .set(&["admin", "listen"], format!("127.0.0.1:{}", free_port()))
        .set(
            &["schema", "files"],
            TomlValue::from_iter([repo_root().join("sql/read.sql").display().to_string()]),
        );
    sasl_properties(&mut file, kafka, sasl_password);
    file.remove(&["targets"]);
    for (target, dsn) in targets {
        file.set(&["targets", target, "dsn"], dsn.as_str());
    }
    file.write(&dir.join(format!("{name}.toml"))).unwrap()
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

/// The rows of `prefix` in the read model once there are `n` (or when `limit` passed).
fn wait_rows(pg: &Postgres, db: &str, prefix: &str, n: usize, limit: Duration) -> usize {
    let count = || -> usize {
        pg.psql(
            db,
            &format!(
                "SELECT count(*) FROM catalog_product_read WHERE sku LIKE '{prefix}-%' AND price = 12.50"
            ),
        )
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
    };
    let _ = wait_until("the rows in the read model", limit, || count() >= n);
    count()
}

fn schema_apply(dir: &Path, name: &str, schema: &str, dsn: &str) -> Service {
    let mut w = spawn_walcast(
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
    let mut logs = vec![("schema-write", schema.log())];
    assert!(schema.log().contains("schema applied"), "{}", schema.log());
    assert!(
        schema.log().contains("sslmode=verify-full"),
        "the logged DSN shows the TLS mode: {}",
        schema.log()
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
    let mut source = spawn_walcast(
        dir.path(),
        "source",
        &["source", "--config", source_cfg.to_str().unwrap()],
        &[("WALCAST_POSTGRES__DSN", &write_dsn)],
    );
    assert!(
        source
            .wait_for_log("source streaming", Duration::from_secs(90))
            .is_ok(),
        "source did not start:\n{}",
        source.log()
    );

    let targets = [
        ("read_a", secure_dsn(&pg, &read_a, PG_USER, &pg_password)),
        ("read_b", secure_dsn(&pg, &read_b, PG_USER, &pg_password)),
    ];
    let sink_cfg = sink_config(dir.path(), "sink", &topic, &targets, kafka, &kafka_password);
    let mut sink = spawn_walcast(
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
            source.log(),
            sink.log()
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

    source.terminate(Duration::from_secs(20));
    sink.terminate(Duration::from_secs(20));
    logs.push(("source", source.log()));
    logs.push(("sink", sink.log()));
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
    assert!(schema.log().contains("schema applied"), "{}", schema.log());

    let wrong_pg = secret("pgwrong");
    let wrong_sasl = secret("saslwrong");
    let mut logs = Vec::new();

    // Postgres: `walcast schema apply`, the source and the sink each stop with the cause.
    let bad_dsn = secure_dsn(&pg, &write_db, PG_USER, &wrong_pg);
    let mut schema = schema_apply(dir.path(), "schema-bad", "write", &bad_dsn);
    assert!(!schema.wait_exit(Duration::ZERO).unwrap().success());
    assert!(
        schema
            .log()
            .contains("password authentication failed for user \\\"walcast_app\\\""),
        "{}",
        schema.log()
    );
    logs.push(("schema-bad", schema.log()));

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
    let mut source = spawn_walcast(
        dir.path(),
        "source-bad-pg",
        &["source", "--config", source_cfg.to_str().unwrap()],
        &[("WALCAST_POSTGRES__DSN", &bad_dsn)],
    );
    let status = source.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success()),
        "a wrong password must stop the source: {}",
        source.log()
    );
    assert!(
        source.log().contains("password authentication failed"),
        "{}",
        source.log()
    );
    logs.push(("source-bad-pg", source.log()));

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
    // the hostile tests): it is retried slowly and named with the cause and the fix.
    let sink = spawn_walcast(
        dir.path(),
        "sink-bad-pg",
        &["sink", "--config", sink_cfg.to_str().unwrap()],
        &[],
    );
    let out = stop_once_named(
        sink,
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
    let source = spawn_walcast(
        dir.path(),
        "source-bad-sasl",
        &["source", "--config", source_cfg.to_str().unwrap()],
        &[("WALCAST_POSTGRES__DSN", &good_dsn)],
    );
    let out = stop_once_named(
        source,
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
    let sink = spawn_walcast(
        dir.path(),
        "sink-bad-sasl",
        &["sink", "--config", sink_cfg.to_str().unwrap()],
        &[],
    );
    let out = stop_once_named(
        sink,
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
             CREATE TABLE public.walcast_signal (id text PRIMARY KEY, type text NOT NULL, data text);
             CREATE PUBLICATION {slot} FOR TABLE public.outbox_messages, public.walcast_signal;",
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
    let mut source = spawn_walcast(
        dir.path(),
        "source-lp",
        &["source", "--config", source_cfg.to_str().unwrap()],
        &[(
            "WALCAST_POSTGRES__DSN",
            &secure_dsn(&pg, &write_db, &role, &role_password),
        )],
    );
    assert!(
        source
            .wait_for_log("source streaming", Duration::from_secs(90))
            .is_ok(),
        "the least-privilege role must be enough to stream:\n{}",
        source.log()
    );
    insert_products(&pg, &write_db, "LP", 5);
    // The slot advances past the inserts: the source read them and the broker acknowledged them.
    let target_lsn = pg.psql(&write_db, "SELECT pg_current_wal_lsn()").unwrap();
    let confirmed = wait_until("the slot confirmed", Duration::from_secs(60), || {
        pg.psql(
            &write_db,
            &format!(
                "SELECT confirmed_flush_lsn >= '{target_lsn}'::pg_lsn \
                 FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ),
        )
        .unwrap()
            == "t"
    });
    assert!(
        confirmed.is_ok(),
        "the slot was not confirmed past {target_lsn}:\n{}",
        source.log()
    );
    source.terminate(Duration::from_secs(20));
    assert_no_secret(
        &[("source-lp", source.log())],
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
    let mut file = ConnectorFile::shipped(SOURCE_FILE).unwrap();
    assert!(file.remove(&["admin"]));
    let source = file.write(&dir.path().join("source.toml")).unwrap();
    let config = walcast_source::SourceConfig::load(&source).unwrap();
    assert!(
        config.admin.listen.ip().is_loopback(),
        "{}",
        config.admin.listen
    );
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9464");

    let mut file = ConnectorFile::shipped(SINK_FILE).unwrap();
    assert!(file.remove(&["admin"]));
    file.set(
        &["schema", "files"],
        TomlValue::from_iter([repo_root().join("sql/read.sql").display().to_string()]),
    );
    let sink = file.write(&dir.path().join("sink.toml")).unwrap();
    let config = walcast_sink::SinkConfig::load(&sink).unwrap();
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9465");

    // The app's write and query APIs, and what `walcast status` asks by default.
    let help = Command::new(WALCAST)
        .args(["app", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 127.0.0.1:3000]"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:4000]"), "{help}");
    assert!(!help.contains("0.0.0.0"), "{help}");
}
