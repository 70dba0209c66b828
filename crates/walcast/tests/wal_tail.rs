//! `walcast wal tail` as an operator runs it: the real binary against a real
//! Postgres 15. JSON lines of the documented shape with typed values, the
//! slot advancing, a second run continuing where the first stopped, and a
//! failed connection named on stderr.

use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;
use walcast_pgoutput::Lsn;
use walcast_testkit::{Postgres, unique_name};

/// Any run that takes longer is stuck (e.g. waiting for changes that never come).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The documented keys of one change, in order.
const KEYS: [&str; 10] = [
    "op",
    "lsn",
    "commit_lsn",
    "xid",
    "commit_ts",
    "schema",
    "table",
    "new",
    "old",
    "unchanged_toast",
];

/// An LSN as printed by Postgres or `wal tail` (`X/X`).
fn lsn(text: &str) -> Lsn {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an LSN: {e}"))
}

/// One cluster for this binary; every test has its own database, slot and publication.
fn pg() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| Postgres::start().expect("start Postgres"))
}

/// Runs `walcast wal tail ARGS`; killed if it outlives [`RUN_LIMIT`].
async fn wal_tail(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walcast"));
    cmd.args(["wal", "tail"]).args(args).kill_on_drop(true);
    match tokio::time::timeout(RUN_LIMIT, cmd.output()).await {
        Ok(out) => out.expect("run walcast"),
        Err(_) => panic!("walcast wal tail {args:?} still running after {RUN_LIMIT:?}"),
    }
}

/// A database with a slot and publication name of its own.
struct Db {
    name: String,
    dsn: String,
    slot: String,
    publication: String,
}

impl Db {
    fn new(prefix: &str) -> Db {
        let name = unique_name(prefix);
        pg().create_database(&name).unwrap();
        Db {
            dsn: pg().dsn(&name),
            slot: format!("{name}_slot"),
            publication: format!("{name}_pub"),
            name,
        }
    }

    fn sql(&self, sql: &str) -> String {
        pg().psql(&self.name, sql).unwrap()
    }

    /// The slot's `confirmed_flush_lsn`.
    fn confirmed_flush(&self) -> Lsn {
        let text = self.sql(&format!(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        ));
        assert!(
            !text.is_empty(),
            "no slot {} (--create makes it)",
            self.slot
        );
        lsn(&text)
    }

    /// `wal tail --create --table public.t --max-changes N`: the printed changes.
    async fn tail(&self, max_changes: u64) -> Vec<Value> {
        let max = max_changes.to_string();
        let out = wal_tail(&[
            "--dsn",
            &self.dsn,
            "--slot",
            &self.slot,
            "--publication",
            &self.publication,
            "--create",
            "--table",
            "public.t",
            "--max-changes",
            &max,
        ])
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        assert_eq!(lines.len() as u64, max_changes, "stdout: {stdout}");
        for line in &lines {
            let keys: Vec<&str> = line
                .as_object()
                .expect("one JSON object per line")
                .keys()
                .map(String::as_str)
                .collect();
            let mut expected = KEYS.to_vec();
            expected.sort_unstable();
            assert_eq!(keys, expected, "{line}");
        }
        lines
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_typed_changes_confirms_them_and_the_next_run_continues() {
    let db = Db::new("cli_tail");
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, name text, price numeric(10,2), ok bool, \
         meta jsonb, at timestamptz, tags text[], big bigint, ratio float8, day date, \
         raw bytea, ref uuid, note text)",
    );
    // Creates publication and slot; nothing to print yet.
    assert!(db.tail(0).await.is_empty());
    let start = db.confirmed_flush();
    assert!(!start.is_zero(), "--create made the slot");

    db.sql(
        "INSERT INTO t VALUES (1, 'lamp', 12.30, true, '{\"a\": [1, 2]}', \
         '2026-11-23 07:49:44.123+00', '{x,NULL}', 9007199254740993, 0.5, '2026-11-23', \
         '\\x0102ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL)",
    );
    db.sql("INSERT INTO t (id, name) VALUES (2, 'desk')");
    db.sql("BEGIN; UPDATE t SET name = 'lamp 2' WHERE id = 1; DELETE FROM t WHERE id = 2; COMMIT;");

    let first = db.tail(2).await;
    let row = &first[0];
    assert_eq!(row["op"], "insert");
    assert_eq!(
        (row["schema"].as_str(), row["table"].as_str()),
        (Some("public"), Some("t"))
    );
    assert!(row["xid"].is_u64(), "{row}");
    assert!(row["commit_ts"].as_str().unwrap().ends_with('Z'), "{row}");
    assert!(row["old"].is_null(), "{row}");
    assert_eq!(row["unchanged_toast"], json!([]));
    // The offset is the server's TimeZone; the instant is the same.
    let mut new = row["new"].clone();
    let at = new["at"].take();
    let at = at.as_str().unwrap_or_default();
    assert!(
        at.len() == 29
            && at.get(10..11) == Some("T")
            && at.get(16..23) == Some(":44.123")
            && at.get(26..27) == Some(":"),
        "timestamptz as ISO 8601 with a ±HH:MM offset: {at}"
    );
    assert_eq!(
        new,
        json!({
            "id": 1,
            "name": "lamp",
            "price": "12.30",
            "ok": true,
            "meta": {"a": [1, 2]},
            "at": null,
            "tags": ["x", null],
            "big": 9007199254740993_i64,
            "ratio": 0.5,
            "day": "2026-11-23",
            "raw": "AQL/",
            "ref": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "note": null,
        })
    );
    assert_eq!(
        (first[1]["op"].as_str(), first[1]["new"]["id"].as_i64()),
        (Some("insert"), Some(2))
    );
    for line in &first {
        let (lsn, commit) = (
            line["lsn"].as_str().unwrap(),
            line["commit_lsn"].as_str().unwrap(),
        );
        assert!(
            self::lsn(lsn) < self::lsn(commit),
            "change before its commit: {line}"
        );
    }
    // Both transactions were complete: the slot moved past the second commit.
    let after_first = db.confirmed_flush();
    assert!(start < after_first);
    assert!(after_first >= lsn(first[1]["commit_lsn"].as_str().unwrap()));

    // The next run starts after them: the update and delete, nothing repeated.
    let second = db.tail(2).await;
    assert_eq!(second[0]["op"], "update");
    assert_eq!(second[0]["new"]["name"], "lamp 2");
    assert_eq!(second[1]["op"], "delete");
    assert_eq!(second[1]["old"], json!({"id": 2}));
    assert!(second[1]["new"].is_null());
    assert_eq!(
        second[0]["commit_lsn"], second[1]["commit_lsn"],
        "one transaction"
    );
    assert!(lsn(first[1]["lsn"].as_str().unwrap()) < lsn(second[0]["lsn"].as_str().unwrap()));
    assert!(after_first < db.confirmed_flush());
}

#[tokio::test]
async fn unreachable_server_exits_non_zero_naming_the_cause() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=nowhere");
    let out = wal_tail(&["--dsn", &dsn, "--slot", "s", "--publication", "p"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exited 0: {stderr}");
    assert!(out.stdout.is_empty(), "printed changes: {:?}", out.stdout);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.to_lowercase().contains("refused"),
        "stderr does not name the server and the cause: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_needs_no_table_when_the_publication_exists() {
    let db = Db::new("cli_tail_pub");
    db.sql(&format!(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION {} FOR TABLE t",
        db.publication
    ));
    let args = |max: &'static str| {
        vec![
            "--dsn".to_owned(),
            db.dsn.clone(),
            "--slot".into(),
            db.slot.clone(),
            "--publication".into(),
            db.publication.clone(),
            "--create".into(),
            "--max-changes".into(),
            max.into(),
        ]
    };
    let run = async |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = wal_tail(&args).await;
        assert!(
            out.status.success(),
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Only the slot was missing: created, nothing printed yet.
    assert_eq!(run(args("0")).await, "");
    db.sql("INSERT INTO t VALUES (7)");
    let line: Value = serde_json::from_str(run(args("1")).await.trim()).unwrap();
    assert_eq!(
        (line["op"].as_str(), line["new"]["id"].as_i64()),
        (Some("insert"), Some(7))
    );

    // A publication that is missing still needs the tables to create it with.
    let out = wal_tail(&[
        "--dsn",
        &db.dsn,
        "--slot",
        &db.slot,
        "--publication",
        "nope_pub",
        "--create",
        "--max-changes",
        "0",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exited 0: {stderr}");
    assert!(stderr.contains("--table"), "{stderr}");
}

#[tokio::test]
async fn logs_to_a_pipe_or_file_have_no_colour_codes() {
    let out = wal_tail(&[
        "--dsn",
        "host=127.0.0.1 port=1 user=x dbname=y",
        "--slot",
        "s",
        "--publication",
        "p",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape codes in a pipe: {stderr:?}"
    );
}
