//! A DSN in a connector file: parsed once when the file loads, never printed with its
//! password, and a bad one is a config error naming the key and the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use figment::providers::Env;
use serde::Deserialize;
use walcast_config::load_with_env;
use walcast_postgres::{Dsn, Host, SslMode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    postgres: Postgres,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Postgres {
    dsn: Dsn,
    slot: String,
}

fn load(
    dsn: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Result<Config, String>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.toml");
    let text = format!("[postgres]\ndsn = {dsn:?}\nslot = \"walcast\"\n");
    std::fs::write(&path, text).unwrap();
    let r = load_with_env::<Config>(&path, Env::prefixed("WALCAST_TEST_UNUSED_PREFIX_"))
        .map_err(|e| e.to_string());
    (dir, path, r)
}

#[test]
fn a_good_dsn_is_parsed_when_the_file_loads_and_never_printed_with_its_password() {
    for dsn in [
        "host=db user=app password=s3cret dbname=catalog_write sslmode=require",
        "postgres://app:s3cret@db/catalog_write?sslmode=require",
    ] {
        let (_dir, _, c) = load(dsn);
        let c = c.unwrap();
        assert_eq!(c.postgres.slot, "walcast");
        assert_eq!(c.postgres.dsn.host(), &Host::Tcp("db".into()));
        assert_eq!(c.postgres.dsn.dbname(), "catalog_write");
        assert_eq!(c.postgres.dsn.ssl_mode(), SslMode::Require);
        assert_eq!(c.postgres.dsn.password(), Some("s3cret"));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "debug output leaks the password"
        );
        assert!(!c.postgres.dsn.to_string().contains("s3cret"));
    }
}

#[test]
fn a_bad_dsn_is_a_config_error_naming_the_key_and_the_file_but_not_the_password() {
    for (dsn, needle) in [
        (
            "host=db password=hunter2 bogus_key=1",
            "unknown connection option 'bogus_key'",
        ),
        (
            "host=db password=hunter2 sslmode=always",
            "sslmode 'always'",
        ),
        ("host=db password=hunter2 x", "missing '='"),
        ("postgres://u:hunter2%zz@db/x", "invalid percent-encoding"),
    ] {
        let (_dir, path, r) = load(dsn);
        let e = r.err().unwrap_or_default();
        assert!(e.contains("key `postgres.dsn`"), "{dsn}: {e}");
        assert!(e.contains(&path.display().to_string()), "{dsn}: {e}");
        assert!(e.contains("invalid DSN"), "{dsn}: {e}");
        assert!(e.contains(needle), "{dsn}: {e}");
        assert!(!e.contains("hunter2"), "{dsn}: {e}");
    }
}
