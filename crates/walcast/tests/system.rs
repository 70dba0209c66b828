//! The whole local system, started by `scripts/start-system.sh` itself (the code path an
//! operator uses) on free ports and a private state directory, driven through the catalog
//! HTTP API, checked on the read DB and all three replicas, then stopped by
//! `scripts/stop-system.sh` with no process left behind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::stack::dechunk;
use crate::support::{WALCAST, free_port};

struct System {
    state: tempfile::TempDir,
    env: Vec<(String, String)>,
    write_port: u16,
    query_port: u16,
    admin_ports: (u16, u16),
    pg_ports: Vec<u16>,
}

impl System {
    fn new() -> System {
        let state = tempfile::Builder::new()
            .prefix("walcast-system-")
            .tempdir()
            .unwrap();
        // The Postgres clusters run as the postgres user when we are root: let it in.
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ports: Vec<u16> = (0..10).map(|_| free_port()).collect();
        let names = [
            "WALCAST_LEADER_PORT",
            "WALCAST_REPLICA1_PORT",
            "WALCAST_REPLICA2_PORT",
            "WALCAST_REPLICA3_PORT",
            "WALCAST_KAFKA_PORT",
            "WALCAST_KAFKA_CONTROLLER_PORT",
            "WALCAST_SOURCE_ADMIN_PORT",
            "WALCAST_SINK_ADMIN_PORT",
            "WALCAST_WRITE_PORT",
            "WALCAST_QUERY_PORT",
        ];
        let mut env: Vec<(String, String)> = names
            .iter()
            .zip(&ports)
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect();
        env.push(("WALCAST_STATE".into(), state.path().display().to_string()));
        env.push(("WALCAST_BIN".into(), WALCAST.into()));
        System {
            state,
            env,
            write_port: ports[8],
            query_port: ports[9],
            admin_ports: (ports[6], ports[7]),
            pg_ports: ports[..4].to_vec(),
        }
    }

    fn script(&self, name: &str, args: &[&str]) -> std::process::Output {
        let out = Command::new("bash")
            .arg(walcast_testkit::repo_root().join("scripts").join(name))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(walcast_testkit::repo_root())
            .output()
            .unwrap();
        if !out.status.success() {
            let logs = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "tail -n 30 {}/logs/*.log",
                    self.state.path().display()
                ))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "{name} failed:\n{}\n{}\nlogs:\n{logs}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    fn psql(&self, port: u16, sql: &str) -> String {
        let out = Command::new("/usr/lib/postgresql/15/bin/psql")
            .args([
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "catalog_read",
            ])
            .args(["-p", &port.to_string(), "-c", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn service_pids(&self) -> Vec<i32> {
        let run = self.state.path().join("run");
        let mut pids: Vec<i32> = std::fs::read_dir(&run)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(p) = std::fs::read_to_string(self.state.path().join("kafka/kafka.pid")) {
            pids.extend(p.trim().parse::<i32>().ok());
        }
        pids
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // Also after a failed assertion: never leave the system running.
        let _ = Command::new("bash")
            .arg(walcast_testkit::repo_root().join("scripts/stop-system.sh"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
    }
}

struct Response {
    status: u16,
    head: String,
    body: serde_json::Value,
}

fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    // Bytes, not text: a chunk boundary may fall inside a UTF-8 character.
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let rest = &raw[at + 4..];
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let bytes = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Response { status, head, body }
}

#[test]
fn dechunk_joins_a_character_split_across_chunks() {
    let body = "{\"name\": \"Café\"}".as_bytes();
    let at = body.len() - 3; // inside the two bytes of 'é'
    let mut wire = format!("{:x}\r\n", at).into_bytes();
    wire.extend_from_slice(&body[..at]);
    wire.extend_from_slice(format!("\r\n{:x}\r\n", body.len() - at).as_bytes());
    wire.extend_from_slice(&body[at..]);
    wire.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(dechunk(&wire), body);
    assert_eq!(
        dechunk(b"ff\r\nshort"),
        b"",
        "a chunk cut short is not read past its end"
    );
}

#[test]
fn start_system_drive_the_api_and_see_every_replica_follow_then_stop() {
    let _alone = crate::support::stack::ONE_STACK_AT_A_TIME.blocking_lock();
    let sys = System::new();
    let started = sys.script("start-system.sh", &[]);
    let printed = String::from_utf8_lossy(&started.stdout);
    assert!(printed.contains("walcast is up"), "{printed}");
    let w = sys.write_port;

    let created = http(
        w,
        "POST",
        "/products",
        &[],
        Some(
            r#"{"sku":"SYS-1","name":"Teapot","description":"Cast iron","price":"25.00","currency":"EUR"}"#,
        ),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["version"], 1);

    let renamed = http(
        w,
        "PUT",
        &format!("/products/{id}"),
        &[("If-Match", "1")],
        Some(r#"{"name":"Teapot XL","description":"Cast iron, 2 l"}"#),
    );
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(renamed.body["version"], 2);
    let conflict = http(
        w,
        "PUT",
        &format!("/products/{id}"),
        &[("If-Match", "1")],
        Some(r#"{"name":"Stale","description":null}"#),
    );
    assert_eq!(
        conflict.status, 409,
        "a stale If-Match must conflict: {}",
        conflict.body
    );

    let price = r#"{"price":"19.90","currency":"EUR"}"#;
    let key = [("Idempotency-Key", "system-test-price-1")];
    let first = http(
        w,
        "PUT",
        &format!("/products/{id}/price"),
        &key,
        Some(price),
    );
    let retry = http(
        w,
        "PUT",
        &format!("/products/{id}/price"),
        &key,
        Some(price),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(retry.status, 200);
    assert_eq!(
        first.body, retry.body,
        "an idempotent retry returns the first result"
    );
    assert_eq!(first.body["version"], 3);

    let doomed = http(
        w,
        "POST",
        "/products",
        &[],
        Some(
            r#"{"sku":"SYS-2","name":"Kettle","description":null,"price":"9.99","currency":"EUR"}"#,
        ),
    );
    assert_eq!(doomed.status, 201, "{}", doomed.body);
    let doomed_id = doomed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        http(w, "DELETE", &format!("/products/{doomed_id}"), &[], None).status,
        204
    );

    // 5 events (create, rename, price once, create, delete) reach all four read databases.
    let deadline = Instant::now() + Duration::from_secs(90);
    let want = "Teapot XL|19.90|3|teapot";
    for port in &sys.pg_ports {
        loop {
            let row = sys.psql(
                *port,
                &format!(
                    "SELECT name || '|' || price || '|' || version || '|' || \
                     (search_text LIKE '%sys-1%teapot xl%')::text FROM catalog_product_read \
                     WHERE product_id = '{id}'"
                ),
            );
            let gone = sys.psql(
                *port,
                &format!(
                    "SELECT count(*) FROM catalog_product_read WHERE product_id = '{doomed_id}'"
                ),
            );
            // Outbox events only: a snapshot record of a product created while the initial
            // snapshot ran would be one more.
            let events = sys.psql(
                *port,
                "SELECT count(*) FROM processed_events WHERE event_type <> 'ProductSnapshot'",
            );
            if row.starts_with("Teapot XL|19.90|3|") && gone == "0" && events == "5" {
                assert!(
                    row.ends_with("|true"),
                    "search_text must hold sku and name: {row}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "port {port}: wanted {want}, got row {row:?}, doomed rows {gone}, events {events}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let served = http(sys.query_port, "GET", &format!("/products/{id}"), &[], None);
    assert_eq!(served.status, 200, "{}", served.body);
    assert!(
        served
            .head
            .to_ascii_lowercase()
            .contains("x-walcast-replica: replica-"),
        "{}",
        served.head
    );

    // `walcast status` sees every part ready and every target up.
    let status = Command::new(WALCAST)
        .arg("status")
        .args(["--source", &format!("127.0.0.1:{}", sys.admin_ports.0)])
        .args(["--sink", &format!("127.0.0.1:{}", sys.admin_ports.1)])
        .args(["--app", &format!("127.0.0.1:{w}")])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    for target in ["catalog_read", "replica-1", "replica-2", "replica-3"] {
        assert!(
            report.contains(&format!("target {target:<14} up")),
            "{target}: {report}"
        );
    }
    assert!(report.contains("slot lag"), "{report}");

    // The user simulation prints commit -> commit delays read from commit timestamps: a
    // number for every target of every change, never negative (same clock, sink after write).
    let sim = sys.script("simulate-workflow.sh", &["1"]);
    let out = String::from_utf8_lossy(&sim.stdout);
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| {
            ["create ", "price change ", "deactivate "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    let mut last = (String::new(), Vec::new());
    for row in rows {
        let ms: Vec<f64> = row
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[1] == "ms")
            .map(|w| w[0].parse::<f64>().unwrap_or(f64::NAN))
            .collect();
        assert_eq!(ms.len(), 4, "one delay per target: {row}");
        assert!(ms.iter().all(|m| *m >= 0.0), "{row}");
        last = (row.to_owned(), ms);
    }
    println!("{out}");
    // The last change (deactivate) is the current row version everywhere: its printed delays
    // are the targets' commit timestamps minus the leader's, to the millisecond.
    let (row, printed) = last;
    let tail = row.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let commit = |port: u16, db: &str, table: &str, key: &str| -> f64 {
        let sql = format!(
            "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM {table} \
             WHERE {key}::text LIKE '%{tail}'"
        );
        let out = Command::new("/usr/lib/postgresql/15/bin/psql")
            .args(["-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", db])
            .args(["-p", &port.to_string(), "-c", &sql])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        text.parse().unwrap_or_else(|_| panic!("{sql}: {text:?}"))
    };
    let written = commit(sys.pg_ports[0], "catalog_write", "products", "id");
    for (port, shown) in sys.pg_ports.iter().zip(&printed) {
        let applied = commit(*port, "catalog_read", "catalog_product_read", "product_id");
        let truth = (applied - written) * 1000.0;
        assert!(
            (shown - truth).abs() <= 1.0,
            "port {port}: printed {shown} ms, commit timestamps say {truth:.1} ms: {row}"
        );
    }

    // Running it again starts nothing new and changes nothing.
    let pids_before = sys.service_pids();
    let again = sys.script("start-system.sh", &[]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));
    assert_eq!(sys.service_pids(), pids_before);

    let pids = sys.service_pids();
    assert_eq!(
        pids.len(),
        4,
        "source, sink, app and kafka run from pid files"
    );
    sys.script("stop-system.sh", &[]);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived stop-system"
        );
    }
    for port in &sys.pg_ports {
        assert!(
            TcpStream::connect(("127.0.0.1", *port)).is_err(),
            "postgres on {port} still up"
        );
    }
}
