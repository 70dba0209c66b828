//! Poison events go to the DLQ with headers naming the error, the target and the origin, and
//! the partition keeps moving.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::json;
use uuid::Uuid;
use walcast_sink::metrics;
use walcast_testkit::unique_name;

use crate::support::*;

fn raw(event_type: &str, key: Uuid, value: &[u8]) -> RawRecord {
    let headers = vec![
        ("id".to_owned(), Uuid::new_v4().to_string()),
        ("event_type".to_owned(), event_type.to_owned()),
        ("occurred_at".to_owned(), "2026-05-01T12:00:00Z".to_owned()),
    ];
    (key.to_string(), value.to_vec(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_go_to_the_dlq_with_headers_while_the_partition_keeps_moving() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let sink = Running::start(load(&write_config(dir.path(), &topic, &targets, 100))).await;
    let (a, b, c, d) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let created = |p: Uuid, sku: &str, price: &str| {
        json!({"productId": p, "sku": sku, "name": "N", "description": null, "price": price,
               "currency": "EUR", "isActive": true, "version": 1})
        .to_string()
    };
    let records = vec![
        raw("ProductCreated", a, created(a, "A", "1.00").as_bytes()),
        raw("ProductRenamed", a, json!({"productId": a, "version": 2}).to_string().as_bytes()),
        raw("ProductPriceChanged", a, json!({"productId": a, "price": "2.00", "currency": "EUR", "version": 2}).to_string().as_bytes()),
        raw("ProductCreated", b, json!({"productId": b, "name": "no sku", "price": "1.00", "currency": "EUR", "isActive": true, "version": 1}).to_string().as_bytes()),
        raw("ProductPriceChanged", a, json!({"productId": a, "price": true, "currency": "EUR", "version": 3}).to_string().as_bytes()),
        raw("ProductUpdated", a, b"{not json"),
        raw("ProductCreated", c, created(c, "C", "99999999999999999999.00").as_bytes()),
        raw("ProductUpdated", a, json!({"productId": a, "name": "Renamed", "description": "x", "version": 3}).to_string().as_bytes()),
        raw("ProductCreated", d, created(d, "D", "4.00").as_bytes()),
    ];
    let poison: [(i64, &str); 5] = [
        (1, "unknown_type"),
        (3, "missing_field"),
        (4, "wrong_type"),
        (5, "undecodable"),
        (6, "database"),
    ];
    produce_raw(&topic, &records).await;
    wait_caught_up(
        targets.values(),
        records.len() as i64,
        Duration::from_secs(60),
    )
    .await;

    for (name, dsn) in &targets {
        let rows = rows(dsn).await;
        assert_eq!(rows.len(), 2, "{name}: {rows:?}");
        assert!(
            rows.iter()
                .any(|r| r.starts_with(&format!("{a}|A|Renamed|x|2.00|"))),
            "{name}: {rows:?}"
        );
        assert!(
            rows.iter()
                .any(|r| r.starts_with(&format!("{d}|D|N|∅|4.00|"))),
            "{name}: {rows:?}"
        );
        assert_eq!(sink.metric(metrics::DLQ, name), 5.0, "{name}");
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .set("group.id", unique_name("dlq_reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&format!("{topic}.dlq")]).unwrap();
    let mut seen = BTreeSet::new();
    let mut stream = consumer.stream();
    while seen.len() < 20 {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("20 dead letters within 30 s")
            .unwrap()
            .unwrap();
        let h = m.headers().unwrap();
        let get = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| panic!("header {k} missing"))
        };
        assert_eq!(get("walcast.original.topic"), topic);
        assert_eq!(get("walcast.original.partition"), "0");
        let offset: i64 = get("walcast.original.offset").parse().unwrap();
        let kind = get("walcast.error.kind");
        assert!(
            get("walcast.error").starts_with(&format!("{kind}: ")),
            "{}",
            get("walcast.error")
        );
        let original = &records[offset as usize];
        assert_eq!(
            m.payload(),
            Some(original.1.as_slice()),
            "the value is kept unchanged"
        );
        assert_eq!(get("id"), original.2[0].1, "the original headers are kept");
        assert!(
            seen.insert((get("walcast.target"), offset, kind)),
            "one dead letter per target and event"
        );
    }
    let expected: BTreeSet<(String, i64, String)> = TARGETS
        .iter()
        .flat_map(|t| {
            poison
                .iter()
                .map(move |(o, k)| (t.to_string(), *o, k.to_string()))
        })
        .collect();
    assert_eq!(seen, expected);
    sink.stop().await;
}
