//! `walcast schema apply` against a real Postgres: idempotent, JSON logs, no password in logs.

use std::process::Command;

use walcast_testkit::{Postgres, unique_name};

fn walcast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_walcast"))
        .args(args)
        .output()
        .expect("run walcast")
}

#[test]
fn schemas_apply_twice_without_change_and_logs_never_show_the_password() {
    let pg = Postgres::start().unwrap();
    let (write_db, read_db) = (unique_name("cw"), unique_name("cr"));
    pg.create_database(&write_db).unwrap();
    pg.create_database(&read_db).unwrap();
    // Trust auth ignores the password, so the DSN still works while carrying a secret.
    let dsn = |db: &str| format!("{} password=s3cret-Pa55", pg.dsn(db));

    for round in 0..2 {
        for (schema, db) in [("write", &write_db), ("read", &read_db)] {
            let out = walcast(&["--log-json", "schema", "apply", schema, "--dsn", &dsn(db)]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "round {round} {schema}: {stderr}");
            assert!(!stderr.contains("s3cret"), "password leaked: {stderr}");
            let line = stderr
                .lines()
                .find(|l| l.contains("schema applied"))
                .expect("log line");
            let json: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
            assert!(
                json["dsn"].as_str().unwrap().contains("password=********"),
                "{json}"
            );
        }
        if round == 0 {
            // Data written between two applies must survive the second apply.
            pg.psql(
                &write_db,
                "INSERT INTO products (id, sku, name, price, currency) \
                 VALUES (gen_random_uuid(), 'SKU-1', 'One', 1.50, 'EUR')",
            )
            .unwrap();
        }
    }

    let columns = pg
        .psql(
            &write_db,
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_name = 'outbox_messages'",
        )
        .unwrap();
    assert_eq!(
        columns,
        "id,aggregate_id,event_type,occurred_at,correlation_id,payload,status,attempts,created_at,published_at"
    );
    assert_eq!(
        pg.psql(&write_db, "SELECT count(*) FROM products").unwrap(),
        "1"
    );
    let read_tables = pg
        .psql(
            &read_db,
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables \
             WHERE schemaname = 'public'",
        )
        .unwrap();
    for t in [
        "catalog_product_read",
        "processed_events",
        "walcast_offsets",
        "walcast_applied_lsn",
    ] {
        assert!(
            read_tables.split(',').any(|x| x == t),
            "{t} missing from {read_tables}"
        );
    }
}

#[test]
fn a_wrong_port_fails_with_the_cause_and_without_the_password() {
    let out = walcast(&[
        "schema",
        "apply",
        "write",
        "--dsn",
        "host=127.0.0.1 port=1 user=postgres password=s3cret dbname=x connect_timeout=2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot connect to host=127.0.0.1 port=1"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
