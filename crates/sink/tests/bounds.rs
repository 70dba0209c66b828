//! Hostile sizes: dead letters that must still fit the producer, batches bounded in bytes.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::Message;
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

fn created(p: Uuid, sku: &str) -> Vec<u8> {
    json!({"productId": p, "sku": sku, "name": "N", "description": null, "price": "1.00",
           "currency": "EUR", "isActive": true, "version": 1})
    .to_string()
    .into_bytes()
}

fn record(event_type: &str, key: Uuid, value: Vec<u8>) -> RawRecord {
    let headers = vec![
        ("id".to_owned(), Uuid::new_v4().to_string()),
        ("event_type".to_owned(), event_type.to_owned()),
        ("occurred_at".to_owned(), "2026-05-01T12:00:00Z".to_owned()),
    ];
    (key.to_string(), value, headers)
}

/// A dead letter's headers fit in a record: an `event_type` of 170,000 control characters
/// (each echoed as `\u{1}`) would make a ~1 MB `walcast.error` header whose DLQ send fails for
/// ever, stopping every target at that offset; instead the targets move past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_huge_headers_fit_and_every_target_moves_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let sink = Running::start(load(&write_config(dir.path(), &topic, &targets, 100))).await;
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let records = vec![
        // Echoed by the rejection text: six bytes per character.
        record(&"\u{1}".repeat(170_000), a, created(a, "A")),
        // The record itself is close to the producer's 1,000,000 bytes: the dead letter's own
        // headers make it too large unless something is cut.
        record(&"x".repeat(998_500), b, created(b, "B")),
        record("ProductCreated", c, created(c, "C")),
    ];
    produce_raw(&topic, &records).await;
    wait_caught_up(targets.values(), 3, Duration::from_secs(90)).await;
    for (name, dsn) in &targets {
        let rows = rows(dsn).await;
        assert_eq!(rows.len(), 1, "{name}: {rows:?}");
        assert!(rows[0].starts_with(&format!("{c}|C|")), "{name}: {rows:?}");
    }

    let letters = dead_letters(&topic, 8, Duration::from_secs(60)).await;
    let mut seen = BTreeSet::new();
    for m in &letters {
        let offset: usize = header_text(m, "walcast.original.offset")
            .unwrap()
            .parse()
            .unwrap();
        let original = &records[offset];
        assert_eq!(
            header_text(m, "id").as_ref(),
            Some(&original.2[0].1),
            "the id is kept"
        );
        let error = header_text(m, "walcast.error").unwrap();
        assert!(error.starts_with("unknown_type: "), "{}", &error[..80]);
        assert!(
            error.len() <= 2048,
            "walcast.error is {} bytes",
            error.len()
        );
        match offset {
            0 => {
                assert_eq!(header_text(m, "walcast.truncated"), None);
                assert_eq!(
                    header_text(m, "event_type").as_ref(),
                    Some(&original.2[1].1)
                );
            }
            1 => {
                assert_eq!(
                    header_text(m, "walcast.truncated").as_deref(),
                    Some("header event_type")
                );
                let kept = header_text(m, "event_type").unwrap();
                assert!(
                    kept.len() <= 1024 && kept.starts_with("xxxx"),
                    "{}",
                    kept.len()
                );
            }
            _ => panic!(
                "the valid event was dead-lettered: {:?}",
                header_text(m, "walcast.error")
            ),
        }
        assert_eq!(
            m.payload(),
            Some(original.1.as_slice()),
            "the value is kept"
        );
        assert!(seen.insert((header_text(m, "walcast.target").unwrap(), offset)));
    }
    assert_eq!(
        seen.len(),
        8,
        "one dead letter per target and bad event: {seen:?}"
    );
    sink.stop().await;
}

/// A batch closes at `max_bytes` as well as at `max_events`; a record larger than `max_bytes`
/// is a batch of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_closes_at_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let path = write_config(dir.path(), &topic, &targets, 100);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("max_bytes = 16777216", "max_bytes = 2048", 1);
    std::fs::write(&path, text).unwrap();
    // Ten records of about 1,200 bytes (two do not fit 2,048), then one of about 5,400 (more
    // than 2,048): all there before the sink starts, so without a byte bound they would be one
    // batch.
    let mut records = Vec::new();
    for i in 0..11 {
        let p = Uuid::new_v4();
        let description = if i == 10 {
            "d".repeat(5000)
        } else {
            "d".repeat(800)
        };
        let value = json!({"productId": p, "sku": format!("S{i}"), "name": "N",
            "description": description, "price": "1.00", "currency": "EUR",
            "isActive": true, "version": 1});
        records.push(record("ProductCreated", p, value.to_string().into_bytes()));
    }
    produce_raw(&topic, &records).await;
    let sink = Running::start(load(&path)).await;
    wait_caught_up(targets.values(), 11, Duration::from_secs(60)).await;
    for (name, dsn) in &targets {
        assert_eq!(rows(dsn).await.len(), 11, "{name}");
        assert_eq!(
            sink.metric(walcast_sink::metrics::BATCHES, name),
            11.0,
            "{name}: batches"
        );
    }
    sink.stop().await;
}
