#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use rdkafka::Timestamp;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use serde_json::json;
use walcast_pgoutput::Lsn;

use super::*;
use crate::config::SinkConfig;

pub(crate) fn shipped_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../connectors/catalog-read-sink.toml")
}

/// The projection of the shipped connector file.
pub(crate) fn shipped() -> Projections {
    let config = SinkConfig::load(&shipped_path()).unwrap_or_else(|e| panic!("{e}"));
    Projections::compile(&config).unwrap_or_else(|e| panic!("{e}"))
}

const PRODUCT: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";

fn record(event_type: &str, headers: &[(&str, &str)], payload: &str) -> OwnedMessage {
    let mut h = OwnedHeaders::new()
        .insert(Header {
            key: "id",
            value: Some("0b6c5f1e-8f3a-4c1e-9d2a-1b2c3d4e5f60"),
        })
        .insert(Header {
            key: "event_type",
            value: Some(event_type),
        })
        .insert(Header {
            key: "occurred_at",
            value: Some("2026-03-01T10:00:00.5Z"),
        })
        .insert(Header {
            key: "walcast.commit_lsn",
            value: Some("16/B374D848"),
        });
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    OwnedMessage::new(
        Some(payload.as_bytes().to_vec()),
        Some(PRODUCT.as_bytes().to_vec()),
        "catalog.events".into(),
        Timestamp::NotAvailable,
        0,
        7,
        Some(h),
    )
}

pub(crate) fn created_v2() -> String {
    json!({"productId": PRODUCT, "sku": "SKU-1", "name": "Mug", "description": "A mug",
           "price": "12.50", "currency": "EUR", "isActive": true, "version": 1})
    .to_string()
}

/// A product event of `event_type` as the sink consumes it, at `partition` and `offset`.
pub(crate) fn product_event(
    event_type: &str,
    payload: &str,
    partition: i32,
    offset: i64,
) -> OwnedMessage {
    use rdkafka::Message;
    let r = record(event_type, &[], payload);
    OwnedMessage::new(
        r.payload().map(<[u8]>::to_vec),
        r.key().map(<[u8]>::to_vec),
        r.topic().into(),
        Timestamp::NotAvailable,
        partition,
        offset,
        r.headers().cloned(),
    )
}

fn decode(p: &Projections, r: &OwnedMessage) -> Result<Change, Rejection> {
    p.decode(r)
}

#[test]
fn the_shipped_mapping_compiles_with_four_targets() {
    let config = SinkConfig::load(&shipped_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.targets.keys().collect::<Vec<_>>(),
        ["catalog_read", "replica-1", "replica-2", "replica-3"]
    );
    assert!(config.schema.files[0].ends_with("sql/read.sql"));
    assert!(
        config.schema.files[0].is_file(),
        "schema path resolves against the connector file"
    );
    assert_eq!(config.dlq_topic(), "catalog.events.dlq");
    assert_eq!(config.group("replica-2"), "walcast.sink.replica-2");
}

#[test]
fn product_created_decodes_into_a_whole_row() {
    let p = shipped();
    let c = decode(&p, &record("ProductCreated", &[], &created_v2())).unwrap();
    assert_eq!(c.key, PRODUCT);
    assert_eq!(c.pos.version, 1);
    assert_eq!(
        p.commit_lsn(&record("X", &[], "{}")),
        Some(Lsn(0x16_B374_D848))
    );
    let Op::Upsert(row) = c.op else {
        panic!("{:?}", c.op)
    };
    let names: Vec<&str> = p.tables[0]
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "sku",
            "name",
            "description",
            "price",
            "currency",
            "is_active"
        ]
    );
    assert_eq!(
        row,
        ["SKU-1", "Mug", "A mug", "12.50", "EUR", "true"].map(|s| Some(s.into()))
    );
}

#[test]
fn a_product_snapshot_without_a_commit_lsn_upserts_the_whole_row() {
    // As the source's snapshot writes it: no walcast.* position headers, extra fields.
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "id",
            value: Some("5a1e0c3d-2b7f-5c1e-9d2a-1b2c3d4e5f60"),
        })
        .insert(Header {
            key: "event_type",
            value: Some("ProductSnapshot"),
        })
        .insert(Header {
            key: "occurred_at",
            value: Some("2026-03-01T10:00:00.500000Z"),
        })
        .insert(Header {
            key: "walcast.snapshot",
            value: Some("initial-slot"),
        });
    let payload = json!({"productId": PRODUCT, "sku": "SKU-1", "name": "Mug", "description": null,
        "price": "12.50", "currency": "EUR", "isActive": false, "version": 4,
        "createdAt": "2026-01-01T00:00:00+00:00", "updatedAt": "2026-03-01T10:00:00.5+00:00"})
    .to_string();
    let r = OwnedMessage::new(
        Some(payload.into_bytes()),
        Some(PRODUCT.as_bytes().to_vec()),
        "catalog.events".into(),
        Timestamp::NotAvailable,
        0,
        7,
        Some(headers),
    );
    let p = shipped();
    assert_eq!(p.commit_lsn(&r), None, "no LSN to account");
    let c = decode(&p, &r).unwrap();
    assert_eq!((c.key.as_str(), c.pos.version), (PRODUCT, 4));
    assert!(c.pos.occurred_at.is_some());
    let Op::Upsert(row) = c.op else {
        panic!("{:?}", c.op)
    };
    assert_eq!(
        row,
        [
            Some("SKU-1".into()),
            Some("Mug".into()),
            None,
            Some("12.50".into()),
            Some("EUR".into()),
            Some("false".into())
        ]
    );
}

#[test]
fn a_v1_product_created_is_upcast_from_title_to_name() {
    let p = shipped();
    let v1 = json!({"productId": PRODUCT, "sku": "SKU-1", "title": "Old mug", "price": "3.00",
                    "currency": "EUR", "version": 1})
    .to_string();
    let c = decode(
        &p,
        &record("ProductCreated", &[("event_version", "1")], &v1),
    )
    .unwrap();
    let Op::Upsert(row) = c.op else { panic!() };
    assert_eq!(row[1].as_deref(), Some("Old mug"));
    assert_eq!(row[2], None, "description is optional");
    assert_eq!(row[5].as_deref(), Some("true"), "v1 products were active");
    let v3 = decode(
        &p,
        &record("ProductCreated", &[("event_version", "3")], &created_v2()),
    );
    assert_eq!(v3.unwrap_err().kind, RejectKind::UnsupportedVersion);
}

#[test]
fn updates_set_only_their_columns_and_constants() {
    let p = shipped();
    let body = json!({"productId": PRODUCT, "version": 4}).to_string();
    let c = decode(&p, &record("ProductDeactivated", &[], &body)).unwrap();
    assert!(matches!(&c.op, Op::Update(set) if set == &vec![(5, Some("false".into()))]));
    let c = decode(&p, &record("ProductDeleted", &[], &body)).unwrap();
    assert!(matches!(c.op, Op::Delete));
}

#[test]
fn poison_events_are_rejected_with_their_kind() {
    let p = shipped();
    let kind = |t: &str, body: &str| decode(&p, &record(t, &[], body)).unwrap_err().kind;
    assert_eq!(
        kind("ProductRenamed", &created_v2()),
        RejectKind::UnknownType
    );
    assert_eq!(kind("ProductCreated", "{not json"), RejectKind::Undecodable);
    assert_eq!(kind("ProductCreated", "[1,2]"), RejectKind::Undecodable);
    let no_sku = json!({"productId": PRODUCT, "name": "x", "price": "1.00", "currency": "EUR",
                        "isActive": true, "version": 1});
    assert_eq!(
        kind("ProductCreated", &no_sku.to_string()),
        RejectKind::MissingField
    );
    let bad_price = json!({"productId": PRODUCT, "price": true, "currency": "EUR", "version": 2});
    assert_eq!(
        kind("ProductPriceChanged", &bad_price.to_string()),
        RejectKind::WrongType
    );
    let bad_key = json!({"productId": "nope", "version": 2});
    assert_eq!(
        kind("ProductDeleted", &bad_key.to_string()),
        RejectKind::WrongType
    );
    let no_version = json!({"productId": PRODUCT});
    assert_eq!(
        kind("ProductDeleted", &no_version.to_string()),
        RejectKind::MissingField
    );
}

#[test]
fn invalid_mappings_are_refused_with_the_fix() {
    let mut config = SinkConfig::load(&shipped_path()).unwrap_or_else(|e| panic!("{e}"));
    config.events[0].columns.remove("sku");
    let e = Projections::compile(&config).unwrap_err().to_string();
    assert!(e.contains("non-nullable column sku has no mapping"), "{e}");

    let mut config = SinkConfig::load(&shipped_path()).unwrap_or_else(|e| panic!("{e}"));
    config.tables[0]
        .computed
        .insert("search_text".into(), "lower({nope})".into());
    let e = Projections::compile(&config).unwrap_err().to_string();
    assert!(e.contains("{nope} is not a column"), "{e}");
}
