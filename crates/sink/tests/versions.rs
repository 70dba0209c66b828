//! The version guard: an older event never overwrites newer state, a late event never brings a
//! deleted row back, and an older schema version is upcast.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use walcast_sink::metrics;

use crate::support::model::Event;
use crate::support::*;

pub(crate) const T0: i64 = 1_780_000_000_000_000;

fn ev(
    event_type: &'static str,
    product: Uuid,
    version: i32,
    at: i64,
    payload: serde_json::Value,
) -> Event {
    Event {
        id: Uuid::new_v4(),
        event_type,
        product,
        version,
        occurred_at: T0 + at,
        payload,
        event_version: None,
    }
}

pub(crate) fn created(p: Uuid, sku: &str, name: &str, at: i64) -> Event {
    ev(
        "ProductCreated",
        p,
        1,
        at,
        json!({"productId": p, "sku": sku, "name": name,
        "description": null, "price": "10.00", "currency": "EUR", "isActive": true, "version": 1}),
    )
}

pub(crate) fn renamed(p: Uuid, version: i32, name: &str, at: i64) -> Event {
    ev(
        "ProductUpdated",
        p,
        version,
        at,
        json!({"productId": p, "name": name, "description": "d", "version": version}),
    )
}

fn repriced(p: Uuid, version: i32, price: &str, at: i64) -> Event {
    ev(
        "ProductPriceChanged",
        p,
        version,
        at,
        json!({"productId": p, "price": price, "currency": "EUR", "version": version}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_arriving_after_a_newer_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let sink = Running::start(load(&write_config(dir.path(), &topic, &targets, 100))).await;
    let mut ids = [
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    ];
    ids.sort();
    let [a, b, c, d] = ids;
    let mut lsn = 0;

    // Wave 1: newest states.
    let mut v1_created = created(d, "SKU-D", "ignored", 5);
    v1_created.payload = json!({"productId": d, "sku": "SKU-D", "title": "Old Shape", "price": "1.50",
        "currency": "USD", "version": 1});
    v1_created.event_version = Some(1);
    let wave1 = vec![
        created(a, "SKU-A", "Lamp", 1),
        renamed(a, 3, "Lamp Pro", 30),
        created(b, "SKU-B", "Desk", 2),
        repriced(b, 2, "20.00", 20),
        created(c, "SKU-C", "Gone", 3),
        ev(
            "ProductDeleted",
            c,
            2,
            40,
            json!({"productId": c, "version": 2}),
        ),
        v1_created,
    ];
    produce(&topic, &wave1, &mut lsn).await;
    wait_caught_up(targets.values(), 7, Duration::from_secs(60)).await;

    // Wave 2: older versions (new event ids) arrive late, in one batch and on their own.
    let wave2 = vec![
        renamed(a, 2, "Lamp OLD", 20),    // older version
        renamed(a, 3, "Lamp SAME-V", 29), // same version, older occurred_at
        repriced(b, 1, "1.00", 10), // older than the create? same version 1, later time than create... stale vs v2
        renamed(c, 1, "Zombie", 35), // late update of a deleted product
        created(c, "SKU-C", "Zombie", 3), // the create replayed with a new id
    ];
    produce(&topic, &wave2, &mut lsn).await;
    produce(&topic, &[repriced(a, 2, "99.00", 25)], &mut lsn).await;
    // And a newer one still applies.
    produce(&topic, &[repriced(b, 3, "30.00", 50)], &mut lsn).await;
    wait_caught_up(targets.values(), 14, Duration::from_secs(60)).await;

    let line = |id: Uuid,
                sku: &str,
                name: &str,
                desc: Option<&str>,
                price: &str,
                cur: &str,
                v: i32,
                at: i64| {
        let search = [Some(sku), Some(name), desc]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        format!(
            "{id}|{sku}|{name}|{}|{price}|{cur}|t|{search}|{v}|{}|t",
            desc.unwrap_or("∅"),
            T0 + at
        )
    };
    let expected = vec![
        line(a, "SKU-A", "Lamp Pro", Some("d"), "10.00", "EUR", 3, 30),
        line(b, "SKU-B", "Desk", None, "30.00", "EUR", 3, 50),
        line(d, "SKU-D", "Old Shape", None, "1.50", "USD", 1, 5),
    ];
    for (name, dsn) in &targets {
        assert_rows(name, dsn, &expected).await;
        assert_eq!(
            count(
                dsn,
                &format!("SELECT version::bigint FROM walcast_tombstones WHERE key = '{c}'")
            )
            .await,
            2,
            "{name}: the tombstone keeps the delete's version"
        );
        // 5 of wave 2 plus the late reprice of a; the "Zombie" update of c counts as stale too
        // (its version is below the tombstone's).
        assert_eq!(sink.metric(metrics::EVENTS_STALE, name), 6.0, "{name}");
        assert_eq!(sink.metric(metrics::EVENTS_APPLIED, name), 14.0, "{name}");
    }
    sink.stop().await;
}

fn snapshot_row(p: Uuid, version: i32, name: &str, at: i64) -> Event {
    ev(
        "ProductSnapshot",
        p,
        version,
        at,
        json!({"productId": p, "sku": format!("SKU-{name}"), "name": name, "description": null,
        "price": "5.00", "currency": "EUR", "isActive": true, "version": version,
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"}),
    )
}

/// Why versions must keep increasing across a delete and a re-create of the same key
/// (docs/delivery-guarantees.md, "Snapshots"): a deleted key leaves a tombstone at the delete's
/// version, and a snapshot row of the re-created key that starts its versions over is older
/// than that tombstone, so the target never shows the re-created row. A re-create that goes on
/// from the deleted row's version is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_created_key_whose_version_starts_over_stays_behind_its_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(1).await;
    let targets = fresh_targets();
    let sink = Running::start(load(&write_config(dir.path(), &topic, &targets, 100))).await;
    let (restarted, continued) = (Uuid::new_v4(), Uuid::new_v4());
    let mut lsn = 0;
    let deleted = |p: Uuid| {
        ev(
            "ProductDeleted",
            p,
            2,
            20,
            json!({"productId": p, "version": 2}),
        )
    };
    produce(
        &topic,
        &[
            created(restarted, "SKU-R", "Restarted", 10),
            deleted(restarted),
            created(continued, "SKU-C", "Continued", 10),
            deleted(continued),
            // Both keys are created again later, and a snapshot reads them: one whose writer
            // started its version over at 1, one whose version went on from the delete's 2.
            snapshot_row(restarted, 1, "Again", 100),
            snapshot_row(continued, 3, "Again", 100),
        ],
        &mut lsn,
    )
    .await;
    wait_caught_up(targets.values(), 6, Duration::from_secs(60)).await;
    for (name, dsn) in &targets {
        let rows = rows(dsn).await;
        assert!(
            rows.iter().any(|r| r.starts_with(&continued.to_string())),
            "{name}: the re-created key with a newer version is missing: {rows:?}"
        );
        assert!(
            !rows.iter().any(|r| r.starts_with(&restarted.to_string())),
            "{name}: the key whose version started over passed its tombstone: {rows:?}"
        );
    }
    sink.stop().await;
}
