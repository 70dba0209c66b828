//! Hostile and bad input against the real `walcast` binary.
//!
//! Every test runs `walcast source` and/or `walcast sink` as child processes against a real
//! PostgreSQL 15 cluster (one for this binary; each test has its own databases, slot,
//! publication and topic) and the kit's shared Kafka broker, captures their stderr and
//! asserts what an operator sees: the error text, the dead letters and their headers, and
//! that nothing committed is lost. Config cases that are pure parsing call the loaders.
//!
//! Children are killed when their handle drops (also when an assertion fails), so no process
//! outlives a test.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::pipeline::*;
use walcast_testkit::{ConnectorFile, SINK_FILE, SOURCE_FILE, repo_root, unique_name, wait_until};

use crate::support::free_port;

// ---------------------------------------------------------------------------------------
// 1 + 2: hostile payloads and poison events through the whole path.
// ---------------------------------------------------------------------------------------

/// Emoji (with a ZWJ sequence and a flag), right-to-left text with explicit direction
/// marks, combining characters, and every NUL-free C0 control character plus DEL.
fn unicode_text() -> String {
    let controls: String = (1u8..0x20)
        .chain([0x7f])
        .map(char::from)
        .collect::<String>();
    format!(
        "Tea 🍵😀👨\u{200d}👩\u{200d}👧\u{200d}👦🇪🇺 שלום עולם مرحبا \u{202e}desrever\u{202c} \
         Z\u{351}\u{36b}\u{343}a\u{300}\u{301}l\u{327}g\u{30c}o e\u{301} \u{feff}|{controls}|"
    )
}

/// Strings that look like SQL, placeholders, escapes and the sink's own template syntax.
const SQL_SKU: &str = "'; DROP TABLE products; --";
const SQL_NAME: &str = "$1 $2::text $$ $q$ %s {name} {sku} \\ \\\\ \\' \\x00 \\n ' \" `";
const SQL_DESCRIPTION: &str =
    "Robert'); DROP TABLE catalog_product_read; -- \\'; SELECT pg_sleep(10); /* */";

fn created(product: &str, sku: &str, name: &str, description: &str, price: &str) -> Value {
    json!({"productId": product, "sku": sku, "name": name, "description": description,
           "price": price, "currency": "EUR", "isActive": true, "version": 1})
}

#[test]
fn hostile_payloads_cross_source_kafka_and_sink_byte_exact_and_poison_is_dead_lettered() {
    let write = Db::new("hostile_write");
    write.psql(WRITE_SQL);
    let reads = [Db::new("hostile_read_a"), Db::new("hostile_read_b")];
    let names = Names::for_db(&write);
    let dir = tempfile::tempdir().unwrap();
    let source_cfg = source_config(dir.path(), &write, &names, &[]);
    let mut source = streaming_source(&source_cfg);
    let admin = free_port();
    let targets = [
        ("catalog_read", reads[0].dsn()),
        ("replica-1", reads[1].dsn()),
    ];
    let sink_cfg = sink_config(dir.path(), &names.topic, &targets, admin);
    let mut sink = spawn("sink", &["sink", "--config", path_str(&sink_cfg)]);

    let (p_uni, p_huge, p_sql, p_big, p_deep, p_nosku, p_baduuid) =
        (pid(1), pid(2), pid(3), pid(4), pid(5), pid(6), pid(7));
    let uni = unicode_text();
    // 900 KiB of text with multi-byte characters, still below max_message_bytes (1,000,000).
    let huge: String = "é€𝄞 hostile ".repeat(900 * 1024 / 18);
    assert_eq!(huge.len(), 900 * 1024);
    // Above max_message_bytes: the source's DLQ, without the payload.
    let too_big = "x".repeat(1_200_000);
    // 10,000 levels of nesting: far beyond serde_json's recursion limit of 128.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut deep_payload = created(&p_deep, "DEEP", "deep", "deep", "1.00")
        .to_string()
        .trim_end_matches('}')
        .to_owned();
    deep_payload.push_str(&format!(",\"extra\":{deep}}}"));
    let renamed = format!("{uni} v2 ↩");

    // (event id, aggregate, type, payload); one partition, so poison and later events share it.
    let events: Vec<(String, String, &str, String)> = vec![
        (
            eid(1),
            p_uni.clone(),
            "ProductCreated",
            created(&p_uni, "UNI-1", &uni, &uni, "12.50").to_string(),
        ),
        (
            eid(2),
            p_huge.clone(),
            "ProductCreated",
            created(&p_huge, "HUGE-1", "huge", &huge, "1.00").to_string(),
        ),
        (
            eid(3),
            p_sql.clone(),
            "ProductCreated",
            created(&p_sql, SQL_SKU, SQL_NAME, SQL_DESCRIPTION, "3.00").to_string(),
        ),
        (
            eid(4),
            p_big.clone(),
            "ProductCreated",
            created(&p_big, "BIG-1", "big", &too_big, "4.00").to_string(),
        ),
        (eid(5), p_deep.clone(), "ProductCreated", deep_payload),
        // Case 2: unknown type, missing field, wrong field types.
        (
            eid(6),
            p_uni.clone(),
            "ProductTeleported",
            json!({"productId": p_uni, "version": 2}).to_string(),
        ),
        (
            eid(7),
            p_uni.clone(),
            "ProductCreated",
            json!({"productId": p_nosku, "name": "no sku", "price": "1.00", "currency": "EUR",
                   "isActive": true, "version": 1})
            .to_string(),
        ),
        (
            eid(8),
            p_uni.clone(),
            "ProductPriceChanged",
            json!({"productId": p_uni, "price": {"amount": "9.99"}, "currency": "EUR", "version": 2})
                .to_string(),
        ),
        (
            eid(9),
            p_uni.clone(),
            "ProductUpdated",
            json!({"productId": p_uni, "name": "x", "description": null, "version": "2"})
                .to_string(),
        ),
        (
            eid(10),
            p_uni.clone(),
            "ProductCreated",
            created(&p_baduuid, "BAD-1", "bad", "bad", "1.00")
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("productId".into(), json!("not-a-uuid"));
                    Value::Object(o).to_string()
                })
                .unwrap(),
        ),
        // Later events on the same partition: applied.
        (
            eid(11),
            p_uni.clone(),
            "ProductUpdated",
            json!({"productId": p_uni, "name": renamed, "description": uni, "version": 2})
                .to_string(),
        ),
        (
            eid(12),
            p_sql.clone(),
            "ProductPriceChanged",
            json!({"productId": p_sql, "price": "0.01", "currency": "EUR", "version": 2})
                .to_string(),
        ),
    ];
    // One transaction per event, written the way the catalog app writes: bound parameters.
    for (id, aggregate, event_type, payload) in &events {
        write.insert_outbox(id, aggregate, event_type, payload);
    }

    // Kafka: every event but the oversize one, each value byte-exact as Postgres stored it.
    let main = read_topic(&names.topic, Duration::from_secs(120), |rs| rs.len() >= 11);
    assert_eq!(main.len(), 11, "{}", summary(&main));
    for r in &main {
        let stored = write.payload_text(r.header("id"));
        assert!(
            r.value.as_deref() == Some(stored.as_bytes()),
            "event {}: the Kafka value differs from the outbox row's payload",
            r.header("id")
        );
    }
    let by_id = |id: &str| main.iter().find(|r| r.header("id") == id).unwrap();
    let v: Value = serde_json::from_slice(by_id(&eid(1)).value.as_deref().unwrap()).unwrap();
    assert_eq!(v["name"], uni.as_str());
    assert_eq!(v["description"], uni.as_str());
    let v: Value = serde_json::from_slice(by_id(&eid(2)).value.as_deref().unwrap()).unwrap();
    assert_eq!(v["description"], huge.as_str());
    let v: Value = serde_json::from_slice(by_id(&eid(3)).value.as_deref().unwrap()).unwrap();
    assert_eq!(
        (
            v["sku"].as_str(),
            v["name"].as_str(),
            v["description"].as_str()
        ),
        (Some(SQL_SKU), Some(SQL_NAME), Some(SQL_DESCRIPTION))
    );
    let deep_value = by_id(&eid(5)).value.clone().unwrap();
    assert!(
        deep_value
            .windows(10_000)
            .any(|w| w.iter().all(|b| *b == b'[')),
        "the nesting arrives unchanged"
    );
    assert!(main.iter().all(|r| r.header("id") != eid(4)));

    // The source's DLQ: the oversize event, headers naming the cause; the row stays.
    let dlq = format!("{}.dlq", names.topic);
    let dead = read_topic(&dlq, Duration::from_secs(60), |rs| {
        rs.iter().any(|r| r.header("id") == eid(4))
    });
    let big = dead.iter().find(|r| r.header("id") == eid(4)).unwrap();
    assert_eq!(
        big.header("walcast.error.kind"),
        "payload_too_large",
        "{big:?}"
    );
    assert!(
        big.header("walcast.error").contains("max_message_bytes"),
        "{big:?}"
    );
    assert_eq!(big.header("walcast.original.topic"), names.topic);
    assert!(!big.header("walcast.lsn").is_empty());
    assert!(big.value.is_none(), "the oversize payload is left out");
    assert_eq!(
        write.psql(&format!(
            "SELECT length(payload::text) > 1200000 FROM outbox_messages WHERE id = '{}'",
            eid(4)
        )),
        "t",
        "the payload stays in the outbox row"
    );

    // The sink: both targets past all 11 records, rows byte-exact, poison dead-lettered.
    for (name, db) in targets.iter().map(|t| t.0).zip(&reads) {
        db.wait_offsets(11, Duration::from_secs(120), &sink);
        let text = |sql: &str, p: &str| db.query_text(sql, p);
        assert_eq!(
            text(
                "SELECT name FROM catalog_product_read WHERE product_id = $1::text::uuid",
                &p_uni
            ),
            Some(renamed.clone()),
            "{name}"
        );
        assert_eq!(
            text(
                "SELECT description FROM catalog_product_read WHERE product_id = $1::text::uuid",
                &p_uni
            ),
            Some(uni.clone()),
            "{name}"
        );
        assert_eq!(
            text(
                "SELECT description FROM catalog_product_read WHERE product_id = $1::text::uuid",
                &p_huge
            ),
            Some(huge.clone()),
            "{name}: the 900 KB description"
        );
        assert_eq!(
            text(
                "SELECT concat_ws('|', sku, name, description, price) FROM catalog_product_read \
                 WHERE product_id = $1::text::uuid",
                &p_sql
            ),
            Some(format!("{SQL_SKU}|{SQL_NAME}|{SQL_DESCRIPTION}|0.01")),
            "{name}"
        );
        assert_eq!(
            text(
                "SELECT (search_text = lower(concat_ws(' ', sku, name, description)))::text \
                 FROM catalog_product_read WHERE product_id = $1::text::uuid",
                &p_sql
            ),
            Some("true".into()),
            "{name}: search_text is computed from the values, not from templates in them"
        );
        assert_eq!(
            db.psql("SELECT count(*) FROM catalog_product_read"),
            "3",
            "{name}: only the three good products"
        );
        // products still exists on the write side, catalog_product_read on the read side.
        assert_eq!(
            db.psql("SELECT to_regclass('catalog_product_read') IS NOT NULL"),
            "t"
        );
    }
    assert_eq!(
        write.psql("SELECT to_regclass('products') IS NOT NULL"),
        "t"
    );

    let expected: BTreeMap<String, &str> = [
        (5, "undecodable"),
        (6, "unknown_type"),
        (7, "missing_field"),
        (8, "wrong_type"),
        (9, "wrong_type"),
        (10, "wrong_type"),
    ]
    .into_iter()
    .map(|(n, k)| (eid(n), k))
    .collect();
    let dead = read_topic(&dlq, Duration::from_secs(60), |rs| {
        rs.iter()
            .filter(|r| !r.header("walcast.target").is_empty())
            .count()
            >= 12
    });
    let sink_dead: Vec<&Rec> = dead
        .iter()
        .filter(|r| !r.header("walcast.target").is_empty())
        .collect();
    assert_eq!(sink_dead.len(), 12, "{}", summary(&dead));
    for d in &sink_dead {
        let id = d.header("id");
        let kind = expected
            .get(id)
            .unwrap_or_else(|| panic!("unexpected dead letter {d:?}"));
        assert_eq!(d.header("walcast.error.kind"), *kind, "{id}: {d:?}");
        let error = d.header("walcast.error");
        assert!(error.starts_with(&format!("{kind}: ")), "{id}: {error}");
        assert_eq!(d.header("walcast.original.topic"), names.topic);
        assert_eq!(d.header("walcast.original.partition"), "0");
        let offset: i64 = d.header("walcast.original.offset").parse().unwrap();
        let original = main.iter().find(|r| r.offset == offset).unwrap();
        assert_eq!(
            original.header("id"),
            id,
            "the original offset points at the event"
        );
        assert_eq!(d.value, original.value, "the value is kept unchanged");
        assert!(
            targets.iter().any(|t| t.0 == d.header("walcast.target")),
            "{d:?}"
        );
    }
    let error_of = |n: u32| {
        sink_dead
            .iter()
            .find(|d| d.header("id") == eid(n))
            .unwrap()
            .header("walcast.error")
            .to_owned()
    };
    assert!(error_of(5).contains("recursion limit"), "{}", error_of(5));
    assert!(error_of(6).contains("ProductTeleported"), "{}", error_of(6));
    assert!(error_of(7).contains("sku"), "{}", error_of(7));
    assert!(error_of(8).contains("price"), "{}", error_of(8));
    assert!(error_of(9).contains("version"), "{}", error_of(9));
    assert!(error_of(10).contains("productId"), "{}", error_of(10));

    // Neither process crashed on any of it.
    assert!(source.is_running(), "source died:\n{}", source.log());
    assert!(sink.is_running(), "sink died:\n{}", sink.log());
    assert!(sink.stop(), "{}", sink.log());
    assert!(source.stop(), "{}", source.log());
    assert!(!sink.log().contains("panicked"), "{}", sink.log());
    assert!(!source.log().contains("panicked"), "{}", source.log());
}

// ---------------------------------------------------------------------------------------
// Hostile rows: fields no limit was written for never stop the pipeline.
// ---------------------------------------------------------------------------------------

/// Key, value and header bytes of a record as read back.
fn record_bytes(r: &Rec) -> usize {
    r.key.as_ref().map_or(0, String::len)
        + r.value.as_ref().map_or(0, Vec::len)
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

#[test]
fn hostile_rows_never_stop_the_pipeline_and_every_dead_letter_fits() {
    let write = Db::new("rows_write");
    write.psql(WRITE_SQL);
    let read = Db::new("rows_read");
    let names = Names::for_db(&write);
    let dir = tempfile::tempdir().unwrap();
    let source_cfg = source_config(dir.path(), &write, &names, &[]);
    let mut source = streaming_source(&source_cfg);
    let admin = free_port();
    let targets = [("catalog_read", read.dsn())];
    let sink_cfg = sink_config(dir.path(), &names.topic, &targets, admin);
    let mut sink = spawn("sink", &["sink", "--config", path_str(&sink_cfg)]);
    let ready = wait_until("ready", Duration::from_secs(90), || {
        http_get(admin, "/ready").0 == 200
    })
    .is_ok();
    assert!(ready, "sink not ready:\n{}", sink.log());

    // 170,000 control characters: a small record, but an error text that quotes it with
    // escapes would be about 1 MB.
    let controls = "\u{1}".repeat(170_000);
    // 1.1 MB of two-byte characters in an unbounded TEXT column: the event and a dead letter
    // that kept it whole would both be over the producer's limit.
    let huge_type = "é".repeat(550_000);
    let (p1, p2, p3) = (pid(1), pid(2), pid(3));
    write.insert_outbox(
        &eid(1),
        &p1,
        &controls,
        &created(&p1, "CTRL-1", "ctrl", "ctrl", "1.00").to_string(),
    );
    write.insert_outbox(
        &eid(2),
        &p2,
        &huge_type,
        &created(&p2, "HUGE-TYPE-1", "huge", "huge", "2.00").to_string(),
    );
    // A valid event after both: it must reach the target.
    write.insert_outbox(
        &eid(3),
        &p3,
        "ProductCreated",
        &created(&p3, "OK-1", "fine", "fine", "3.00").to_string(),
    );
    let arrived = wait_until("arrived", Duration::from_secs(120), || {
        read.query_text(
            "SELECT name FROM catalog_product_read WHERE product_id = $1::text::uuid",
            &p3,
        )
        .is_some()
    })
    .is_ok();
    assert!(
        arrived,
        "the valid event after the hostile rows never reached the target\nsource log:\n{}\nsink log:\n{}",
        source.log(),
        sink.log()
    );

    let dlq = format!("{}.dlq", names.topic);
    let dead = read_topic(&dlq, Duration::from_secs(60), |rs| {
        rs.iter().any(|r| r.header("id") == eid(2))
            && rs
                .iter()
                .any(|r| r.header("id") == eid(1) && !r.header("walcast.target").is_empty())
    });
    for r in &dead {
        assert!(
            record_bytes(r) < 1_000_000,
            "a dead letter must fit the producer's limit: {}",
            summary(std::slice::from_ref(r))
        );
    }
    // The source's dead letter of the huge type: cut to fit, saying so, id whole.
    let huge = dead.iter().find(|r| r.header("id") == eid(2)).unwrap();
    assert!(
        huge.header("walcast.truncated").contains("event_type"),
        "{}",
        summary(std::slice::from_ref(huge))
    );
    let kept = huge.header("event_type");
    assert!(
        !kept.is_empty() && kept.chars().all(|c| c == 'é'),
        "cut at a character boundary"
    );
    // The sink's dead letter of the control characters: its error text is bounded.
    let ctrl = dead
        .iter()
        .find(|r| r.header("id") == eid(1) && r.header("walcast.target") == "catalog_read")
        .unwrap();
    assert_eq!(ctrl.header("walcast.error.kind"), "unknown_type");
    assert!(
        ctrl.header("walcast.error").len() <= 16 * 1024,
        "the error text is bounded ({} bytes)",
        ctrl.header("walcast.error").len()
    );

    assert!(source.is_running(), "source died:\n{}", source.log());
    assert!(sink.is_running(), "sink died:\n{}", sink.log());
    assert!(sink.stop(), "{}", sink.log());
    assert!(source.stop(), "{}", source.log());
    assert!(!sink.log().contains("panicked"), "{}", sink.log());
    assert!(!source.log().contains("panicked"), "{}", source.log());
}

#[test]
fn template_topics_from_hostile_event_types_go_to_the_dlq_and_the_stream_goes_on() {
    let write = Db::new("tmpl_write");
    write.psql(WRITE_SQL);
    let names = Names::for_db(&write);
    let prefix = unique_name("tmpl");
    let template = format!("{prefix}.{{event_type}}");
    let dlq = format!("{prefix}.dlq");
    let dir = tempfile::tempdir().unwrap();
    let source_cfg = source_config(
        dir.path(),
        &write,
        &names,
        &[
            (&["kafka", "topic"], template.as_str().into()),
            (&["kafka", "dlq_topic"], dlq.as_str().into()),
            (&["kafka", "max_topics"], 2.into()),
        ],
    );
    let mut source = streaming_source(&source_cfg);
    let payload = |n: u32| json!({"n": n}).to_string();
    // 90 euro signs (270 bytes): byte 40 of the topic name falls inside one, and the name is
    // longer than Kafka allows.
    let euros = "€".repeat(90);
    let rows: [(u32, &str); 6] = [
        (1, &euros),
        (2, "A.B"),
        (3, "A_B"), // collides with A.B after Kafka's rules
        (4, "Third"),
        (5, "Fourth"), // a third topic over max_topics = 2
        (6, "A.B"),    // an existing topic: flows
    ];
    for (n, event_type) in rows {
        write.insert_outbox(&eid(n), &pid(n), event_type, &payload(n));
    }
    let flowed = read_topic(&format!("{prefix}.A.B"), Duration::from_secs(90), |rs| {
        rs.len() >= 2
    });
    assert_eq!(flowed.len(), 2, "{}", summary(&flowed));
    let third = read_topic(&format!("{prefix}.Third"), Duration::from_secs(90), |rs| {
        !rs.is_empty()
    });
    assert_eq!(third.len(), 1, "{}", summary(&third));
    let dead = read_topic(&dlq, Duration::from_secs(90), |rs| rs.len() >= 3);
    assert_eq!(dead.len(), 3, "{}", summary(&dead));
    let kind = |n: u32| {
        dead.iter()
            .find(|r| r.header("id") == eid(n))
            .map(|r| r.header("walcast.error.kind").to_owned())
            .unwrap_or_else(|| panic!("no dead letter for row {n}: {}", summary(&dead)))
    };
    assert_eq!(kind(1), "bad_topic");
    assert_eq!(kind(3), "topic_refused");
    assert_eq!(kind(5), "too_many_topics");
    assert!(source.is_running(), "source died:\n{}", source.log());
    assert!(source.stop(), "{}", source.log());
    assert!(!source.log().contains("panicked"), "{}", source.log());
}

// ---------------------------------------------------------------------------------------
// 3: a malformed connector file, key by key.
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// 4: bad DSNs.
// ---------------------------------------------------------------------------------------

/// A write database with the outbox, its publication and slot created by the superuser, so
/// a source connecting with another role gets as far as replication.
fn prepared_write_db(prefix: &str) -> (Db, Names) {
    let db = Db::new(prefix);
    let names = Names::for_db(&db);
    db.psql(WRITE_SQL);
    db.psql(&format!(
        "CREATE PUBLICATION {} FOR TABLE public.outbox_messages",
        names.publication
    ));
    db.psql(&format!(
        "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
        names.slot
    ));
    (db, names)
}

#[test]
fn source_with_a_bad_dsn_names_the_cause_and_the_fix() {
    let (db, names) = prepared_write_db("hostile_dsn");
    let dir = tempfile::tempdir().unwrap();
    let port = pg().port();
    let norepl = unique_name("norepl");
    pg().psql("postgres", &format!("CREATE ROLE {norepl} LOGIN"))
        .unwrap();
    db.psql(&format!("GRANT SELECT ON outbox_messages TO {norepl}"));
    let closed = free_port();

    // Operator errors: the source exits 1 with the cause and the fix.
    for (case, dsn, needles) in [
        (
            "wrong password",
            format!(
                "host=127.0.0.1 port={port} user={PW_ROLE} password=wrong-secret dbname={}",
                db.name
            ),
            vec![
                "password authentication failed",
                PW_ROLE,
                "fix user and password in the dsn",
            ],
        ),
        (
            "no REPLICATION attribute",
            format!(
                "host=127.0.0.1 port={port} user={norepl} dbname={}",
                db.name
            ),
            vec![
                "lacks the REPLICATION attribute",
                &*format!("ALTER ROLE \"{norepl}\" WITH REPLICATION"),
            ],
        ),
    ] {
        let cfg = source_config_dsn(dir.path(), &dsn, &names, &[]);
        let mut source = spawn("source", &["source", "--config", path_str(&cfg)]);
        let status = source.exited(Duration::from_secs(60));
        let log = source.log();
        assert_eq!(status.code(), Some(1), "{case}: {log}");
        for n in &needles {
            assert!(log.contains(n), "{case}: no {n:?} in\n{log}");
        }
        assert!(
            !log.contains("wrong-secret"),
            "{case}: the password is masked: {log}"
        );
    }

    // Network errors may clear by themselves: the source keeps retrying and says why.
    for (case, dsn, needles) in [
        (
            "unresolvable host",
            format!(
                "host=walcast-no-such-host.invalid port=5432 user=postgres dbname={}",
                db.name
            ),
            vec![
                "walcast-no-such-host.invalid:5432",
                "failed to lookup address",
                "check host and port in the dsn",
            ],
        ),
        (
            "closed port",
            format!(
                "host=127.0.0.1 port={closed} user=postgres dbname={}",
                db.name
            ),
            vec![
                &*format!("127.0.0.1:{closed}"),
                "Connection refused",
                "check host and port in the dsn",
            ],
        ),
    ] {
        let cfg = source_config_dsn(dir.path(), &dsn, &names, &[]);
        let mut source = spawn("source", &["source", "--config", path_str(&cfg)]);
        source.expect_log("starting over", Duration::from_secs(30));
        let reported = wait_until("reported", Duration::from_secs(30), || {
            let log = source.log();
            needles.iter().all(|n| log.contains(n))
        })
        .is_ok();
        assert!(reported, "{case}: {needles:?} not all in\n{}", source.log());
        assert!(source.is_running(), "{case}: retries instead of exiting");
        source.stop();
    }
    db.psql(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        names.slot
    ));
}

/// `/ready` reason and the `walcast_sink_target_up` gauge of a target.
fn target_state(admin: u16, target: &str) -> (String, Option<f64>) {
    let (_, ready) = http_get(admin, "/ready");
    let (_, metrics) = http_get(admin, "/metrics");
    let prefix = format!("walcast_sink_target_up{{target=\"{target}\"}} ");
    let up = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok());
    (ready, up)
}

fn product_events(
    range: std::ops::Range<u32>,
    name: impl Fn(u32) -> String,
) -> Vec<(String, String, &'static str, String)> {
    range
        .map(|n| {
            let p = pid(n);
            (
                eid(n),
                p.clone(),
                "ProductCreated",
                created(&p, &format!("SKU-{n}"), &name(n), "d", "1.00").to_string(),
            )
        })
        .collect()
}

#[test]
fn sink_target_with_a_wrong_password_is_named_while_the_others_flow() {
    let topic = unique_name("hostile_pw");
    create_topic(&topic, 1);
    let good = Db::new("hostile_pw_good");
    let bad = Db::new("hostile_pw_bad");
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let bad_dsn = format!(
        "host=127.0.0.1 port={} user={PW_ROLE} password=wrong-secret dbname={}",
        pg().port(),
        bad.name
    );
    let cfg = sink_config(
        dir.path(),
        &topic,
        &[("catalog_read", good.dsn()), ("replica-1", bad_dsn)],
        admin,
    );
    let mut sink = spawn("sink", &["sink", "--config", path_str(&cfg)]);
    produce(&topic, &product_events(1..21, |n| format!("product {n}")));
    good.wait_offsets(20, Duration::from_secs(90), &sink);
    assert_eq!(good.psql("SELECT count(*) FROM catalog_product_read"), "20");

    sink.expect_log("password authentication failed", Duration::from_secs(30));
    let log = sink.log();
    assert!(log.contains("replica-1"), "{log}");
    assert!(
        log.contains("fix user/password in the target's dsn"),
        "{log}"
    );
    assert!(
        !log.contains("wrong-secret"),
        "the password is masked: {log}"
    );
    let named = wait_until("named", Duration::from_secs(30), || {
        let (ready, up) = target_state(admin, "replica-1");
        ready.contains("replica-1: ")
            && ready.contains("password authentication failed")
            && up == Some(0.0)
    })
    .is_ok();
    assert!(named, "{:?}", target_state(admin, "replica-1"));
    assert_eq!(target_state(admin, "catalog_read").1, Some(1.0));
    assert!(sink.is_running(), "the sink keeps running:\n{}", sink.log());
    assert!(sink.stop(), "{}", sink.log());
}

// ---------------------------------------------------------------------------------------
// 5: the slot or the publication dropped under a running source.
// ---------------------------------------------------------------------------------------

/// Terminates the slot's walsender and drops the slot, retrying while the source reconnects.
fn drop_slot_under_source(db: &Db, slot: &str) {
    let dropped = wait_until("dropped", Duration::from_secs(30), || {
        pg().psql(
            &db.name,
            &format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = '{slot}' AND active_pid IS NOT NULL"
            ),
        )
        .is_ok()
            && pg()
                .psql(
                    &db.name,
                    &format!("SELECT pg_drop_replication_slot('{slot}')"),
                )
                .is_ok()
    })
    .is_ok();
    assert!(dropped, "could not drop slot {slot}");
}

fn simple_event(n: u32) -> (String, String, &'static str, String) {
    product_events(n..n + 1, |n| format!("p{n}")).remove(0)
}

fn write_events(db: &Db, range: std::ops::Range<u32>) {
    for (id, agg, ty, payload) in range.map(simple_event) {
        db.insert_outbox(&id, &agg, ty, &payload);
    }
}

fn wait_ids(topic: &str, range: std::ops::Range<u32>) -> Vec<Rec> {
    let want: Vec<String> = range.map(eid).collect();
    read_topic(topic, Duration::from_secs(90), |rs| {
        want.iter().all(|w| rs.iter().any(|r| r.header("id") == w))
    })
}

#[test]
fn slot_dropped_under_a_running_source_with_create_false_stops_with_the_fix() {
    let (db, names) = prepared_write_db("hostile_slot");
    let dir = tempfile::tempdir().unwrap();
    let cfg = source_config(
        dir.path(),
        &db,
        &names,
        &[(&["postgres", "create"], false.into())],
    );
    let mut source = streaming_source(&cfg);
    write_events(&db, 1..4);
    wait_ids(&names.topic, 1..4);
    // Confirmed past the three events before the slot goes.
    let last = db.psql("SELECT pg_current_wal_lsn()");
    let confirmed = wait_until("confirmed", Duration::from_secs(30), || {
        db.psql(&format!(
            "SELECT coalesce(confirmed_flush_lsn >= '{last}', false) FROM pg_replication_slots \
             WHERE slot_name = '{}'",
            names.slot
        )) == "t"
    })
    .is_ok();
    assert!(confirmed);
    drop_slot_under_source(&db, &names.slot);
    let status = source.exited(Duration::from_secs(60));
    let log = source.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "replication slot \"{}\" does not exist",
            names.slot
        )),
        "{log}"
    );
    assert!(
        log.contains("pg_create_logical_replication_slot"),
        "the fix: {log}"
    );
    // Nothing committed before the drop is lost.
    let got = wait_ids(&names.topic, 1..4);
    assert_eq!(got.len(), 3, "{}", summary(&got));
}

#[test]
fn slot_dropped_under_a_running_source_with_create_true_is_created_again() {
    let (db, names) = prepared_write_db("hostile_slot_create");
    let dir = tempfile::tempdir().unwrap();
    let cfg = source_config(dir.path(), &db, &names, &[]);
    let mut source = streaming_source(&cfg);
    write_events(&db, 1..4);
    wait_ids(&names.topic, 1..4);
    drop_slot_under_source(&db, &names.slot);
    source.expect_log("replication slot created", Duration::from_secs(60));
    let recreated = wait_until("recreated", Duration::from_secs(30), || {
        db.psql(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active",
            names.slot
        )) == "1"
    })
    .is_ok();
    assert!(recreated, "{}", source.log());
    // After the new slot exists, events flow again; the ones before the drop are there.
    write_events(&db, 4..6);
    let got = wait_ids(&names.topic, 1..6);
    assert!(got.len() >= 5, "{}", summary(&got));
    assert!(source.is_running(), "{}", source.log());
    assert!(source.stop(), "{}", source.log());
    db.psql(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        names.slot
    ));
}

/// The walsender's error when the publication is gone, with the way out.
fn assert_publication_dropped(log: &str, names: &Names) {
    assert!(
        log.contains(&format!(
            "publication \"{}\" does not exist at the slot's position",
            names.publication
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("pg_replication_slot_advance('{}'", names.slot)),
        "the fix: {log}"
    );
}

#[test]
fn publication_dropped_under_a_running_source_is_named_with_the_way_out() {
    let (db, names) = prepared_write_db("hostile_pub");
    let dir = tempfile::tempdir().unwrap();
    let cfg = source_config(
        dir.path(),
        &db,
        &names,
        &[(&["postgres", "create"], false.into())],
    );
    let mut source = streaming_source(&cfg);
    write_events(&db, 1..4);
    wait_ids(&names.topic, 1..4);
    db.psql(&format!("DROP PUBLICATION {}", names.publication));
    write_events(&db, 4..5);
    let status = source.exited(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", source.log());
    assert_publication_dropped(&source.log(), &names);
    let got = wait_ids(&names.topic, 1..4);
    assert_eq!(
        got.len(),
        3,
        "nothing before the drop is lost: {}",
        summary(&got)
    );
    db.psql(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        names.slot
    ));
}

#[test]
fn publication_dropped_with_create_true_is_created_again_but_the_gap_needs_the_slot_moved() {
    let (db, names) = prepared_write_db("hostile_pub_create");
    let dir = tempfile::tempdir().unwrap();
    let cfg = source_config(dir.path(), &db, &names, &[]);
    let mut source = streaming_source(&cfg);
    write_events(&db, 1..4);
    wait_ids(&names.topic, 1..4);
    db.psql(&format!("DROP PUBLICATION {}", names.publication));
    write_events(&db, 4..5);
    let status = source.exited(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", source.log());
    assert_publication_dropped(&source.log(), &names);

    // A restart creates the publication again, and still cannot decode the gap.
    let mut again = spawn("source", &["source", "--config", path_str(&cfg)]);
    let status = again.exited(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", again.log());
    assert!(
        again.log().contains("publication created"),
        "{}",
        again.log()
    );
    assert_publication_dropped(&again.log(), &names);

    // The way out the error names: move the slot past the gap, start again.
    db.psql(&format!(
        "SELECT pg_replication_slot_advance('{}', pg_current_wal_lsn())",
        names.slot
    ));
    let mut third = streaming_source(&cfg);
    write_events(&db, 5..6);
    let got = wait_ids(&names.topic, 5..6);
    assert!(
        got.iter().all(|r| r.header("id") != eid(4)),
        "the event written while the publication was missing is not streamed: {}",
        summary(&got)
    );
    assert_eq!(
        db.psql(&format!(
            "SELECT count(*) FROM outbox_messages WHERE id = '{}'",
            eid(4)
        )),
        "1",
        "it stays in the outbox table for the replay"
    );
    assert!(third.stop(), "{}", third.log());
    db.psql(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        names.slot
    ));
}

// ---------------------------------------------------------------------------------------
// 6: a read table changed under a running sink.
// ---------------------------------------------------------------------------------------

#[test]
fn read_table_changed_under_a_running_sink_is_named_and_caught_up_after_the_fix() {
    let topic = unique_name("hostile_schema");
    create_topic(&topic, 1);
    let (a, b) = (Db::new("hostile_schema_a"), Db::new("hostile_schema_b"));
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let cfg = sink_config(
        dir.path(),
        &topic,
        &[("catalog_read", a.dsn()), ("replica-1", b.dsn())],
        admin,
    );
    let mut sink = spawn("sink", &["sink", "--config", path_str(&cfg)]);
    produce(&topic, &product_events(1..6, |n| format!("p{n}")));
    a.wait_offsets(5, Duration::from_secs(90), &sink);
    b.wait_offsets(5, Duration::from_secs(90), &sink);

    // A column the projection writes disappears on replica-1.
    b.psql("ALTER TABLE catalog_product_read DROP COLUMN search_text");
    produce(&topic, &product_events(6..11, |n| format!("p{n}")));
    a.wait_offsets(10, Duration::from_secs(60), &sink);
    sink.expect_log("column \"search_text\"", Duration::from_secs(60));
    let named = wait_until("named", Duration::from_secs(30), || {
        let (ready, up) = target_state(admin, "replica-1");
        ready.contains("replica-1: ") && ready.contains("search_text") && up == Some(0.0)
    })
    .is_ok();
    assert!(
        named,
        "{:?}\n{}",
        target_state(admin, "replica-1"),
        sink.log()
    );
    assert!(
        sink.log().contains("catalog_product_read"),
        "{}",
        sink.log()
    );
    assert_eq!(
        b.stored_offsets(),
        5,
        "replica-1 stops at the first refused batch"
    );
    assert_eq!(target_state(admin, "catalog_read").1, Some(1.0));

    // Restored: replica-1 catches up with nothing lost. The five rows that existed lost
    // their search_text with the dropped column (the operator's DROP did that, not walcast);
    // every row written after the fix is complete.
    b.psql("ALTER TABLE catalog_product_read ADD COLUMN search_text TEXT");
    b.wait_offsets(10, Duration::from_secs(60), &sink);
    assert_eq!(b.psql("SELECT count(*) FROM catalog_product_read"), "10");
    let since_fix = |db: &Db| {
        db.rows()
            .lines()
            .filter(|l| !l.contains("|∅|"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(since_fix(&b).len(), 5, "{}", b.rows());
    assert!(since_fix(&b).iter().all(|r| a.rows().contains(r.as_str())));
    b.psql(
        "UPDATE catalog_product_read SET search_text = lower(concat_ws(' ', sku, name, \
         description)) WHERE search_text IS NULL",
    );
    assert_eq!(a.rows(), b.rows());

    // A type the values no longer fit: the refused events are dead-lettered by replica-1
    // only, the others applied; after the type is restored later events apply again.
    b.psql("ALTER TABLE catalog_product_read ALTER COLUMN name TYPE varchar(8)");
    let mut batch = product_events(11..13, |n| format!("p{n}"));
    batch.extend(product_events(13..14, |_| {
        "a name longer than eight".into()
    }));
    batch.extend(product_events(14..16, |n| format!("p{n}")));
    produce(&topic, &batch);
    a.wait_offsets(15, Duration::from_secs(60), &sink);
    b.wait_offsets(15, Duration::from_secs(60), &sink);
    let dead = read_topic(&format!("{topic}.dlq"), Duration::from_secs(60), |rs| {
        !rs.is_empty()
    });
    assert_eq!(dead.len(), 1, "{}", summary(&dead));
    let d = &dead[0];
    assert_eq!(d.header("id"), eid(13));
    assert_eq!(d.header("walcast.target"), "replica-1");
    assert_eq!(d.header("walcast.error.kind"), "database");
    assert!(
        d.header("walcast.error").contains("character varying(8)"),
        "{d:?}"
    );
    assert_eq!(d.header("walcast.original.offset"), "12");
    assert_eq!(a.psql("SELECT count(*) FROM catalog_product_read"), "15");
    assert_eq!(b.psql("SELECT count(*) FROM catalog_product_read"), "14");
    b.psql("ALTER TABLE catalog_product_read ALTER COLUMN name TYPE text");
    produce(
        &topic,
        &product_events(16..17, |_| "long names fit again".into()),
    );
    b.wait_offsets(16, Duration::from_secs(60), &sink);
    assert_eq!(b.psql("SELECT count(*) FROM catalog_product_read"), "15");
    assert!(sink.is_running(), "{}", sink.log());
    assert!(sink.stop(), "{}", sink.log());
}
