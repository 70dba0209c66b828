//! Every pgoutput message kind end to end, values, TOAST, replica identity,
//! TRUNCATE and schema changes mid-stream.

use std::time::Duration;

use serde_json::json;
use walcast_replication::{ChangeStream, Event, Op};

use crate::support::{TestDb, changes, collect_txns, json, next_event, ok, shared_pg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_kind_end_to_end() {
    let db = TestDb::new(shared_pg(), "kinds");
    db.exec(
        "CREATE TYPE mood AS ENUM ('ok', 'meh');
         CREATE TABLE items (id int PRIMARY KEY, name text, m mood);
         CREATE TABLE other (id int PRIMARY KEY);",
    )
    .await;
    let mut stream = ok(ChangeStream::start(db.stream_config(&["items", "other"])).await);
    db.each(&[
        "BEGIN;
         INSERT INTO items VALUES (1, 'a', 'ok');
         UPDATE items SET name = 'b' WHERE id = 1;
         SELECT pg_logical_emit_message(true, 'walcast', 'in txn');
         DELETE FROM items WHERE id = 1;
         COMMIT;",
        "SELECT pg_logical_emit_message(false, 'walcast', 'standalone')",
        "INSERT INTO other VALUES (1)",
        "TRUNCATE items, other",
        "SELECT pg_replication_origin_create('kinds_origin')",
        "SELECT pg_replication_origin_session_setup('kinds_origin')",
        "INSERT INTO other VALUES (2)",
        "SELECT pg_replication_origin_session_reset()",
    ])
    .await;
    // txn 1, the standalone message (no txn), insert, truncate, origin insert.
    let mut events = collect_txns(&mut stream, 1).await;
    let standalone = next_event(&mut stream, Duration::from_secs(30)).await;
    events.extend(collect_txns(&mut stream, 3).await);

    let Event::Begin(begin) = &events[0] else {
        panic!("first event is not Begin: {:?}", events[0])
    };
    let Event::Commit(commit) = &events[5] else {
        panic!("sixth event is not Commit: {:?}", events[5])
    };
    assert_eq!(begin.commit_lsn, commit.commit_lsn);
    assert!(commit.end_lsn > commit.commit_lsn);
    assert_eq!(begin.xid, commit.xid);

    let c = changes(&events);
    let ops: Vec<Op> = c.iter().map(|c| c.op).collect();
    assert_eq!(
        ops,
        [
            Op::Insert,
            Op::Update,
            Op::Message,
            Op::Delete,
            Op::Insert,
            Op::Truncate,
            Op::Truncate,
            Op::Insert
        ]
    );
    let insert = json(c[0]);
    assert_eq!(insert["schema"], "public");
    assert_eq!(insert["table"], "items");
    assert_eq!(insert["new"], json!({"id": 1, "name": "a", "m": "ok"}));
    assert_eq!(insert["old"], serde_json::Value::Null);
    assert_eq!(insert["xid"], json!(begin.xid));
    assert_eq!(insert["commit_lsn"], json!(begin.commit_lsn.to_string()));
    assert_eq!(insert["commit_ts"], json!(begin.commit_ts));
    let commit_ts = begin.commit_ts.to_string();
    assert!(commit_ts.ends_with('Z') && commit_ts.contains('T'));
    assert_eq!(json(c[1])["new"], json!({"id": 1, "name": "b", "m": "ok"}));
    assert_eq!(
        json(c[2])["new"],
        json!({"prefix": "walcast", "content": "in txn", "transactional": true})
    );
    assert_eq!(json(c[3])["old"], json!({"id": 1}));
    assert_eq!(json(c[3])["new"], serde_json::Value::Null);
    assert!(c[0].lsn < c[1].lsn && c[1].lsn < c[3].lsn);
    let tables: Vec<_> = c[5..7]
        .iter()
        .map(|c| c.table.clone().unwrap_or_default())
        .collect();
    assert_eq!(tables, ["items", "other"]);
    assert_eq!(
        json(c[7])["new"],
        json!({"id": 2}),
        "insert after an Origin message"
    );

    let Event::Change(m) = &standalone else {
        panic!("expected the standalone message, got {standalone:?}")
    };
    assert_eq!(m.op, Op::Message);
    assert_eq!(m.xid, None);
    assert_eq!(m.commit_ts, None);
    assert_eq!(
        json(m)["new"],
        json!({"prefix": "walcast", "content": "standalone", "transactional": false})
    );
    ok(stream.confirm(m.commit_lsn).await);
    ok(stream.close().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_every_type_and_nulls() {
    let db = TestDb::new(shared_pg(), "types");
    db.exec(
        "SET TIME ZONE 'UTC';
         CREATE TABLE t (
            id int PRIMARY KEY, b bool, i2 int2, i8 int8, f4 float4, f8 float8, n numeric,
            tx text, vc varchar(10), ch char(3), by bytea, d date, tm time, ttz timetz,
            ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb, o oid,
            ia int4[], ta text[], iv interval, fnan float8);",
    )
    .await;
    let mut stream = ok(ChangeStream::start(db.stream_config(&["t"])).await);
    db.each(&[
        "INSERT INTO t VALUES (1, true, -2, 9007199254740993, 1.5, -2.25, 12345.678900,
            'hé \"q\"', 'vc', 'ab', '\\x00ff10', '2024-02-29', '13:14:15.5', '01:02:03+02',
            '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            '{\"a\": [1, 2]}', '{\"b\": null}', 42, '{1,NULL,3}', '{\"x y\",z}', '1 day 02:00:00', 'NaN')",
        "INSERT INTO t (id) VALUES (2)",
    ])
    .await;
    let events = collect_txns(&mut stream, 2).await;
    let c = changes(&events);
    let row = json(c[0])["new"].clone();
    let expect = json!({
        "id": 1, "b": true, "i2": -2, "i8": 9007199254740993i64, "f4": 1.5, "f8": -2.25,
        "n": "12345.678900", "tx": "hé \"q\"", "vc": "vc", "ch": "ab ", "by": "AP8Q",
        "d": "2024-02-29", "tm": "13:14:15.5", "ttz": "01:02:03+02:00",
        "ts": "2024-01-02T03:04:05.123456", "tstz": "2024-01-02T03:04:05+00:00",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "j": {"a": [1, 2]}, "jb": {"b": null},
        "o": 42, "ia": [1, null, 3], "ta": ["x y", "z"], "iv": "1 day 02:00:00", "fnan": "NaN"
    });
    for (k, v) in expect.as_object().into_iter().flatten() {
        assert_eq!(&row[k], v, "column {k}");
    }
    let nulls = json(c[1])["new"].clone();
    for (k, v) in nulls.as_object().into_iter().flatten() {
        if k != "id" {
            assert_eq!(v, &serde_json::Value::Null, "column {k} of the NULL row");
        }
    }
    assert_eq!(nulls.as_object().map(|o| o.len()), Some(24));
    ok(stream.close().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_is_listed_not_sent() {
    let db = TestDb::new(shared_pg(), "toast");
    db.exec("CREATE TABLE docs (id int PRIMARY KEY, body text, hits int)")
        .await;
    let mut stream = ok(ChangeStream::start(db.stream_config(&["docs"])).await);
    db.each(&[
        "INSERT INTO docs SELECT 1, string_agg(md5(i::text), ''), 0 FROM generate_series(1, 400) i",
        "UPDATE docs SET hits = 1 WHERE id = 1",
    ])
    .await;
    let events = collect_txns(&mut stream, 2).await;
    let c = changes(&events);
    let inserted = json(c[0]);
    assert_eq!(inserted["new"]["body"].as_str().map(str::len), Some(12_800));
    assert_eq!(inserted["unchanged_toast"], json!([]));
    let updated = json(c[1]);
    assert_eq!(updated["new"], json!({"id": 1, "hits": 1}));
    assert_eq!(updated["unchanged_toast"], json!(["body"]));
    ok(stream.close().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_default_vs_full() {
    let db = TestDb::new(shared_pg(), "ident");
    db.exec(
        "CREATE TABLE d (id int PRIMARY KEY, v text);
         CREATE TABLE f (id int PRIMARY KEY, v text);
         ALTER TABLE f REPLICA IDENTITY FULL;
         INSERT INTO d VALUES (1, 'x'); INSERT INTO f VALUES (1, 'x');",
    )
    .await;
    let mut stream = ok(ChangeStream::start(db.stream_config(&["d", "f"])).await);
    db.each(&[
        "UPDATE d SET v = 'y' WHERE id = 1",
        "UPDATE d SET id = 2 WHERE id = 1",
        "DELETE FROM d WHERE id = 2",
        "UPDATE f SET v = 'y' WHERE id = 1",
        "DELETE FROM f WHERE id = 1",
    ])
    .await;
    let events = collect_txns(&mut stream, 5).await;
    let c: Vec<_> = changes(&events).into_iter().map(json).collect();
    assert_eq!(
        c[0]["old"],
        serde_json::Value::Null,
        "DEFAULT, key unchanged: no old row"
    );
    assert_eq!(
        c[1]["old"],
        json!({"id": 1}),
        "DEFAULT, key changed: old key"
    );
    assert_eq!(c[1]["new"], json!({"id": 2, "v": "y"}));
    assert_eq!(c[2]["old"], json!({"id": 2}), "DEFAULT delete: key only");
    assert_eq!(
        c[3]["old"],
        json!({"id": 1, "v": "x"}),
        "FULL: whole old row"
    );
    assert_eq!(c[3]["new"], json!({"id": 1, "v": "y"}));
    assert_eq!(
        c[4]["old"],
        json!({"id": 1, "v": "y"}),
        "FULL delete: whole row"
    );
    ok(stream.close().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_table_add_column_mid_stream() {
    let db = TestDb::new(shared_pg(), "alter");
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let mut stream = ok(ChangeStream::start(db.stream_config(&["t"])).await);
    db.each(&[
        "INSERT INTO t VALUES (1)",
        "ALTER TABLE t ADD COLUMN note text DEFAULT 'n'",
        "INSERT INTO t VALUES (2, 'added')",
        "ALTER TABLE t DROP COLUMN note",
        "INSERT INTO t VALUES (3)",
    ])
    .await;
    let events = collect_txns(&mut stream, 3).await;
    let c: Vec<_> = changes(&events)
        .into_iter()
        .map(|c| json(c)["new"].clone())
        .collect();
    assert_eq!(
        c,
        [
            json!({"id": 1}),
            json!({"id": 2, "note": "added"}),
            json!({"id": 3})
        ]
    );
    ok(stream.close().await);
    db.drop_slot().await;
}
