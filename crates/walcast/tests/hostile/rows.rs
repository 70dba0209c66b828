//! Hostile rows: fields no limit was written for never stop the pipeline.

use std::time::Duration;

use serde_json::json;
use walcast_testkit::{TomlValue, unique_name, wait_until};

use crate::support::free_port;
use crate::support::pipeline::*;

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
    let ready = wait_until("the sink ready", Duration::from_secs(90), || {
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
    let arrived = wait_until(
        "the last product in the read model",
        Duration::from_secs(120),
        || {
            read.query_text(
                "SELECT name FROM catalog_product_read WHERE product_id = $1::text::uuid",
                &p3,
            )
            .is_some()
        },
    )
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
            // Snapshot records need a fixed topic: no snapshot tables with a template.
            (&["snapshot", "initial"], false.into()),
            (
                &["snapshot", "tables"],
                TomlValue::from_iter(Vec::<String>::new()),
            ),
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
