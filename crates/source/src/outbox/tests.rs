use std::sync::Arc;

use bytes::Bytes;
use walcast_pgoutput::message::{Relation, TupleData, TupleValue};
use walcast_pgoutput::relation::{Column, ReplicaIdentity};
use walcast_pgoutput::value::pg_type;
use walcast_pgoutput::{Lsn, Timestamp};
use walcast_replication::{Change, Op, RawRow, TxnBegin};

use super::*;
use crate::config::SourceConfig;
use crate::record::{self, Record, RecordKind, TxnMeta};

/// 2026-11-23T07:49:44.500000Z.
const COMMIT_TS: Timestamp = Timestamp::from_pg_micros(848_735_384_500_000);

fn config(extra: &str) -> SourceConfig {
    let toml = format!(
        "[postgres]\ndsn = \"host=h user=u dbname=d\"\nslot = \"s\"\npublication = \"p\"\n\
         [kafka]\nbrokers = \"b:9092\"\nmax_message_bytes = 4096\n{extra}"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("{e}"));
    SourceConfig::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn relation(columns: &[(&str, u32)]) -> Arc<Relation> {
    Arc::new(Relation {
        xid: None,
        oid: 16384,
        namespace: "public".into(),
        name: "outbox_messages".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: columns
            .iter()
            .map(|(name, type_oid)| Column {
                is_key: *name == "id",
                name: (*name).into(),
                type_oid: *type_oid,
                type_modifier: -1,
            })
            .collect(),
    })
}

fn outbox_relation() -> Arc<Relation> {
    relation(&[
        ("id", pg_type::UUID),
        ("aggregate_id", pg_type::UUID),
        ("event_type", pg_type::TEXT),
        ("occurred_at", pg_type::TIMESTAMPTZ),
        ("correlation_id", pg_type::UUID),
        ("payload", pg_type::JSONB),
    ])
}

fn text(s: &str) -> TupleValue {
    TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn row(values: Vec<TupleValue>) -> TupleData {
    TupleData { columns: values }
}

fn good_row(payload: &str) -> TupleData {
    row(vec![
        text("7d6f0e4e-0000-4000-8000-000000000001"),
        text("a9b8c7d6-0000-4000-8000-00000000000a"),
        text("ProductCreated"),
        text("2026-11-23 07:49:44.123456+00"),
        TupleValue::Null,
        text(payload),
    ])
}

fn change(op: Op, relation: &Arc<Relation>, new: Option<TupleData>) -> Change {
    Change {
        op,
        lsn: Lsn(0x16_B374_D000),
        commit_lsn: Lsn(0x16_B374_D848),
        xid: Some(7),
        commit_ts: Some(COMMIT_TS),
        schema: Some(relation.namespace.clone()),
        table: Some(relation.name.clone()),
        new: None,
        old: None,
        unchanged_toast: Vec::new(),
        raw: Some(RawRow {
            relation: relation.clone(),
            new,
            old: None,
        }),
    }
}

fn txn() -> TxnMeta {
    TxnMeta::new(&TxnBegin {
        xid: 7,
        commit_lsn: Lsn(0x16_B374_D848),
        commit_ts: COMMIT_TS,
    })
}

fn header(r: &Record, name: &str) -> Option<String> {
    r.header(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn routed(router: &mut Router, c: &Change) -> Routed {
    router.route(c, &txn()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn insert_becomes_a_debezium_style_record() {
    let mut router = Router::new(&config(""));
    let rel = outbox_relation();
    let payload = r#"{"sku": "A-1", "price": "12.50", "productId": "p1"}"#;
    let Routed::Event(r) = routed(
        &mut router,
        &change(Op::Insert, &rel, Some(good_row(payload))),
    ) else {
        panic!("not an event");
    };
    assert_eq!(r.kind, RecordKind::Event);
    assert_eq!(&*r.topic, "catalog.events");
    assert_eq!(
        r.key.as_deref(),
        Some(&b"a9b8c7d6-0000-4000-8000-00000000000a"[..])
    );
    assert_eq!(
        r.value.as_deref(),
        Some(payload.as_bytes()),
        "payload text unchanged"
    );
    assert_eq!(r.timestamp_ms, 1_795_420_184_500);
    assert_eq!(
        header(&r, record::ID).as_deref(),
        Some("7d6f0e4e-0000-4000-8000-000000000001")
    );
    assert_eq!(
        header(&r, record::EVENT_TYPE).as_deref(),
        Some("ProductCreated")
    );
    assert_eq!(
        header(&r, record::OCCURRED_AT).as_deref(),
        Some("2026-11-23T07:49:44.123456+00:00")
    );
    assert_eq!(header(&r, "correlation_id"), None, "null: no header");
    assert_eq!(header(&r, record::LSN).as_deref(), Some("16/B374D000"));
    assert_eq!(
        header(&r, record::COMMIT_LSN).as_deref(),
        Some("16/B374D848")
    );
    assert_eq!(header(&r, record::XID).as_deref(), Some("7"));
    assert_eq!(
        header(&r, record::COMMIT_TS).as_deref(),
        Some("2026-11-23T07:49:44.500000Z")
    );
}

#[test]
fn extra_header_columns_when_set() {
    let mut router = Router::new(&config(""));
    let rel = outbox_relation();
    let mut row = good_row("{}");
    row.columns[4] = text("c0ffee00-0000-4000-8000-000000000000");
    let Routed::Event(r) = routed(&mut router, &change(Op::Insert, &rel, Some(row))) else {
        panic!("not an event");
    };
    assert_eq!(
        header(&r, "correlation_id").as_deref(),
        Some("c0ffee00-0000-4000-8000-000000000000")
    );
}

#[test]
fn unmappable_rows_become_dead_letters_with_reasons() {
    let mut router = Router::new(&config(""));
    let rel = outbox_relation();
    let mut null_key = good_row("{}");
    null_key.columns[1] = TupleValue::Null;
    let Routed::DeadLetter(d) = routed(&mut router, &change(Op::Insert, &rel, Some(null_key)))
    else {
        panic!("not a dead letter");
    };
    assert_eq!(&*d.topic, "catalog.events.dlq");
    assert_eq!(
        header(&d, record::ERROR_KIND).as_deref(),
        Some("null_column")
    );
    assert!(
        header(&d, record::ERROR)
            .unwrap_or_default()
            .contains("\"aggregate_id\"")
    );
    assert_eq!(header(&d, record::LSN).as_deref(), Some("16/B374D000"));
    assert_eq!(
        header(&d, record::SOURCE_TABLE).as_deref(),
        Some("public.outbox_messages")
    );
    assert_eq!(
        header(&d, record::ID).as_deref(),
        Some("7d6f0e4e-0000-4000-8000-000000000001")
    );
    let value: serde_json::Value =
        serde_json::from_slice(d.value.as_deref().unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        value["event_type"], "ProductCreated",
        "the row as JSON: {value}"
    );

    // A table without the configured event_type column.
    let narrow = relation(&[
        ("id", pg_type::UUID),
        ("aggregate_id", pg_type::UUID),
        ("payload", pg_type::JSONB),
    ]);
    let c = change(
        Op::Insert,
        &narrow,
        Some(row(vec![text("i"), text("k"), text("{}")])),
    );
    let Routed::DeadLetter(d) = routed(&mut router, &c) else {
        panic!("not a dead letter");
    };
    assert_eq!(
        header(&d, record::ERROR_KIND).as_deref(),
        Some("missing_column")
    );
    assert!(
        header(&d, record::ERROR)
            .unwrap_or_default()
            .contains("no column \"event_type\"")
    );
}

#[test]
fn oversize_records_become_dead_letters_without_payload() {
    let mut router = Router::new(&config(""));
    let rel = outbox_relation();
    let big = format!("{{\"blob\": \"{}\"}}", "x".repeat(5000));
    let Routed::DeadLetter(d) =
        routed(&mut router, &change(Op::Insert, &rel, Some(good_row(&big))))
    else {
        panic!("not a dead letter");
    };
    assert_eq!(
        header(&d, record::ERROR_KIND).as_deref(),
        Some("payload_too_large")
    );
    assert_eq!(
        header(&d, record::ORIGINAL_TOPIC).as_deref(),
        Some("catalog.events")
    );
    assert_eq!(
        header(&d, record::COMMIT_LSN).as_deref(),
        Some("16/B374D848")
    );
    assert!(d.value.is_none());
    assert!(d.key.is_some());
}

#[test]
fn template_topics_and_bad_names() {
    let mut router = Router::new(&config(
        "topic = \"outbox.event.{event_type}\"\ndlq_topic = \"outbox.dlq\"\n",
    ));
    let rel = outbox_relation();
    let Routed::Event(r) = routed(&mut router, &change(Op::Insert, &rel, Some(good_row("{}"))))
    else {
        panic!("not an event");
    };
    assert_eq!(&*r.topic, "outbox.event.ProductCreated");
    let mut bad = good_row("{}");
    bad.columns[2] = text("Product Created!");
    let Routed::DeadLetter(d) = routed(&mut router, &change(Op::Insert, &rel, Some(bad))) else {
        panic!("not a dead letter");
    };
    assert_eq!(&*d.topic, "outbox.dlq");
    assert_eq!(header(&d, record::ERROR_KIND).as_deref(), Some("bad_topic"));
}

#[test]
fn invalid_ops_follow_the_configured_behaviour() {
    let rel = outbox_relation();
    let update = change(Op::Update, &rel, Some(good_row("{}")));
    let mut ignore = Router::new(&config(""));
    assert!(matches!(
        routed(&mut ignore, &update),
        Routed::Skipped(Skip::InvalidOp)
    ));
    let mut fail = Router::new(&config("[outbox]\ninvalid_op = \"fail\"\n"));
    match fail.route(&update, &txn()) {
        Err(e) => assert!(e.to_string().contains("UPDATE of outbox table"), "{e}"),
        Ok(r) => panic!("{r:?}"),
    }
    let other = Arc::new(Relation {
        name: "products".into(),
        ..(*rel).clone()
    });
    let insert_elsewhere = change(Op::Insert, &other, Some(good_row("{}")));
    assert!(matches!(
        routed(&mut ignore, &insert_elsewhere),
        Routed::Skipped(Skip::OtherTable)
    ));
}

#[test]
fn a_replayed_row_is_the_live_record_with_the_replay_mark_instead_of_the_wal_position() {
    let mut router = Router::new(&config(
        "topic = \"outbox.event.{event_type}\"\ndlq_topic = \"outbox.dlq\"\n[outbox.headers]\ncorrelation_id = \"correlation_id\"",
    ));
    let rel = outbox_relation();
    let mut tuple = good_row(r#"{"version": 3}"#);
    tuple.columns[4] = text("c0ffee00-0000-4000-8000-000000000001");
    let Routed::Event(live) = routed(&mut router, &change(Op::Insert, &rel, Some(tuple.clone())))
    else {
        panic!("not an event");
    };
    let Routed::Event(replayed) = router.route_row(
        &rel,
        &tuple,
        Origin::Replay {
            timestamp_ms: 1_800_000_000_000,
        },
    ) else {
        panic!("not an event");
    };
    assert_eq!(&*replayed.topic, "outbox.event.ProductCreated");
    assert_eq!(
        (&replayed.topic, &replayed.key, &replayed.value),
        (&live.topic, &live.key, &live.value)
    );
    let position = [
        record::LSN,
        record::COMMIT_LSN,
        record::XID,
        record::COMMIT_TS,
    ];
    let without = |r: &Record| -> Vec<(String, String)> {
        r.headers
            .iter()
            .filter(|(k, _)| !position.contains(&&**k) && &**k != record::REPLAY)
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    };
    assert_eq!(without(&replayed), without(&live));
    assert_eq!(
        without(&live).len(),
        4,
        "id, event_type, correlation_id, occurred_at"
    );
    assert_eq!(header(&replayed, record::REPLAY).as_deref(), Some("true"));
    assert!(position.iter().all(|h| header(&replayed, h).is_none()));
    assert_eq!(header(&live, record::REPLAY), None);
    assert_eq!(replayed.timestamp_ms, 1_800_000_000_000);

    // A row the router cannot map is the same dead letter, marked as replayed.
    let mut null_key = good_row("{}");
    null_key.columns[1] = TupleValue::Null;
    let Routed::DeadLetter(dead) =
        router.route_row(&rel, &null_key, Origin::Replay { timestamp_ms: 0 })
    else {
        panic!("not a dead letter");
    };
    assert_eq!(
        header(&dead, record::ERROR_KIND).as_deref(),
        Some("null_column")
    );
    assert_eq!(header(&dead, record::REPLAY).as_deref(), Some("true"));
    assert_eq!(header(&dead, record::LSN), None);
}
