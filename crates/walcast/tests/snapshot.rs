//! `walcast snapshot start|status|cancel`: the signal rows the CLI writes, the states it reads
//! from the progress topic, and how `start` follows a snapshot to its end. The snapshot
//! controller is not run here: the tests write the progress topic's states themselves.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};
use walcast_kafka::snapshots::{SnapshotState, Status, TableProgress};
use walcast_testkit::wait_until;

use crate::support::WALCAST;
use crate::support::pipeline::*;

/// A write database with the signal table, and the shipped source file pointing at it.
fn setup(prefix: &str, dir: &Path) -> (Db, Names, std::path::PathBuf) {
    let db = Db::new(prefix);
    let names = Names::for_db(&db);
    db.psql(WRITE_SQL);
    db.psql(
        "CREATE TABLE public.walcast_signal (id text PRIMARY KEY, type text NOT NULL, data text)",
    );
    let cfg = source_config(dir, &db, &names, &[]);
    (db, names, cfg)
}

/// `walcast ARGS`, run to its end.
fn walcast(args: &[&str]) -> Output {
    Command::new(WALCAST)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("WALCAST_LOG_JSON")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `type|data` of the signal row `id`.
fn signal_row(db: &Db, id: &str) -> (String, Value) {
    let row = db
        .query_text(
            "SELECT type || '|' || data FROM walcast_signal WHERE id = $1",
            id,
        )
        .unwrap_or_else(|| panic!("no signal row {id}"));
    let (kind, data) = row.split_once('|').unwrap();
    (kind.to_owned(), serde_json::from_str(data).unwrap())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn state(id: &str, status: Status, rows: u64, reason: Option<&str>) -> SnapshotState {
    SnapshotState {
        id: id.into(),
        topic: "events".into(),
        status,
        tables: vec![TableProgress {
            table: "public.products".into(),
            last_key: None,
            rows,
            chunks: rows / 100,
            estimated_rows: Some(1000),
            done: status == Status::Completed,
        }],
        start_offsets: Default::default(),
        requested_by: "cli".into(),
        requested_at_ms: now_ms() - 125_000,
        updated_at_ms: now_ms(),
        completed_at_ms: (status == Status::Completed).then(now_ms),
        reason: reason.map(str::to_owned),
    }
}

/// Writes `states` to the progress topic the way the controller does (key = id).
fn put_states(topic: &str, states: &[SnapshotState]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for s in states {
        let value = s.encode();
        producer
            .send(BaseRecord::to(topic).key(s.id.as_str()).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// `walcast snapshot ACTION --config CFG ARGS`: its stdout when it succeeds.
fn succeeds(action: &str, cfg: &str, args: &[&str]) -> String {
    let out = snapshot(action, cfg, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// Its stderr, when it exits 1.
fn fails(action: &str, cfg: &str, args: &[&str]) -> String {
    let out = snapshot(action, cfg, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

fn snapshot(action: &str, cfg: &str, args: &[&str]) -> Output {
    let mut all = vec!["snapshot", action, "--config", cfg];
    all.extend_from_slice(args);
    walcast(&all)
}

#[test]
fn start_and_cancel_insert_debezium_signal_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _names, cfg) = setup("snap_cli", dir.path());
    let cfg = path_str(&cfg);

    let id = succeeds(
        "start",
        cfg,
        &["--table", "public.products", "--id", "snap-a", "--no-wait"],
    );
    assert_eq!(id, "snap-a");
    assert_eq!(
        signal_row(&db, "snap-a"),
        (
            "execute-snapshot".to_owned(),
            json!({"data-collections": ["public.products"], "type": "incremental"})
        )
    );

    // Without --id: a new UUID v7; a table without its schema is in public.
    let id = succeeds("start", cfg, &["--table", "products", "--no-wait"]);
    assert_eq!(
        uuid::Uuid::parse_str(&id).unwrap().get_version_num(),
        7,
        "{id}"
    );
    assert_eq!(
        signal_row(&db, &id).1["data-collections"],
        json!(["public.products"])
    );

    // The same id again, or a table that is not configured: refused, nothing written.
    let e = fails("start", cfg, &["--id", "snap-a", "--no-wait"]);
    assert!(e.contains("a signal with id snap-a exists already"), "{e}");
    let e = fails("start", cfg, &["--table", "public.customers", "--no-wait"]);
    assert!(
        e.contains("--table public.customers is not one of the source's [[snapshot.tables]] (public.products)"),
        "{e}"
    );
    assert_eq!(db.psql("SELECT count(*) FROM walcast_signal"), "2");

    // Cancels: by id, by table; each a stop-snapshot row.
    succeeds("cancel", cfg, &["--id", "snap-a"]);
    succeeds("cancel", cfg, &["--table", "public.products"]);
    let stops = db.psql("SELECT data FROM walcast_signal WHERE type = 'stop-snapshot'");
    let mut stops: Vec<Value> = stops
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    stops.sort_by_key(|v| v.get("snapshot-id").is_none());
    assert_eq!(
        stops,
        vec![
            json!({"data-collections": [], "type": "incremental", "snapshot-id": "snap-a"}),
            json!({"data-collections": ["public.products"], "type": "incremental"}),
        ]
    );
}

#[test]
fn status_prints_every_snapshot_on_the_progress_topic() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, names, cfg) = setup("snap_status", dir.path());
    let cfg = path_str(&cfg);
    let progress = format!("{}.snapshots", names.topic);

    assert_eq!(
        succeeds("status", cfg, &[]),
        format!("no snapshots on {progress}")
    );

    create_topic(&progress, 1);
    put_states(
        &progress,
        &[
            state("snap-run", Status::Requested, 0, None),
            state(
                "snap-bad",
                Status::Failed,
                300,
                Some("table public.products is gone"),
            ),
            // The latest state of an id is the one shown.
            state("snap-run", Status::Running, 450, None),
        ],
    );
    let stdout = succeeds("status", cfg, &[]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let run = lines.iter().find(|l| l.starts_with("snap-run ")).unwrap();
    assert!(
        run.contains("  running  public.products  450/1000 rows  4 chunks  requested 2m"),
        "{run}"
    );
    let bad = lines.iter().find(|l| l.starts_with("snap-bad ")).unwrap();
    assert!(
        bad.contains("  failed  public.products  300/1000 rows")
            && bad.contains("(table public.products is gone)"),
        "{bad}"
    );
}

/// `walcast snapshot start` (following the snapshot) as a child, once its signal row `id`
/// is written.
fn following(db: &Db, cfg: &Path, args: &[&str], id: &str) -> walcast_testkit::Service {
    let mut all = vec!["snapshot", "start", "--config", path_str(cfg)];
    all.extend_from_slice(args);
    let start = spawn("snapshot-start", &all);
    wait_until("the signal row", Duration::from_secs(60), || {
        db.query_text("SELECT id FROM walcast_signal WHERE id = $1", id)
            .is_some()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", start.log()));
    start
}

#[test]
fn start_follows_the_snapshot_until_it_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let (db, names, cfg) = setup("snap_wait", dir.path());
    let progress = format!("{}.snapshots", names.topic);
    create_topic(&progress, 1);

    let mut start = following(
        &db,
        &cfg,
        &["--table", "public.products", "--id", "snap-w"],
        "snap-w",
    );
    put_states(&progress, &[state("snap-w", Status::Running, 400, None)]);
    start.expect_log("snapshot snap-w [", Duration::from_secs(60));
    assert!(
        start.is_running(),
        "a running snapshot is not the end:\n{}",
        start.log()
    );
    put_states(&progress, &[state("snap-w", Status::Completed, 1000, None)]);
    let status = start.exited(Duration::from_secs(60));
    let log = start.log();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("1000/1000 rows") && log.contains("snap-w  completed  public.products"),
        "{log}"
    );

    // Cancelled (or failed): the command exits 1 with the reason.
    let mut start = following(&db, &cfg, &["--id", "snap-c"], "snap-c");
    put_states(
        &progress,
        &[state(
            "snap-c",
            Status::Cancelled,
            200,
            Some("stop-snapshot signal 42"),
        )],
    );
    let status = start.exited(Duration::from_secs(60));
    let log = start.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("snapshot snap-c cancelled: stop-snapshot signal 42"),
        "{log}"
    );
}
