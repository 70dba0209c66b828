//! `walcast dlq discard` against a real Postgres target: it releases a key held behind a dead
//! letter, applies what waited, and explains when nothing matches.

use std::path::{Path, PathBuf};
use std::process::Command;

use walcast_testkit::{ConnectorFile, Postgres, SINK_FILE, TomlValue, repo_root, unique_name};

use crate::support::WALCAST;

const PRODUCT: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
const DEAD: &str = "0b6c5f1e-8f3a-4c1e-9d2a-1b2c3d4e5f60";
const WAITING: &str = "1c7d6a2f-9a4b-4d2f-8e3b-2c3d4e5f6071";

/// The shipped sink file with `replica-2` pointing at `dsn` (discard needs no broker).
fn config(dir: &Path, dsn: &str) -> PathBuf {
    let read_sql = repo_root().join("sql/read.sql").canonicalize().unwrap();
    let mut file = ConnectorFile::shipped(SINK_FILE).unwrap();
    file.set(&["targets", "replica-2", "dsn"], dsn).set(
        &["schema", "files"],
        TomlValue::from_iter([read_sql.display().to_string()]),
    );
    file.write(&dir.join("sink.toml")).unwrap()
}

fn discard(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(WALCAST)
        .args(["dlq", "discard", "--config"])
        .arg(config)
        .args(["--target", "replica-2"])
        .args(args)
        .output()
        .expect("run walcast");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn discard_releases_the_held_key_and_applies_what_waited() {
    let pg = Postgres::start().unwrap();
    let db = unique_name("cr");
    pg.create_database(&db).unwrap();
    let schema = std::fs::read_to_string(repo_root().join("sql/read.sql")).unwrap();
    pg.psql(&db, &schema).unwrap();
    // What a sink leaves when replica-2 refused the product's v2: the row at v1, the dead
    // letter holding the key, and v3 (a price change) waiting behind it.
    pg.psql(
        &db,
        &format!(
            "INSERT INTO catalog_product_read (product_id, sku, name, price, currency, is_active, \
             search_text, version, occurred_at) VALUES ('{PRODUCT}', 'SKU', 'Lamp', 10, 'EUR', \
             true, 'sku lamp', 1, '2026-05-01T12:00:00Z'); \
             INSERT INTO walcast_held (table_name, key, event_id, event_type, dead_letter, version, \
             occurred_us, error) VALUES ('catalog_product_read', '{PRODUCT}', '{DEAD}', \
             'ProductUpdated', true, 2, 1777636801000000, 'violates check constraint'); \
             INSERT INTO walcast_held (table_name, key, event_id, event_type, dead_letter, version, \
             occurred_us, change) VALUES ('catalog_product_read', '{PRODUCT}', '{WAITING}', \
             'ProductPriceChanged', false, 3, 1777636802000000, \
             '{{\"update\": {{\"price\": \"12.00\", \"currency\": \"EUR\"}}}}')"
        ),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &pg.dsn(&db));

    let (ok, err) = discard(&cfg, &["--event-id", "not-a-uuid"]);
    assert!(!ok && err.contains("is not a UUID"), "{err}");
    let (ok, err) = discard(&cfg, &[]);
    assert!(!ok && err.contains("--event-id"), "{err}");

    let (ok, err) = discard(&cfg, &["--event-id", DEAD]);
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("released catalog_product_read {PRODUCT}"))
            && err.contains("1 held events applied"),
        "{err}"
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT concat_ws('|', name, price, version) FROM catalog_product_read"
        )
        .unwrap(),
        "Lamp|12.00|3"
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM walcast_held").unwrap(),
        "0"
    );
    assert_eq!(
        pg.psql(
            &db,
            &format!("SELECT count(*) FROM processed_events WHERE event_id = '{WAITING}'")
        )
        .unwrap(),
        "1",
        "the applied event is processed now"
    );

    let (ok, err) = discard(&cfg, &["--aggregate", PRODUCT]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!("no dead letter of key {PRODUCT}")) && err.contains("no key at all"),
        "{err}"
    );
}
