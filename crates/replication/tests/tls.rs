//! TLS with a self-signed certificate made by the `openssl` CLI.

use std::path::Path;
use std::process::Command;

use walcast_postgres::{Dsn, connect_sql};
use walcast_replication::{Error, ReplicationConnection};
use walcast_testkit::Postgres;

use crate::support::ok;

/// A self-signed certificate for 127.0.0.1/localhost, readable by the server.
fn make_cert(dir: &Path, name: &str) {
    let status = Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-days", "2", "-nodes", "-newkey", "rsa:2048",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")))
        .output();
    let out = ok(status);
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Postgres runs as `postgres` when the tests run as root.
fn give_to_postgres(dir: &Path) {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if String::from_utf8_lossy(&uid).trim() == "0" {
        let out = ok(Command::new("chown")
            .arg("-R")
            .arg("postgres")
            .arg(dir)
            .output());
        assert!(out.status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_verify_full_and_channel_binding() {
    let dir = ok(tempfile::tempdir());
    make_cert(dir.path(), "server");
    make_cert(dir.path(), "other");
    give_to_postgres(dir.path());
    let crt = dir.path().join("server.crt");
    let pg = ok(Postgres::builder()
        .setting("ssl", "on")
        .setting("ssl_cert_file", &format!("'{}'", crt.display()))
        .setting(
            "ssl_key_file",
            &format!("'{}'", dir.path().join("server.key").display()),
        )
        .hba_line("hostssl all tls_u 127.0.0.1/32 scram-sha-256")
        .hba_line("hostssl replication tls_u 127.0.0.1/32 scram-sha-256")
        .hba_line("host all tls_u 127.0.0.1/32 reject")
        .hba_line("host replication tls_u 127.0.0.1/32 reject")
        .start());
    ok(pg.psql(
        "postgres",
        "CREATE ROLE tls_u LOGIN REPLICATION PASSWORD 'pw'",
    ));
    let base = format!(
        "host=127.0.0.1 port={} user=tls_u password=pw dbname=postgres",
        pg.port()
    );

    for mode in ["require", "prefer"] {
        // SCRAM-SHA-256-PLUS: bound to the TLS channel.
        let config = ok(Dsn::parse(&format!("{base} sslmode={mode}")));
        let mut conn = ok(ReplicationConnection::connect(&config).await);
        ok(conn.identify_system().await);
        conn.close().await;
        let client = ok(connect_sql(&config).await);
        let ssl: bool = ok(client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await)
        .get(0);
        assert!(ssl, "sslmode={mode} connected without TLS");
    }

    let verified = format!("{base} sslmode=verify-full sslrootcert={}", crt.display());
    let mut conn = ok(ReplicationConnection::connect(&ok(Dsn::parse(&verified))).await);
    ok(conn.identify_system().await);
    conn.close().await;

    let wrong_ca = format!(
        "{base} sslmode=verify-full sslrootcert={}",
        dir.path().join("other.crt").display()
    );
    let e = match ReplicationConnection::connect(&ok(Dsn::parse(&wrong_ca))).await {
        Ok(_) => panic!("verified a certificate against the wrong CA"),
        Err(e) => e,
    };
    assert!(matches!(e, Error::Tls(_)), "{e}");
    assert!(e.to_string().contains("did not verify"), "{e}");
    assert!(!e.is_retryable());

    let e =
        match ReplicationConnection::connect(&ok(Dsn::parse(&format!("{base} sslmode=disable"))))
            .await
        {
            Ok(_) => panic!("plain-text login allowed"),
            Err(e) => e,
        };
    assert_eq!(e.sqlstate(), Some("28000"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_against_a_server_without_tls() {
    let pg = crate::support::shared_pg();
    let config = ok(Dsn::parse(&format!(
        "{} sslmode=require",
        pg.dsn("postgres")
    )));
    let e = match ReplicationConnection::connect(&config).await {
        Ok(_) => panic!("connected in plain text with sslmode=require"),
        Err(e) => e,
    };
    assert!(
        e.to_string().contains(
            "does not accept TLS connections but sslmode=require; set ssl = on in postgresql.conf"
        ),
        "{e}"
    );
    // prefer falls back to plain text.
    let config = ok(Dsn::parse(&format!(
        "{} sslmode=prefer",
        pg.dsn("postgres")
    )));
    let mut conn = ok(ReplicationConnection::connect(&config).await);
    ok(conn.identify_system().await);
    conn.close().await;
}
