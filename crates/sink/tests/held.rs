//! A DLQ repair converges: an update whose row is missing waits for the row, and once a
//! target dead-letters an event of a key it holds that key's later events until the dead
//! letter is replayed (here the test re-produces the DLQ record itself) or discarded, while
//! other keys keep flowing.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::json;
use uuid::Uuid;
use walcast_sink::{Discard, SinkConfig, metrics};
use walcast_testkit::unique_name;

use crate::support::model::Event;
use crate::support::*;

const T0: i64 = 1_790_000_000_000_000;
const HELD: &str = "replica-2";

fn ev(event_type: &'static str, p: Uuid, version: i32, payload: serde_json::Value) -> Event {
    Event {
        id: Uuid::new_v4(),
        event_type,
        product: p,
        version,
        occurred_at: T0 + i64::from(version) * 1000,
        payload,
        event_version: None,
    }
}

fn created(p: Uuid, sku: &str, name: &str) -> Event {
    ev(
        "ProductCreated",
        p,
        1,
        json!({"productId": p, "sku": sku, "name": name, "description": null,
               "price": "10.00", "currency": "EUR", "isActive": true, "version": 1}),
    )
}

fn renamed(p: Uuid, version: i32, name: &str) -> Event {
    ev(
        "ProductUpdated",
        p,
        version,
        json!({"productId": p, "name": name, "description": "d", "version": version}),
    )
}

fn repriced(p: Uuid, version: i32, price: &str) -> Event {
    ev(
        "ProductPriceChanged",
        p,
        version,
        json!({"productId": p, "price": price, "currency": "EUR", "version": version}),
    )
}

/// Four fresh targets, the read schema applied, and a CHECK on `HELD` only; the sink started.
async fn setup(
    check: &str,
) -> (
    tempfile::TempDir,
    String,
    BTreeMap<String, String>,
    SinkConfig,
) {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let schema = std::fs::read_to_string(repo_root().join("sql/read.sql")).unwrap();
    let c = connect(&targets[HELD]).await;
    c.batch_execute(&schema).await.unwrap();
    c.batch_execute(&format!(
        "ALTER TABLE catalog_product_read ADD CONSTRAINT only_here CHECK ({check})"
    ))
    .await
    .unwrap();
    let config = load(&write_config(dir.path(), &topic, &targets, 100));
    (dir, topic, targets, config)
}

async fn fix(targets: &BTreeMap<String, String>) {
    connect(&targets[HELD])
        .await
        .batch_execute("ALTER TABLE catalog_product_read DROP CONSTRAINT only_here")
        .await
        .unwrap();
}

/// Re-produces to `topic` the dead letter `HELD` wrote for event `id`: its key, value and
/// original headers, as an operator repairing it would.
async fn replay_dead_letter(topic: &str, id: Uuid) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .set("group.id", unique_name("dlq_replay"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&format!("{topic}.dlq")]).unwrap();
    let mut stream = consumer.stream();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the dead letter within 30 s")
            .unwrap()
            .unwrap();
        let Some(h) = m.headers() else { continue };
        let headers: Vec<(String, String)> = h
            .iter()
            .map(|x| {
                let v = x.value.map(|v| String::from_utf8_lossy(v).into_owned());
                (x.key.to_owned(), v.unwrap_or_default())
            })
            .collect();
        let get = |k: &str| headers.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        if get("walcast.target").as_deref() != Some(HELD) || get("id") != Some(id.to_string()) {
            continue;
        }
        let original: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| {
                !["walcast.error", "walcast.target", "walcast.original"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .cloned()
            .collect();
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let value = m.payload().unwrap_or_default().to_vec();
        produce_raw(topic, &[(key, value, original)]).await;
        return;
    }
}

/// Waits until every target holds the same rows as `catalog_read`, or panics at the deadline.
async fn wait_equal(targets: &BTreeMap<String, String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reference = rows(&targets["catalog_read"]).await;
        let mut differ = Vec::new();
        for (name, dsn) in targets {
            let r = rows(dsn).await;
            if r != reference {
                differ.push(format!("{name}: {r:?}"));
            }
        }
        if differ.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "targets differ from catalog_read {reference:?}:\n{}",
                differ.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `metric{target=HELD}` equals `want`, or panics at the deadline.
async fn wait_metric(sink: &Running, name: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sink.metric(name, HELD) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{{target={HELD}}} = {}, expected {want}",
            sink.metric(name, HELD)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The read row of one product, formatted by [`ROWS_SQL`].
async fn row_of(dsn: &str, p: Uuid) -> Option<String> {
    rows(dsn)
        .await
        .into_iter()
        .find(|r| r.starts_with(&p.to_string()))
}

async fn held_rows(dsn: &str) -> i64 {
    count(dsn, "SELECT count(*) FROM walcast_held").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_replayed_after_later_updates_converges() {
    let (_dir, topic, targets, config) = setup("sku <> 'SKU-P'").await;
    let sink = Running::start(config).await;
    let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
    let v1 = created(p, "SKU-P", "Lamp");
    let mut lsn = 0;
    produce(&topic, std::slice::from_ref(&v1), &mut lsn).await;
    wait_caught_up(targets.values(), 1, Duration::from_secs(60)).await;
    let later = [
        renamed(p, 2, "Lamp Pro"),
        created(q, "SKU-Q", "Desk"),
        repriced(p, 3, "12.00"),
    ];
    produce(&topic, &later, &mut lsn).await;
    wait_caught_up(targets.values(), 4, Duration::from_secs(60)).await;
    assert_eq!(row_of(&targets[HELD], p).await, None, "v1 was refused");
    assert_eq!(
        held_rows(&targets[HELD]).await,
        3,
        "the dead letter and two updates"
    );

    fix(&targets).await;
    replay_dead_letter(&topic, v1.id).await;
    wait_caught_up(targets.values(), 5, Duration::from_secs(60)).await;
    wait_equal(&targets).await;
    let p_row = row_of(&targets[HELD], p).await.unwrap();
    assert!(p_row.contains("|SKU-P|Lamp Pro|d|12.00|EUR|t|"), "{p_row}");
    assert_eq!(held_rows(&targets[HELD]).await, 0);
    assert_eq!(sink.metric(metrics::EVENTS_RELEASED, HELD), 2.0);
    wait_metric(&sink, metrics::HELD_CHANGES, 0.0).await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_replayed_after_a_newer_one_converges_name_and_price() {
    let (_dir, topic, targets, config) = setup("name NOT LIKE '%Forbidden%'").await;
    let sink = Running::start(config).await;
    let p = Uuid::new_v4();
    let v2 = renamed(p, 2, "Lamp Forbidden");
    let mut lsn = 0;
    let events = [
        created(p, "SKU-P", "Lamp"),
        v2.clone(),
        repriced(p, 3, "12.00"),
    ];
    produce(&topic, &events, &mut lsn).await;
    wait_caught_up(targets.values(), 3, Duration::from_secs(60)).await;

    fix(&targets).await;
    replay_dead_letter(&topic, v2.id).await;
    wait_caught_up(targets.values(), 4, Duration::from_secs(60)).await;
    wait_equal(&targets).await;
    let p_row = row_of(&targets[HELD], p).await.unwrap();
    assert!(
        p_row.contains("|SKU-P|Lamp Forbidden|d|12.00|EUR|t|"),
        "{p_row}"
    );
    assert_eq!(held_rows(&targets[HELD]).await, 0);
    sink.stop().await;
}

/// P's rename is refused on `HELD`; P's reprice waits behind it; Q flows. Returns the rename.
async fn hold_p_while_q_flows(
    topic: &str,
    targets: &BTreeMap<String, String>,
    sink: &Running,
    p: Uuid,
    q: Uuid,
) -> Event {
    let v2 = renamed(p, 2, "Lamp Forbidden");
    let mut lsn = 0;
    let events = [
        created(p, "SKU-P", "Lamp"),
        created(q, "SKU-Q", "Desk"),
        v2.clone(),
        repriced(p, 3, "12.00"),
        repriced(q, 2, "7.00"),
        renamed(q, 3, "Desk Pro"),
    ];
    produce(topic, &events, &mut lsn).await;
    wait_caught_up(targets.values(), 6, Duration::from_secs(60)).await;

    let q_row = row_of(&targets["catalog_read"], q).await.unwrap();
    assert!(q_row.contains("|SKU-Q|Desk Pro|d|7.00|EUR|t|"), "{q_row}");
    for (name, dsn) in targets {
        assert_eq!(
            row_of(dsn, q).await.as_ref(),
            Some(&q_row),
            "{name}: Q flows"
        );
    }
    let held_p = row_of(&targets[HELD], p).await.unwrap();
    let v1_line = format!("{p}|SKU-P|Lamp|∅|10.00|EUR|t|sku-p lamp|1|{}|t", T0 + 1000);
    assert_eq!(
        held_p, v1_line,
        "P stays at v1 on {HELD}: v3 waits behind the refused v2"
    );
    assert!(
        row_of(&targets["replica-1"], p)
            .await
            .unwrap()
            .contains("|Lamp Forbidden|d|12.00|")
    );
    wait_metric(sink, metrics::HELD_CHANGES, 1.0).await;
    wait_metric(sink, metrics::HELD_KEYS, 1.0).await;
    assert_eq!(sink.metric(metrics::EVENTS_HELD, HELD), 1.0);
    v2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_keys_keep_flowing_while_one_is_held_behind_a_dead_letter() {
    let (_dir, topic, targets, config) = setup("name NOT LIKE '%Forbidden%'").await;
    let sink = Running::start(config).await;
    let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
    hold_p_while_q_flows(&topic, &targets, &sink, p, q).await;
    // A later event of P waits too; one of Q applies.
    let mut lsn = 0x10_0000;
    produce(
        &topic,
        &[repriced(p, 4, "13.00"), repriced(q, 4, "8.00")],
        &mut lsn,
    )
    .await;
    wait_caught_up(targets.values(), 8, Duration::from_secs(60)).await;
    assert!(
        row_of(&targets[HELD], q)
            .await
            .unwrap()
            .contains("|8.00|EUR|")
    );
    assert!(
        row_of(&targets[HELD], p)
            .await
            .unwrap()
            .contains("|10.00|EUR|")
    );
    wait_metric(&sink, metrics::HELD_CHANGES, 2.0).await;
    let oldest = sink.metric(metrics::HELD_OLDEST_SECONDS, HELD);
    assert!(
        oldest > 0.0 && oldest < 600.0,
        "oldest held change {oldest} s"
    );
    assert_eq!(sink.metric(metrics::HELD_OLDEST_SECONDS, "replica-1"), 0.0);
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_discard_releases_the_key_and_applies_what_waited_in_order() {
    let (_dir, topic, targets, config) = setup("name NOT LIKE '%Forbidden%'").await;
    let sink = Running::start(load(&config_path(&_dir))).await;
    let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
    let v2 = hold_p_while_q_flows(&topic, &targets, &sink, p, q).await;

    let report = walcast_sink::discard(&config, HELD, &Discard::Event(v2.id))
        .await
        .unwrap();
    assert_eq!(
        report.keys,
        vec![("catalog_product_read".to_owned(), p.to_string())]
    );
    assert_eq!((report.released, report.still_held), (1, 0));
    // v3 applied on top of v1; the discarded rename is not.
    let p_row = row_of(&targets[HELD], p).await.unwrap();
    assert!(
        p_row.contains("|SKU-P|Lamp|∅|12.00|EUR|t|sku-p lamp|3|"),
        "{p_row}"
    );
    assert_eq!(held_rows(&targets[HELD]).await, 0);

    let again = walcast_sink::discard(&config, HELD, &Discard::Event(v2.id))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        again.contains(&format!("no dead letter with event id {}", v2.id)),
        "{again}"
    );

    // P flows again on HELD: a later rename lands everywhere alike.
    let mut lsn = 0x10_0000;
    produce(&topic, &[renamed(p, 4, "Lamp Four")], &mut lsn).await;
    wait_caught_up(targets.values(), 7, Duration::from_secs(60)).await;
    wait_equal(&targets).await;
    wait_metric(&sink, metrics::HELD_KEYS, 0.0).await;
    sink.stop().await;
}

fn config_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("sink.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_held_longer_than_the_tombstone_window_is_dead_lettered_as_no_base_row() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let mut config = load(&write_config(dir.path(), &topic, &targets, 100));
    config.prune.processed_events_window_secs = 2;
    config.prune.tombstone_window_secs = 2;
    config.prune.interval_secs = 1;
    let sink = Running::start(config).await;
    // An update whose create never reaches any target.
    let p = Uuid::new_v4();
    let orphan = renamed(p, 2, "Orphan");
    let mut lsn = 0;
    produce(&topic, std::slice::from_ref(&orphan), &mut lsn).await;
    wait_caught_up(targets.values(), 1, Duration::from_secs(60)).await;

    let dead = dead_letters(&topic, targets.len(), Duration::from_secs(60)).await;
    let mut by_target = Vec::new();
    for d in &dead {
        assert_eq!(
            header_text(d, "walcast.error.kind").as_deref(),
            Some("no_base_row"),
            "{d:?}"
        );
        assert_eq!(header_text(d, "id"), Some(orphan.id.to_string()));
        assert_eq!(
            header_text(d, "event_type").as_deref(),
            Some("ProductUpdated")
        );
        let error = header_text(d, "walcast.error").unwrap_or_default();
        assert!(error.contains("tombstone window"), "{error}");
        by_target.push(header_text(d, "walcast.target").unwrap_or_default());
    }
    by_target.sort();
    let mut names: Vec<String> = targets.keys().cloned().collect();
    names.sort();
    assert_eq!(by_target, names, "one dead letter per target");
    for (name, dsn) in &targets {
        assert_eq!(held_rows(dsn).await, 0, "{name}: nothing left held");
        assert_eq!(row_of(dsn, p).await, None, "{name}: no row made up");
    }
    sink.stop().await;
}
