use bytes::Bytes;
use serde_json::json;

use super::pg_type::*;
use super::*;
use crate::relation::{Column, ReplicaIdentity};

fn conv(oid: Oid, text: &str) -> Value {
    text_to_json(oid, text).unwrap_or_else(|e| Value::String(format!("ERROR: {e}")))
}

#[test]
fn scalars() {
    assert_eq!(conv(BOOL, "t"), json!(true));
    assert_eq!(conv(BOOL, "f"), json!(false));
    assert_eq!(conv(INT2, "-32768"), json!(-32768));
    assert_eq!(conv(INT8, "9223372036854775807"), json!(i64::MAX));
    assert_eq!(conv(OID, "4294967295"), json!(u32::MAX));
    assert_eq!(conv(FLOAT4, "1.5"), json!(1.5));
    assert_eq!(conv(FLOAT8, "-1e-300"), json!(-1e-300));
    assert_eq!(conv(FLOAT8, "NaN"), json!("NaN"));
    assert_eq!(conv(FLOAT8, "-Infinity"), json!("-Infinity"));
    assert_eq!(
        conv(NUMERIC, "12345678901234567890.000000000000000001"),
        json!("12345678901234567890.000000000000000001")
    );
    assert_eq!(conv(TEXT, "héllo"), json!("héllo"));
    assert_eq!(conv(BPCHAR, "ab   "), json!("ab   "));
    assert_eq!(
        conv(UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
    assert_eq!(conv(JSONB, r#"{"a": [1, null]}"#), json!({"a": [1, null]}));
    assert_eq!(conv(JSON, "{not json"), json!("{not json"));
    assert_eq!(conv(BYTEA, "\\xdeadbeef00"), json!("3q2+7wA="));
    assert_eq!(conv(DATE, "2026-11-23"), json!("2026-11-23"));
    assert_eq!(
        conv(TIMESTAMPTZ, "2026-11-23 07:49:44.123+00"),
        json!("2026-11-23T07:49:44.123+00:00")
    );
    assert_eq!(
        conv(TIMESTAMP, "2026-11-23 07:49:44.123"),
        json!("2026-11-23T07:49:44.123")
    );
    assert_eq!(
        conv(1186, "1 day 02:03:04"),
        json!("1 day 02:03:04"),
        "interval stays text"
    );
    assert_eq!(
        conv(16_400, "happy"),
        json!("happy"),
        "unknown OID stays text"
    );
}

#[test]
fn malformed_scalars_are_errors() {
    for (oid, text) in [
        (BOOL, "true"),
        (INT4, "1.5"),
        (INT2, ""),
        (OID, "-1"),
        (FLOAT8, "abc"),
        (BYTEA, "\\xabc"),
        (DATE, "11/23/2026"),
        (TIMESTAMPTZ, "2026-11-23 07:49:44"),
        (INT4_ARRAY, "{1,2"),
        (INT4_ARRAY, "{1,x}"),
    ] {
        assert!(text_to_json(oid, text).is_err(), "{oid} {text:?}");
    }
}

#[test]
fn arrays() {
    assert_eq!(conv(INT4_ARRAY, "{1,NULL,-3}"), json!([1, null, -3]));
    assert_eq!(conv(INT4_ARRAY, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
    assert_eq!(conv(INT4_ARRAY, "{}"), json!([]));
    assert_eq!(
        conv(TEXT_ARRAY, r#"{"a b","q\"uote",NULL,"NULL",""}"#),
        json!(["a b", "q\"uote", null, "NULL", ""])
    );
    assert_eq!(conv(BOOL_ARRAY, "{t,f}"), json!([true, false]));
    assert_eq!(conv(FLOAT8_ARRAY, "{1.5,NaN}"), json!([1.5, "NaN"]));
    assert_eq!(conv(NUMERIC_ARRAY, "{1.10,NaN}"), json!(["1.10", "NaN"]));
    assert_eq!(
        conv(BYTEA_ARRAY, r#"{"\\x00ff","\\x"}"#),
        json!(["AP8=", ""])
    );
    assert_eq!(
        conv(JSONB_ARRAY, r#"{"{\"a\": 1}","[]"}"#),
        json!([{"a": 1}, []])
    );
    assert_eq!(
        conv(TIMESTAMPTZ_ARRAY, r#"{"2026-11-23 07:49:44+00"}"#),
        json!(["2026-11-23T07:49:44+00:00"])
    );
    assert_eq!(
        conv(1017, "{(0,0)}"),
        json!("{(0,0)}"),
        "point[] is not known: text"
    );
}

fn relation() -> Relation {
    let col = |name: &str, type_oid| Column {
        is_key: name == "id",
        name: name.into(),
        type_oid,
        type_modifier: -1,
    };
    Relation {
        xid: None,
        oid: 1,
        namespace: "public".into(),
        name: "t".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            col("id", INT4),
            col("big", TEXT),
            col("gone", TEXT),
            col("tags", TEXT_ARRAY),
        ],
    }
}

fn text(s: &'static str) -> TupleValue {
    TupleValue::Text(Bytes::from_static(s.as_bytes()))
}

#[test]
fn tuple_with_unchanged_toast() {
    let tuple = TupleData {
        columns: vec![
            text("7"),
            TupleValue::UnchangedToast,
            TupleValue::Null,
            text("{a,b}"),
        ],
    };
    let row = tuple_to_json(&relation(), &tuple);
    let expected = json!({"id": 7, "gone": null, "tags": ["a", "b"]});
    assert_eq!(
        row.as_ref().map(|r| Value::Object(r.values.clone())),
        Ok(&expected).cloned()
    );
    assert_eq!(row.map(|r| r.unchanged_toast), Ok(vec!["big".to_owned()]));
}

#[test]
fn tuple_errors() {
    let short = TupleData {
        columns: vec![text("1")],
    };
    let e = tuple_to_json(&relation(), &short)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some(
            "decoding tuple: at offset 0: invalid value, expected 4 columns as in the Relation message for public.t (got 1)"
        )
    );
    let binary = TupleData {
        columns: vec![
            TupleValue::Binary(Bytes::from_static(b"\0\0\0\x07")),
            TupleValue::Null,
            TupleValue::Null,
            TupleValue::Null,
        ],
    };
    assert!(tuple_to_json(&relation(), &binary).is_err());
    let bad = TupleData {
        columns: vec![
            text("x"),
            TupleValue::Null,
            TupleValue::Null,
            TupleValue::Null,
        ],
    };
    let e = tuple_to_json(&relation(), &bad)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some(
            "decoding tuple: at offset 0: invalid value, expected a valid value in column \"id\" (type OID 23): decoding integer value: at offset 0: invalid value, expected a decimal integer"
        )
    );
    let invalid_utf8 = TupleData {
        columns: vec![
            TupleValue::Text(Bytes::from_static(b"\xff")),
            TupleValue::Null,
            TupleValue::Null,
            TupleValue::Null,
        ],
    };
    assert!(tuple_to_json(&relation(), &invalid_utf8).is_err());
}
