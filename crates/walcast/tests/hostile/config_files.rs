//! A malformed connector file, key by key: every mistake is named with the key and the file.

use walcast_testkit::{ConnectorFile, SINK_FILE, SOURCE_FILE, repo_root};

use crate::support::pipeline::*;

/// Loads `text` written as `file_name` with a loader, returning the error text.
fn load_err(
    dir: &std::path::Path,
    file_name: &str,
    text: &str,
    load: fn(&std::path::Path) -> Result<(), String>,
) -> (std::path::PathBuf, Result<(), String>) {
    let path = dir.join(file_name);
    std::fs::write(&path, text).unwrap();
    let r = load(&path);
    (path, r)
}

fn load_source(p: &std::path::Path) -> Result<(), String> {
    walcast_source::SourceConfig::load(p)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn load_sink(p: &std::path::Path) -> Result<(), String> {
    walcast_sink::SinkConfig::load(p)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// For every key: removed (an error naming key and file when it is required, a clean load
/// otherwise) and given a value of the wrong type (always an error naming key and file).
fn walk_every_key(
    shipped: &str,
    required: &[&str],
    validated: &[&str],
    load: fn(&std::path::Path) -> Result<(), String>,
) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let file = ConnectorFile::shipped(shipped).unwrap();
    let (_, ok) = load_err(dir.path(), "shipped.toml", &file.text(), load);
    assert_eq!(ok, Ok(()), "the shipped file loads");
    let keys = file.keys();
    let mut failures = Vec::new();
    for key in &keys {
        let key_path = key.join(".");
        let segments: Vec<&str> = key.iter().map(String::as_str).collect();
        let name = format!("{}.toml", key_path.replace(['.', '-'], "_"));
        let named = |e: &str, path: &std::path::Path| {
            e.contains(&format!("`{key_path}`")) && e.contains(&path.display().to_string())
        };
        let mut without = file.clone();
        assert!(without.remove(&segments), "{key_path} is in the file");
        let (path, removed) = load_err(dir.path(), &name, &without.text(), load);
        match (required.contains(&key_path.as_str()), &removed) {
            (true, Err(e)) if named(e, &path) && e.contains("missing key") => {}
            (false, Ok(())) if !validated.contains(&key_path.as_str()) => {}
            // Optional for serde, but the rest of the file depends on it: validation names
            // the file and the entry.
            (false, Err(e))
                if validated.contains(&key_path.as_str())
                    && e.contains(&path.display().to_string()) => {}
            (req, r) => failures.push(format!("removing {key_path} (required: {req}): {r:?}")),
        }
        let mut mistyped = file.clone();
        mistyped.mistype(&segments);
        let (path, mistyped) = load_err(dir.path(), &name, &mistyped.text(), load);
        match &mistyped {
            Err(e) if named(e, &path) && e.contains("invalid type") => {}
            r => failures.push(format!("{key_path} = wrong type: {r:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} keys misbehave:\n{}",
        failures.len(),
        keys.len(),
        failures.join("\n")
    );
    keys.len()
}

#[test]
fn every_key_of_the_source_file_missing_or_mistyped_is_named_with_the_file() {
    let n = walk_every_key(
        SOURCE_FILE,
        &[
            "postgres.dsn",
            "postgres.slot",
            "postgres.publication",
            "kafka.brokers",
            "admin.listen",
            "retry.initial_backoff_ms",
            "retry.max_backoff_ms",
            "snapshot.tables.0.table",
            "snapshot.tables.0.key",
            "snapshot.tables.0.event_type",
            "snapshot.tables.0.version_column",
            "snapshot.tables.0.occurred_at_column",
        ],
        &[],
        load_source,
    );
    assert!(n >= 25, "walked {n} keys");
}

#[test]
fn every_key_of_the_sink_file_missing_or_mistyped_is_named_with_the_file() {
    let n = walk_every_key(
        SINK_FILE,
        &[
            "kafka.brokers",
            "kafka.topic",
            "batch.max_events",
            "batch.linger_ms",
            "retry.initial_backoff_ms",
            "retry.max_backoff_ms",
            "admin.listen",
            "targets.catalog_read.dsn",
            "targets.replica-1.dsn",
            "targets.replica-2.dsn",
            "targets.replica-3.dsn",
            "tables.0.name",
            "tables.0.key",
            "tables.0.columns",
            "events.0.type",
            "events.0.table",
            "events.0.action",
            "events.0.key",
            "events.0.upcast.0.from",
            "events.1.type",
            "events.1.table",
            "events.1.action",
            "events.1.key",
            "events.2.type",
            "events.2.table",
            "events.2.action",
            "events.2.key",
            "events.3.type",
            "events.3.table",
            "events.3.action",
            "events.3.key",
            "events.4.type",
            "events.4.table",
            "events.4.action",
            "events.4.key",
            "events.5.type",
            "events.5.table",
            "events.5.action",
            "events.5.key",
            "events.6.type",
            "events.6.table",
            "events.6.action",
            "events.6.key",
        ],
        &[
            // ProductCreated's upcast from 1 needs version 2.
            "events.0.version",
            // An upsert must map every non-nullable column, an update at least one.
            "events.0.columns",
            "events.1.columns",
            "events.2.columns",
            "events.3.columns",
            "events.4.columns",
            "events.6.columns",
        ],
        load_sink,
    );
    assert!(n >= 60, "walked {n} keys");
}

#[test]
fn unknown_keys_and_broken_toml_name_the_key_or_the_position_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (shipped, load, section) in [
        (
            SOURCE_FILE,
            load_source as fn(&std::path::Path) -> _,
            "[kafka]",
        ),
        (SINK_FILE, load_sink, "[kafka]"),
    ] {
        let text = std::fs::read_to_string(repo_root().join(shipped)).unwrap();
        let unknown = text.replacen(section, &format!("{section}\nbrokerz = \"typo\""), 1);
        let (path, r) = load_err(dir.path(), "unknown.toml", &unknown, load);
        let e = r.unwrap_err();
        assert!(e.contains("unknown key `kafka.brokerz`"), "{shipped}: {e}");
        assert!(e.contains(&path.display().to_string()), "{shipped}: {e}");
        let top = format!("bogus = 1\n{text}");
        let (_, r) = load_err(dir.path(), "unknown_top.toml", &top, load);
        assert!(r.unwrap_err().contains("unknown key `bogus`"), "{shipped}");

        // An unterminated string on a known line.
        let line = text
            .lines()
            .position(|l| l.starts_with("brokers = "))
            .unwrap();
        let broken = text.replacen(
            "brokers = \"127.0.0.1:19092\"",
            "brokers = \"127.0.0.1:19092",
            1,
        );
        let (path, r) = load_err(dir.path(), "broken.toml", &broken, load);
        let e = r.unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{shipped}: {e}");
        assert!(
            e.contains(&format!("line {}", line + 1)) && e.contains("column"),
            "{shipped}: the position of the error (line {}): {e}",
            line + 1
        );
    }
}

#[test]
fn the_binary_exits_non_zero_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read_to_string(repo_root().join(SOURCE_FILE))
        .unwrap()
        .replacen("partitions = 3", "partitions = \"three\"", 1);
    let sink = std::fs::read_to_string(repo_root().join(SINK_FILE))
        .unwrap()
        .replacen(
            "dsn = \"host=127.0.0.1 port=5433 user=postgres dbname=catalog_read\"",
            "",
            1,
        );
    let broken = "[kafka]\nbrokers = \"b:9092\n";
    for (cmd, name, text, needles) in [
        (
            "source",
            "bad-source.toml",
            source.as_str(),
            &["key `kafka.partitions`", "invalid type"][..],
        ),
        (
            "sink",
            "bad-sink.toml",
            sink.as_str(),
            &["missing key `targets.replica-1.dsn`"][..],
        ),
        ("source", "broken.toml", broken, &["line 2", "column"][..]),
        (
            "sink",
            "missing.toml",
            "",
            &["does not exist", "--config"][..],
        ),
    ] {
        let path = dir.path().join(name);
        if !text.is_empty() {
            std::fs::write(&path, text).unwrap();
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_walcast"))
            .args([cmd, "--config", path_str(&path)])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd} {name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{cmd} {name}: {stderr}"
        );
        for n in needles {
            assert!(stderr.contains(n), "{cmd} {name}: no {n:?} in {stderr}");
        }
    }
}
