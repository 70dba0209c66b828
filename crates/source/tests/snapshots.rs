//! Snapshots: existing rows become one event each when the source first creates its slot
//! (`[snapshot] initial = true`), with their progress on the progress topic; a snapshot table
//! the source cannot snapshot is refused at start-up.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use walcast_kafka::snapshots::Status;
use walcast_source::{metrics, record};

use crate::startup::start_error;
use crate::support::kafka::TopicReader;
use crate::support::snapshot::{
    initial_id, prepare_with_products, products_config, products_section, progress, wait_final,
};
use crate::support::{InProcess, TestDb, blocking, config_file, load_config, ok, shared_kafka};

const ROWS: usize = 20_000;
const CHUNK: u32 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_snapshot_emits_one_event_per_existing_row_and_completes() {
    let kafka = shared_kafka();
    let brokers = kafka.bootstrap();
    let db = TestDb::new("snapinit");
    prepare_with_products(&db, ROWS).await;
    let dir = ok(tempfile::tempdir());
    let path = products_config(dir.path(), &db, &brokers, CHUNK, 0);
    let source = InProcess::start(load_config(&path));

    let id = initial_id(&db);
    let state = wait_final(&brokers, &db, &id, Duration::from_secs(180)).await;
    assert_eq!(state.status, Status::Completed, "{state:?}");
    assert_eq!(state.requested_by, "initial");
    // Read before the first chunk, on an empty topic of 3 partitions.
    assert_eq!(
        state.start_offsets,
        BTreeMap::from([(0, 0), (1, 0), (2, 0)])
    );
    let t = &state.tables[0];
    assert_eq!(t.table, "public.products");
    assert!(t.done && t.rows == ROWS as u64, "{t:?}");
    assert_eq!(t.chunks, ROWS as u64 / u64::from(CHUNK));
    let took_ms = state.completed_at_ms.unwrap() - state.requested_at_ms;
    eprintln!(
        "initial snapshot: {ROWS} rows in {took_ms} ms from the request (slot creation included)"
    );
    assert_eq!(
        source.metric(metrics::SNAPSHOT_ROWS),
        ROWS as f64,
        "rows counted at acknowledgement"
    );

    let (b, topic) = (brokers.clone(), db.topic.clone());
    let records = blocking(move || {
        let mut reader = TopicReader::new(&b, &topic);
        assert!(reader.until_ids(ROWS, Duration::from_secs(120)));
        reader.read_to_end(Duration::from_secs(60));
        reader.records
    })
    .await;
    assert_eq!(records.len(), ROWS, "exactly one record per row");

    // Every product once, keyed by its id; the record says what the row says.
    let client = db.client().await;
    let rows = ok(client
        .query(
            "SELECT id::text, sku, description, price::text, is_active, version, \
                    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
             FROM products",
            &[],
        )
        .await);
    let by_key: BTreeMap<&str, _> = records
        .iter()
        .map(|r| (r.key.as_deref().unwrap_or(""), r))
        .collect();
    assert_eq!(by_key.len(), ROWS);
    let mut ids = HashSet::new();
    for row in &rows {
        let key: String = row.get(0);
        let r = by_key
            .get(key.as_str())
            .unwrap_or_else(|| panic!("no record for {key}"));
        assert_eq!(r.header(record::EVENT_TYPE), Some("ProductSnapshot"));
        assert_eq!(r.header(record::SNAPSHOT), Some(id.as_str()));
        let occurred: String = row.get(6);
        assert_eq!(r.header(record::OCCURRED_AT), Some(occurred.as_str()));
        for absent in [
            record::LSN,
            record::COMMIT_LSN,
            record::XID,
            record::COMMIT_TS,
        ] {
            assert!(r.header(absent).is_none(), "{absent} on a snapshot record");
        }
        let event_id = ok(uuid_v5(r.id()));
        assert!(ids.insert(event_id), "ids are unique per row state");
        let v: serde_json::Value = ok(serde_json::from_slice(r.value.as_deref().unwrap()));
        assert_eq!(v["productId"], key.as_str());
        assert_eq!(v["sku"], row.get::<_, String>(1).as_str());
        match row.get::<_, Option<String>>(2) {
            Some(d) => assert_eq!(v["description"], d.as_str()),
            None => assert!(v["description"].is_null()),
        }
        assert_eq!(
            v["price"],
            row.get::<_, String>(3).as_str(),
            "exact, as a string"
        );
        assert_eq!(v["isActive"], row.get::<_, bool>(4));
        assert_eq!(v["version"], row.get::<_, i32>(5));
        assert!(v["createdAt"].is_string() && v["updatedAt"].is_string());
    }
    assert!(source.stop().await.is_ok());

    // A restart knows the snapshot: nothing is emitted again.
    let source = InProcess::start(load_config(&path));
    assert!(db.streams_within(Duration::from_secs(60)).await);
    let states = progress(&brokers, &db).await;
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(source.stop().await.is_ok());
    let (b, topic) = (brokers.clone(), db.topic.clone());
    let again = blocking(move || {
        let mut reader = TopicReader::new(&b, &topic);
        reader.read_to_end(Duration::from_secs(60));
        reader.records.len()
    })
    .await;
    assert_eq!(again, ROWS);
    db.drop_slot().await;
}

/// The id header is a UUID v5 (name-based, deterministic).
fn uuid_v5(text: &str) -> Result<String, String> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let ok = hex.len() == 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && text.chars().nth(14) == Some('5');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!("id {text} is not a UUID v5"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_table_without_a_version_column_or_a_unique_key_is_refused_at_start() {
    let kafka = shared_kafka();
    let db = TestDb::new("snapnover");
    db.exec(crate::support::WRITE_SQL).await;
    db.exec("ALTER TABLE products DROP COLUMN version").await;
    db.exec(&format!(
        "CREATE PUBLICATION {} FOR TABLE public.outbox_messages",
        db.publication
    ))
    .await;
    let dir = ok(tempfile::tempdir());
    let path = products_config(dir.path(), &db, &kafka.bootstrap(), 100, 0);
    let text = start_error(InProcess::start(load_config(&path))).await;
    assert!(
        text.contains("public.products")
            && text.contains("no column \"version\"")
            && text.contains("ADD COLUMN version")
            && text.contains("same transaction as its outbox row"),
        "{text}"
    );
    // Refused before anything was created.
    let slot = db
        .query_text(&format!(
            "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = '{}'",
            db.slot
        ))
        .await;
    assert_eq!(slot, None);

    // A key that is not unique would skip rows at chunk boundaries: refused too.
    db.exec("ALTER TABLE products ADD COLUMN version int NOT NULL DEFAULT 0")
        .await;
    let section = products_section(true, 100, 0).replace("key = \"id\"", "key = \"name\"");
    let path = config_file(dir.path(), &db, &kafka.bootstrap(), "", &section);
    let text = start_error(InProcess::start(load_config(&path))).await;
    assert!(
        text.contains("key column \"name\"") && text.contains("name the primary key"),
        "{text}"
    );
}
