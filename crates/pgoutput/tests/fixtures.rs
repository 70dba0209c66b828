//! Decodes byte fixtures captured from a real PostgreSQL 15 (see
//! `fixtures/README.md`) and checks every message and tuple kind.

use bytes::{BufMut, BytesMut};
use serde_json::{Value, json};
use walcast_pgoutput::Lsn;
use walcast_pgoutput::message::{
    Decoder, LogicalMessage, OldTuple, Relation, TupleData, TupleValue,
};
use walcast_pgoutput::relation::{RelationCache, ReplicaIdentity};
use walcast_pgoutput::replication::{ReplicationMessage, XLogData};
use walcast_pgoutput::value::tuple_to_json;

const V1: &str = include_str!("fixtures/v1.hex");
const V1_BINARY: &str = include_str!("fixtures/v1_binary.hex");
const V2_STREAM: &str = include_str!("fixtures/v2_stream.hex");

type Error = Box<dyn std::error::Error>;
type TestResult = Result<(), Error>;

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(format!("odd hex length in {s:.20}..."));
    }
    b.chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("bad hex {p:?}"))
        })
        .collect()
}

/// `(lsn, message bytes)` per fixture line.
fn load(fixture: &str) -> Result<Vec<(Lsn, Vec<u8>)>, Error> {
    fixture
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (lsn, hex) = l.split_once(' ').ok_or("line without a space")?;
            Ok((lsn.parse()?, unhex(hex)?))
        })
        .collect()
}

/// Decodes every message in order, each wrapped in an XLogData frame first,
/// as it would arrive on a replication connection.
fn decode_all(fixture: &str, protocol_version: u32) -> Result<Vec<LogicalMessage>, Error> {
    let mut decoder = Decoder::new(protocol_version);
    let mut out = Vec::new();
    for (i, (lsn, data)) in load(fixture)?.into_iter().enumerate() {
        let mut frame = BytesMut::new();
        frame.put_u8(b'w');
        frame.put_u64(lsn.0);
        frame.put_u64(lsn.0);
        frame.put_i64(0);
        frame.put_slice(&data);
        let ReplicationMessage::XLogData(XLogData {
            wal_start, data, ..
        }) = ReplicationMessage::parse_bytes(frame.freeze())?
        else {
            return Err("not XLogData".into());
        };
        assert_eq!(wal_start, lsn);
        let msg = decoder
            .decode_bytes(data)
            .map_err(|e| format!("message {i} at {lsn}: {e}"))?;
        out.push(msg);
    }
    assert!(!decoder.in_stream, "fixture ends outside a stream block");
    Ok(out)
}

fn kinds(msgs: &[LogicalMessage]) -> String {
    msgs.iter()
        .map(|m| match m {
            LogicalMessage::Begin(_) => 'B',
            LogicalMessage::Commit(_) => 'C',
            LogicalMessage::Origin(_) => 'O',
            LogicalMessage::Relation(_) => 'R',
            LogicalMessage::Type(_) => 'Y',
            LogicalMessage::Insert(_) => 'I',
            LogicalMessage::Update(_) => 'U',
            LogicalMessage::Delete(_) => 'D',
            LogicalMessage::Truncate(_) => 'T',
            LogicalMessage::Message(_) => 'M',
            LogicalMessage::StreamStart(_) => 'S',
            LogicalMessage::StreamStop => 'E',
            LogicalMessage::StreamCommit(_) => 'c',
            LogicalMessage::StreamAbort(_) => 'A',
            _ => '?',
        })
        .collect()
}

fn row(cache: &RelationCache, oid: u32, t: &TupleData) -> Result<Value, Error> {
    let rel = cache.get(oid).ok_or("relation not announced")?;
    Ok(Value::Object(tuple_to_json(rel, t)?.values))
}

fn relation<'a>(msgs: &'a [LogicalMessage], name: &str) -> Vec<&'a Relation> {
    msgs.iter()
        .filter_map(|m| match m {
            LogicalMessage::Relation(r) if r.name == name => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn v1_message_sequence() -> TestResult {
    let msgs = decode_all(V1, 1)?;
    let expected = [
        "BYRIC", "BUC", "BUC",
        "BDC", // items: insert, TOAST-unchanged update, key update, delete
        "BRIC", "BUC", "BDC", // full_t, REPLICA IDENTITY FULL
        "BYRIC", "BIC", // typed
        "BMIC", "M",     // transactional and non-transactional messages
        "BYRIC", // items after ALTER TABLE ADD COLUMN
        "BRTC", "BYRRTC", // TRUNCATE full_t; TRUNCATE items, full_t ... CASCADE
        "BOYRIC", // replayed from origin node_a
    ];
    assert_eq!(kinds(&msgs), expected.concat());
    Ok(())
}

#[test]
fn v1_items_toast_key_change_and_schema_change() -> TestResult {
    let msgs = decode_all(V1, 1)?;
    let mut cache = RelationCache::new();
    let mut rows = Vec::new();
    for m in &msgs {
        match m {
            LogicalMessage::Relation(r) => {
                cache.insert(r.clone());
            }
            LogicalMessage::Insert(i)
                if cache.get(i.relation_oid).is_some_and(|r| r.name == "items") =>
            {
                let rel = cache.get(i.relation_oid).ok_or("no relation")?;
                rows.push(("I", tuple_to_json(rel, &i.new)?, None));
            }
            LogicalMessage::Update(u)
                if cache.get(u.relation_oid).is_some_and(|r| r.name == "items") =>
            {
                let rel = cache.get(u.relation_oid).ok_or("no relation")?;
                let old = u
                    .old
                    .as_ref()
                    .map(|o| tuple_to_json(rel, o.tuple()))
                    .transpose()?;
                assert!(
                    matches!(u.old, None | Some(OldTuple::Key(_))),
                    "default identity sends K"
                );
                rows.push(("U", tuple_to_json(rel, &u.new)?, old));
            }
            LogicalMessage::Delete(d)
                if cache.get(d.relation_oid).is_some_and(|r| r.name == "items") =>
            {
                let rel = cache.get(d.relation_oid).ok_or("no relation")?;
                assert!(matches!(d.old, OldTuple::Key(_)));
                rows.push(("D", tuple_to_json(rel, d.old.tuple())?, None));
            }
            _ => {}
        }
    }
    let big = rows
        .first()
        .and_then(|r| r.1.values.get("big"))
        .and_then(Value::as_str);
    assert_eq!(
        big.map(str::len),
        Some(9600),
        "insert carries the whole TOASTed value"
    );

    // UPDATE items SET name = 'renamed': big is unchanged TOAST ('u').
    let (kind, new, old) = rows.get(1).ok_or("missing update")?;
    assert_eq!(*kind, "U");
    assert_eq!(old, &None, "key unchanged: no old tuple");
    assert_eq!(new.unchanged_toast, vec!["big".to_owned()]);
    assert_eq!(
        Value::Object(new.values.clone()),
        json!({"id": 1, "name": "renamed", "m": "happy"})
    );

    // UPDATE items SET id = 2: old key 'K' with only the key set.
    let (_, new, old) = rows.get(2).ok_or("missing key update")?;
    let old = old.as_ref().ok_or("key change must send the old key")?;
    assert_eq!(
        Value::Object(old.values.clone()),
        json!({"id": 1, "name": null, "big": null, "m": null})
    );
    assert_eq!(new.values.get("id"), Some(&json!(2)));

    // DELETE: old key.
    let (kind, old, _) = rows.get(3).ok_or("missing delete")?;
    assert_eq!(*kind, "D");
    assert_eq!(old.values.get("id"), Some(&json!(2)));

    // ALTER TABLE ADD COLUMN: a second Relation, the cache now has 5 columns.
    let items = relation(&msgs, "items");
    assert!(items.len() >= 2, "initial and after ALTER");
    assert_eq!(items.first().map(|r| r.columns.len()), Some(4));
    assert_eq!(items.get(1).map(|r| r.columns.len()), Some(5));
    assert_eq!(
        items
            .get(1)
            .and_then(|r| r.columns.last())
            .map(|c| c.name.as_str()),
        Some("extra")
    );
    let (_, after_alter, _) = rows.get(5).ok_or("missing insert after ALTER")?;
    assert_eq!(
        Value::Object(after_alter.values.clone()),
        json!({"id": 4, "name": "four", "big": null, "m": "ok", "extra": 44})
    );
    let first = items.first().ok_or("no items relation")?;
    assert_eq!(first.namespace, "public");
    assert_eq!(first.replica_identity, ReplicaIdentity::Default);
    assert_eq!(
        first.columns.iter().map(|c| c.is_key).collect::<Vec<_>>(),
        [true, false, false, false]
    );
    assert_eq!(
        first.columns.iter().map(|c| c.type_oid).collect::<Vec<_>>()[..3],
        [23, 25, 25]
    );
    Ok(())
}

#[test]
fn v1_replica_identity_full_sends_old_row() -> TestResult {
    let msgs = decode_all(V1, 1)?;
    let mut cache = RelationCache::new();
    let mut seen = 0;
    for m in &msgs {
        match m {
            LogicalMessage::Relation(r) => {
                if r.name == "full_t" {
                    assert_eq!(r.replica_identity, ReplicaIdentity::Full);
                }
                cache.insert(r.clone());
            }
            LogicalMessage::Update(u) => {
                if let Some(OldTuple::Full(old)) = &u.old {
                    assert_eq!(
                        row(&cache, u.relation_oid, old)?,
                        json!({"id": 1, "v": "x"})
                    );
                    assert_eq!(
                        row(&cache, u.relation_oid, &u.new)?,
                        json!({"id": 1, "v": "y"})
                    );
                    seen += 1;
                }
            }
            LogicalMessage::Delete(d) => {
                if let OldTuple::Full(old) = &d.old {
                    assert_eq!(
                        row(&cache, d.relation_oid, old)?,
                        json!({"id": 1, "v": "y"})
                    );
                    seen += 1;
                }
            }
            _ => {}
        }
    }
    assert_eq!(seen, 2);
    Ok(())
}

#[test]
fn v1_typed_row_to_json() -> TestResult {
    let msgs = decode_all(V1, 1)?;
    let mut cache = RelationCache::new();
    let mut rows = Vec::new();
    for m in &msgs {
        match m {
            LogicalMessage::Relation(r) => {
                cache.insert(r.clone());
            }
            LogicalMessage::Insert(i)
                if cache.get(i.relation_oid).is_some_and(|r| r.name == "typed") =>
            {
                rows.push(row(&cache, i.relation_oid, &i.new)?);
            }
            _ => {}
        }
    }
    let expected = json!({
        "id": 9_223_372_036_854_775_807_i64, "b": true, "i2": -32768, "i4": 2_147_483_647,
        "f4": 1.5, "f8": -0.125, "f8nan": "NaN", "f8inf": "-Infinity",
        "n": "12345678901234567890.000000000000000001",
        "t": "héllo \"wörld\"", "vc": "varchar", "bp": "ab   ", "nm": "a_name",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "j": {"k": [1, 2.5, null]}, "jb": {"a": 1, "b": {"c": true}},
        "d": "2026-11-23", "tm": "07:49:44.123", "ts": "2026-11-23T07:49:44.123",
        "tstz": "2026-11-23T07:49:44.123+00:00", "by": "3q2+7wA=",
        "a_i4": [1, null, -3],
        "a_t": ["a b", "q\"uote", "back\\slash", null, "NULL", "", "{x}"],
        "a_nested": [[1, 2], [3, 4]],
        "a_tstz": ["2026-11-23T07:49:44+00:00", "1999-12-31T23:59:59.5+00:00"],
        "a_by": ["AP8=", ""], "a_jb": [{"a": 1}, []], "a_b": [true, false],
        "a_n": ["1.10", "NaN"], "a_u": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
        "m": "ok", "iv": "1 day 02:03:04",
    });
    assert_eq!(rows.first(), Some(&expected));
    let nulls = rows.get(1).and_then(Value::as_object).ok_or("second row")?;
    assert_eq!(nulls.get("id"), Some(&json!(2)));
    assert!(
        nulls
            .iter()
            .filter(|(k, _)| *k != "id")
            .all(|(_, v)| v.is_null())
    );
    Ok(())
}

#[test]
fn v1_type_message_origin_messages_and_truncate() -> TestResult {
    let msgs = decode_all(V1, 1)?;
    let types: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            LogicalMessage::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    assert!(!types.is_empty());
    assert!(
        types
            .iter()
            .all(|t| t.name == "mood" && t.namespace == "public" && t.xid.is_none())
    );
    let mood_oid = types.first().map(|t| t.oid);
    let items = relation(&msgs, "items");
    assert_eq!(
        items
            .first()
            .and_then(|r| r.columns.get(3))
            .map(|c| c.type_oid),
        mood_oid
    );

    let origins: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            LogicalMessage::Origin(o) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(origins.len(), 1);
    assert_eq!(origins.first().map(|o| o.name.as_str()), Some("node_a"));
    assert_eq!(
        origins.first().map(|o| o.commit_lsn.to_string()),
        Some("0/12345678".into())
    );

    let messages: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            LogicalMessage::Message(m) => {
                Some((m.transactional, m.prefix.as_str(), &m.content[..]))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        [
            (true, "walcast", &b"in a transaction"[..]),
            (false, "walcast", &b"not transactional"[..])
        ]
    );

    let truncates: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            LogicalMessage::Truncate(t) => {
                Some((t.cascade, t.restart_identity, t.relation_oids.len()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(truncates, [(false, false, 1), (true, true, 2)]);

    // Begin/Commit agree and LSNs are ordered.
    let mut last_end = Lsn::ZERO;
    let mut open = None;
    for m in &msgs {
        match m {
            LogicalMessage::Begin(b) => open = Some(b.final_lsn),
            LogicalMessage::Commit(c) => {
                assert_eq!(open.take(), Some(c.commit_lsn));
                assert!(c.end_lsn > c.commit_lsn && c.end_lsn > last_end);
                last_end = c.end_lsn;
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn v1_binary_values() -> TestResult {
    let msgs = decode_all(V1_BINARY, 1)?;
    let mut cache = RelationCache::new();
    let mut binary = 0;
    for m in &msgs {
        match m {
            LogicalMessage::Relation(r) => {
                cache.insert(r.clone());
            }
            LogicalMessage::Insert(i) => {
                let n = i
                    .new
                    .columns
                    .iter()
                    .filter(|v| matches!(v, TupleValue::Binary(_)))
                    .count();
                binary += n;
                if n > 0 {
                    let rel = cache.get(i.relation_oid).ok_or("no relation")?;
                    assert!(
                        tuple_to_json(rel, &i.new).is_err(),
                        "binary values are refused"
                    );
                }
            }
            _ => {}
        }
    }
    assert!(binary > 0);
    // items.id = 1 as a big-endian int4.
    let first_insert = msgs.iter().find_map(|m| match m {
        LogicalMessage::Insert(i) => i.new.columns.first().cloned(),
        _ => None,
    });
    assert_eq!(
        first_insert,
        Some(TupleValue::Binary(bytes::Bytes::from_static(&[0, 0, 0, 1])))
    );
    Ok(())
}

#[test]
fn v2_streamed_transactions() -> TestResult {
    let msgs = decode_all(V2_STREAM, 2)?;
    let v1_part = decode_all(V1, 1)?;
    assert_eq!(
        msgs.get(..v1_part.len()),
        Some(&v1_part[..]),
        "unstreamed part is the same as v1"
    );

    let mut current: Option<u32> = None;
    let mut inserts_per_xid = std::collections::BTreeMap::<u32, usize>::new();
    let mut commits = Vec::new();
    let mut aborts = Vec::new();
    let mut streamed_kinds = String::new();
    // Changes made in a subtransaction carry the subtransaction's xid.
    let mut subxact_changes = Vec::new();
    for m in &msgs[v1_part.len()..] {
        let xid = match m {
            LogicalMessage::StreamStart(s) => {
                assert_eq!(current, None);
                current = Some(s.xid);
                None
            }
            LogicalMessage::StreamStop => {
                assert!(current.take().is_some());
                None
            }
            LogicalMessage::StreamCommit(c) => {
                assert!(c.end_lsn > c.commit_lsn);
                commits.push(c.xid);
                None
            }
            LogicalMessage::StreamAbort(a) => {
                assert_eq!(
                    (a.abort_lsn, a.abort_time),
                    (None, None),
                    "PG15 sends no abort LSN"
                );
                aborts.push((a.xid, a.subxid));
                None
            }
            LogicalMessage::Insert(i) => {
                *inserts_per_xid.entry(i.xid.unwrap_or(0)).or_default() += 1;
                i.xid
            }
            LogicalMessage::Update(u) => u.xid,
            LogicalMessage::Delete(d) => d.xid,
            LogicalMessage::Truncate(t) => t.xid,
            LogicalMessage::Relation(r) => r.xid,
            LogicalMessage::Type(t) => t.xid,
            LogicalMessage::Message(m) => m.xid,
            other => return Err(format!("unexpected in stream: {other:?}").into()),
        };
        if let Some(x) = xid {
            if Some(x) != current {
                subxact_changes.push(x);
            }
        } else if current.is_some() {
            assert!(
                matches!(m, LogicalMessage::StreamStart(_)),
                "changes in a block carry an xid"
            );
        }
        if current.is_some() {
            streamed_kinds.push_str(&kinds(std::slice::from_ref(m)));
        }
    }
    for k in ['M', 'Y', 'R', 'I', 'U', 'D', 'T'] {
        assert!(streamed_kinds.contains(k), "{k} inside a stream block");
    }
    assert_eq!(commits.len(), 2);
    assert_eq!(aborts.len(), 2);
    let (rolled_back, savepoint) = (aborts[0], aborts[1]);
    assert_eq!(rolled_back.0, rolled_back.1, "whole transaction aborted");
    assert_ne!(savepoint.0, savepoint.1, "subtransaction aborted");
    assert_eq!(
        commits.get(1),
        Some(&savepoint.0),
        "its top level committed"
    );
    assert_eq!(inserts_per_xid.get(&commits[0]), Some(&500));
    // Only what was streamed before the ROLLBACK is ever sent.
    assert!(
        inserts_per_xid
            .get(&rolled_back.0)
            .is_some_and(|n| (1..500).contains(n))
    );
    Ok(())
}

#[test]
fn v2_stream_messages_need_protocol_v2() -> TestResult {
    assert!(decode_all(V2_STREAM, 1).is_err());
    Ok(())
}

/// Every strict prefix of a real message is an error, never a panic.
#[test]
fn truncated_real_messages_are_errors() -> TestResult {
    for (fixture, version, limit) in [(V1, 1, usize::MAX), (V2_STREAM, 2, 200)] {
        let lines = load(fixture)?;
        let mut decoder = Decoder::new(version);
        let skip = lines.len().saturating_sub(limit);
        for (i, (_, data)) in lines.iter().enumerate() {
            let state = decoder;
            decoder.decode(data)?;
            if i < skip && version == 2 {
                continue;
            }
            // The 9600-byte TOAST insert: test a sample of cut points.
            let step = (data.len() / 512).max(1);
            for cut in (0..data.len()).step_by(step) {
                let mut d = state;
                assert!(
                    d.decode(&data[..cut]).is_err(),
                    "prefix {cut} of message {i}"
                );
                assert_eq!(d, state);
            }
        }
    }
    Ok(())
}
