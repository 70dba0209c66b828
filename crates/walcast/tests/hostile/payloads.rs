//! Hostile payloads and poison events through the whole path: source, Kafka and sink.
//!
//! One run of the pipeline is shared by the tests of this module (a pipeline each would
//! multiply the time): twelve events written to the outbox one transaction each, read back
//! from the topic and the dead-letter topic once both targets are past them, then the source
//! and the sink stopped. Each test checks one behaviour on what the run saw.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::free_port;
use crate::support::pipeline::*;

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

/// The events of the run: `(event id, aggregate, type, payload)`, in the order written.
struct Events {
    uni: String,
    huge: String,
    renamed: String,
    list: Vec<(String, String, &'static str, String)>,
}

fn events() -> Events {
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
    // One partition, so poison and later events share it.
    let list = vec![
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
        // Poison: unknown type, missing field, wrong field types.
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
    Events {
        uni,
        huge,
        renamed,
        list,
    }
}

/// How a process came through the run.
struct Outcome {
    /// Still running when the run was over.
    running: bool,
    /// Exited with success on SIGTERM.
    stopped: bool,
    log: String,
}

/// What the run saw.
struct Run {
    write: Db,
    reads: [Db; 2],
    targets: [&'static str; 2],
    topic: String,
    events: Events,
    /// The topic, once it held 11 records.
    main: Vec<Rec>,
    /// The dead-letter topic, once it held the oversize event.
    source_dead: Vec<Rec>,
    /// The dead-letter topic, once both targets were past all 11 records and it held 12 dead
    /// letters of the sink.
    dead: Vec<Rec>,
    source: Outcome,
    sink: Outcome,
}

impl Run {
    fn record(&self, n: u32) -> &Rec {
        self.main.iter().find(|r| r.header("id") == eid(n)).unwrap()
    }

    fn sink_dead(&self) -> Vec<&Rec> {
        self.dead
            .iter()
            .filter(|r| !r.header("walcast.target").is_empty())
            .collect()
    }
}

/// The run, started by whichever test asks first; a failed run fails every test with its cause.
fn run() -> &'static Run {
    static RUN: OnceLock<Result<Run, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        std::panic::catch_unwind(start).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        })
    });
    match run {
        Ok(run) => run,
        Err(e) => panic!("the shared run of hostile payloads failed: {e}"),
    }
}

fn start() -> Run {
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

    let events = events();
    // One transaction per event, written the way the catalog app writes: bound parameters.
    for (id, aggregate, event_type, payload) in &events.list {
        write.insert_outbox(id, aggregate, event_type, payload);
    }
    let main = read_topic(&names.topic, Duration::from_secs(120), |rs| rs.len() >= 11);
    let dlq = format!("{}.dlq", names.topic);
    let source_dead = read_topic(&dlq, Duration::from_secs(60), |rs| {
        rs.iter().any(|r| r.header("id") == eid(4))
    });
    for db in &reads {
        db.wait_offsets(11, Duration::from_secs(120), &sink);
    }
    let dead = read_topic(&dlq, Duration::from_secs(60), |rs| {
        rs.iter()
            .filter(|r| !r.header("walcast.target").is_empty())
            .count()
            >= 12
    });
    let (source_running, sink_running) = (source.is_running(), sink.is_running());
    let sink_stopped = sink.stop();
    let source_stopped = source.stop();
    Run {
        write,
        reads,
        targets: [targets[0].0, targets[1].0],
        topic: names.topic,
        events,
        main,
        source_dead,
        dead,
        source: Outcome {
            running: source_running,
            stopped: source_stopped,
            log: source.log(),
        },
        sink: Outcome {
            running: sink_running,
            stopped: sink_stopped,
            log: sink.log(),
        },
    }
}

#[test]
fn every_event_within_max_message_bytes_reaches_kafka_byte_exact() {
    let run = run();
    let main = &run.main;
    assert_eq!(main.len(), 11, "{}", summary(main));
    for r in main {
        let stored = run.write.payload_text(r.header("id"));
        assert!(
            r.value.as_deref() == Some(stored.as_bytes()),
            "event {}: the Kafka value differs from the outbox row's payload",
            r.header("id")
        );
    }
    let value = |n: u32| -> Value {
        serde_json::from_slice(run.record(n).value.as_deref().unwrap()).unwrap()
    };
    let (uni, huge) = (&run.events.uni, &run.events.huge);
    let v = value(1);
    assert_eq!(v["name"], uni.as_str());
    assert_eq!(v["description"], uni.as_str());
    assert_eq!(value(2)["description"], huge.as_str());
    let v = value(3);
    assert_eq!(
        (
            v["sku"].as_str(),
            v["name"].as_str(),
            v["description"].as_str()
        ),
        (Some(SQL_SKU), Some(SQL_NAME), Some(SQL_DESCRIPTION))
    );
    let deep_value = run.record(5).value.clone().unwrap();
    assert!(
        deep_value
            .windows(10_000)
            .any(|w| w.iter().all(|b| *b == b'[')),
        "the nesting arrives unchanged"
    );
    assert!(main.iter().all(|r| r.header("id") != eid(4)));
}

#[test]
fn an_oversize_event_is_dead_lettered_by_the_source_and_stays_in_the_outbox() {
    let run = run();
    let big = run
        .source_dead
        .iter()
        .find(|r| r.header("id") == eid(4))
        .unwrap();
    assert_eq!(
        big.header("walcast.error.kind"),
        "payload_too_large",
        "{big:?}"
    );
    assert!(
        big.header("walcast.error").contains("max_message_bytes"),
        "{big:?}"
    );
    assert_eq!(big.header("walcast.original.topic"), run.topic);
    assert!(!big.header("walcast.lsn").is_empty());
    assert!(big.value.is_none(), "the oversize payload is left out");
    assert_eq!(
        run.write.psql(&format!(
            "SELECT length(payload::text) > 1200000 FROM outbox_messages WHERE id = '{}'",
            eid(4)
        )),
        "t",
        "the payload stays in the outbox row"
    );
}

#[test]
fn every_target_holds_the_good_products_byte_exact() {
    let run = run();
    let (p_uni, p_huge, p_sql) = (pid(1), pid(2), pid(3));
    for (name, db) in run.targets.iter().zip(&run.reads) {
        let text = |sql: &str, p: &str| db.query_text(sql, p);
        assert_eq!(
            text(
                "SELECT name FROM catalog_product_read WHERE product_id = $1::text::uuid",
                &p_uni
            ),
            Some(run.events.renamed.clone()),
            "{name}"
        );
        assert_eq!(
            text(
                "SELECT description FROM catalog_product_read WHERE product_id = $1::text::uuid",
                &p_uni
            ),
            Some(run.events.uni.clone()),
            "{name}"
        );
        assert_eq!(
            text(
                "SELECT description FROM catalog_product_read WHERE product_id = $1::text::uuid",
                &p_huge
            ),
            Some(run.events.huge.clone()),
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
        run.write.psql("SELECT to_regclass('products') IS NOT NULL"),
        "t"
    );
}

#[test]
fn poison_events_are_dead_lettered_by_the_sink_with_their_cause() {
    let run = run();
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
    let sink_dead = run.sink_dead();
    assert_eq!(sink_dead.len(), 12, "{}", summary(&run.dead));
    for d in &sink_dead {
        let id = d.header("id");
        let kind = expected
            .get(id)
            .unwrap_or_else(|| panic!("unexpected dead letter {d:?}"));
        assert_eq!(d.header("walcast.error.kind"), *kind, "{id}: {d:?}");
        let error = d.header("walcast.error");
        assert!(error.starts_with(&format!("{kind}: ")), "{id}: {error}");
        assert_eq!(d.header("walcast.original.topic"), run.topic);
        assert_eq!(d.header("walcast.original.partition"), "0");
        let offset: i64 = d.header("walcast.original.offset").parse().unwrap();
        let original = run.main.iter().find(|r| r.offset == offset).unwrap();
        assert_eq!(
            original.header("id"),
            id,
            "the original offset points at the event"
        );
        assert_eq!(d.value, original.value, "the value is kept unchanged");
        assert!(run.targets.contains(&d.header("walcast.target")), "{d:?}");
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
}

#[test]
fn neither_process_crashes_on_hostile_payloads() {
    let run = run();
    let (source, sink) = (&run.source, &run.sink);
    assert!(source.running, "source died:\n{}", source.log);
    assert!(sink.running, "sink died:\n{}", sink.log);
    assert!(sink.stopped, "{}", sink.log);
    assert!(source.stopped, "{}", source.log);
    assert!(!sink.log.contains("panicked"), "{}", sink.log);
    assert!(!source.log.contains("panicked"), "{}", source.log);
}
