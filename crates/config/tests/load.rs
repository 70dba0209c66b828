//! Loading real connector-shaped files: unknown and missing keys name the key and the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use figment::providers::Env;
use serde::Deserialize;
use walcast_config::{ConfigError, load_with_env};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    postgres: Postgres,
    kafka: Kafka,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Postgres {
    // A plain string here; the DSN type and its redaction are tested in walcast-postgres.
    dsn: String,
    slot: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kafka {
    brokers: String,
    #[serde(default = "three")]
    partitions: i32,
}

fn three() -> i32 {
    3
}

fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

const GOOD: &str = r#"
[postgres]
dsn = "host=db user=app password=s3cret dbname=catalog_write"
slot = "walcast"

[kafka]
brokers = "127.0.0.1:19092"
"#;

fn no_env() -> Env {
    Env::prefixed("WALCAST_TEST_UNUSED_PREFIX_")
}

#[test]
fn a_good_file_loads_with_defaults() {
    let (_d, path) = write(GOOD);
    let c: Config = load_with_env(&path, no_env()).unwrap();
    assert_eq!(c.kafka.partitions, 3);
    assert_eq!(c.postgres.slot, "walcast");
    assert!(c.postgres.dsn.starts_with("host=db"));
}

#[test]
fn an_unknown_key_names_the_key_and_the_file() {
    let (_d, path) = write(&GOOD.replace("slot = ", "slott = \"x\"\nslot = "));
    let err = load_with_env::<Config>(&path, no_env())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown key `postgres.slott`"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("expected one of: dsn, slot"), "{err}");
}

#[test]
fn a_missing_key_names_the_key_and_the_file() {
    let (_d, path) = write(&GOOD.replace("brokers = \"127.0.0.1:19092\"", ""));
    let err = load_with_env::<Config>(&path, no_env())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing key `kafka.brokers`"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn a_wrong_type_names_the_key() {
    let (_d, path) = write(&format!("{GOOD}partitions = \"many\"\n"));
    let err = load_with_env::<Config>(&path, no_env())
        .unwrap_err()
        .to_string();
    assert!(err.contains("kafka.partitions"), "{err}");
}

#[test]
fn environment_overrides_the_file_and_unknown_variables_are_errors() {
    // Jail serialises tests that touch the process environment and restores it afterwards.
    figment::Jail::expect_with(|jail| {
        jail.create_file("source.toml", GOOD)?;
        let path = jail.directory().join("source.toml");
        jail.set_env("WALCAST_KAFKA__BROKERS", "broker-1:9092");
        jail.set_env("WALCAST_KAFKA__PARTITIONS", "6");
        // Not a connector key: settings of the scripts and CLI share the prefix.
        jail.set_env("WALCAST_LOG_JSON", "1");
        let c: Config = walcast_config::load(&path).unwrap();
        assert_eq!(c.kafka.brokers, "broker-1:9092");
        assert_eq!(c.kafka.partitions, 6);

        jail.set_env("WALCAST_KAFKA__BROKER", "typo:9092");
        let err = walcast_config::load::<Config>(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `kafka.broker`"), "{err}");
        assert!(
            err.contains("variable WALCAST_KAFKA__BROKER"),
            "names the variable: {err}"
        );
        Ok(())
    });
}

#[test]
fn a_missing_file_says_how_to_fix_it() {
    let err =
        load_with_env::<Config>(std::path::Path::new("/nonexistent/x.toml"), no_env()).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { .. }));
    assert!(err.to_string().contains("--config"));
}

#[test]
fn a_wrong_type_never_echoes_a_secret_value() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Props {
        properties: std::collections::BTreeMap<String, String>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct WithProps {
        kafka: Props,
        target: Option<Postgres>,
    }
    // A numeric SASL password (TOML integer where a string belongs).
    let (_d, path) = write("[kafka.properties]\n\"sasl.password\" = 918273645\n");
    let e = load_with_env::<WithProps>(&path, no_env())
        .unwrap_err()
        .to_string();
    assert!(e.contains("sasl.password") && e.contains("a number"), "{e}");
    assert!(!e.contains("918273645"), "{e}");
    // A DSN string where a table belongs.
    let (_d, path) = write(
        "target = \"host=db password=hunter2 dbname=x\"\n[kafka.properties]\n\"linger.ms\" = \"5\"\n",
    );
    let e = load_with_env::<WithProps>(&path, no_env())
        .unwrap_err()
        .to_string();
    assert!(e.contains("target") && e.contains("a string"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}
