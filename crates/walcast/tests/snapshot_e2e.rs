//! Existing data through the whole pipeline: products written before walcast first starts
//! reach a fresh target through the initial snapshot while live updates and deletes of those
//! products go on, and the target ends equal to the write database. A second snapshot of the
//! now current system changes no row of the target.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use walcast_kafka::snapshots::{self, SnapshotState, Status, TableProgress};
use walcast_testkit::{TomlValue, wait_until};

use crate::support::free_port;
use crate::support::pipeline::*;

const PRODUCTS: usize = 3_000;

/// The write model's rows, as the read model keeps them.
const WRITE_ROWS: &str = "SELECT concat_ws('|', id, sku, name, coalesce(description, '∅'), price, \
     currency, is_active, version, updated_at) FROM products ORDER BY id";
const READ_ROWS: &str = "SELECT concat_ws('|', product_id, sku, name, coalesce(description, '∅'), \
     price, currency, is_active, version, occurred_at) FROM catalog_product_read ORDER BY product_id";

/// One live write in its own transaction, as the catalog's write API makes it: the row and
/// its outbox event, `updated_at` = `occurred_at` = the transaction's `now()`.
fn live_write(write: &Db, n: usize) {
    let id = format!("md5('{}')::uuid", 1 + (n * 7919) % PRODUCTS);
    let sql = if n % 10 == 9 {
        format!(
            "WITH d AS (DELETE FROM products WHERE id = {id} RETURNING id, version) \
             INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
             SELECT gen_random_uuid(), id, 'ProductDeleted', now(), \
                    jsonb_build_object('productId', id, 'version', version + 1) FROM d"
        )
    } else {
        format!(
            "WITH u AS (UPDATE products SET price = price + 1, version = version + 1, \
                        updated_at = now() WHERE id = {id} RETURNING id, price, currency, version) \
             INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
             SELECT gen_random_uuid(), id, 'ProductPriceChanged', now(), \
                    jsonb_build_object('productId', id, 'price', price::text, \
                                       'currency', currency, 'version', version) FROM u"
        )
    };
    write.psql(&sql);
}

/// Asks for a snapshot the way every trigger does: a `requested` state on the progress topic
/// (the source picks it up when it starts).
fn request_snapshot(topic: &str, id: &str) {
    let now = 1;
    let state = SnapshotState {
        id: id.into(),
        topic: topic.into(),
        status: Status::Requested,
        tables: vec![TableProgress {
            table: "public.products".into(),
            last_key: None,
            rows: 0,
            chunks: 0,
            estimated_rows: None,
            done: false,
        }],
        start_offsets: Default::default(),
        requested_by: "test".into(),
        requested_at_ms: now,
        updated_at_ms: now,
        completed_at_ms: None,
        reason: None,
    };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .create()
        .unwrap();
    let value = state.encode();
    producer
        .send(
            BaseRecord::to(&snapshots::default_topic(topic))
                .key(id)
                .payload(&value),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn final_state(topic: &str, id: &str) -> Option<SnapshotState> {
    let properties = Default::default();
    let states = rt()
        .block_on(snapshots::read_all(
            walcast_kafka::ClientSettings::new(&kafka().bootstrap(), &properties),
            &snapshots::default_topic(topic),
            Duration::from_secs(30),
        ))
        .unwrap();
    states.get(id).filter(|s| s.status.is_final()).cloned()
}

fn wait_completed(topic: &str, id: &str, source: &walcast_testkit::Service) -> SnapshotState {
    let done = wait_until("the snapshot final", Duration::from_secs(180), || {
        final_state(topic, id).is_some()
    });
    assert!(done.is_ok(), "snapshot {id} not final:\n{}", source.log());
    let state = final_state(topic, id).unwrap();
    assert_eq!(state.status, Status::Completed, "{state:?}");
    state
}

#[test]
fn initial_snapshot_with_live_writes_makes_a_fresh_target_equal_and_a_second_changes_nothing() {
    let write = Db::new("snape2e_write");
    write.psql(WRITE_SQL);
    write.psql(&format!(
        "INSERT INTO products (id, sku, name, description, price, currency, is_active, \
                               updated_at, version) \
         SELECT md5(i::text)::uuid, 'sku-' || i, 'product ' || i, \
                CASE WHEN i % 3 = 0 THEN NULL ELSE 'about ' || i END, (i % 100) + 0.25, 'EUR', \
                i % 4 <> 0, now() - i * interval '1 second', 1 + i % 3 \
         FROM generate_series(1, {PRODUCTS}) i"
    ));
    let read = Db::new("snape2e_read");
    let names = Names::for_db(&write);
    let dir = tempfile::tempdir().unwrap();

    // A fresh target, consuming before the source starts.
    let admin = free_port();
    let sink_cfg = sink_config(
        dir.path(),
        &names.topic,
        &[("catalog_read", read.dsn())],
        admin,
    );
    let mut sink = spawn("sink", &["sink", "--config", path_str(&sink_cfg)]);

    // The shipped source file: initial = true, products as ProductSnapshot. Small, throttled
    // chunks so the live writes interleave with the snapshot's reads.
    let source_cfg = source_config(
        dir.path(),
        &write,
        &names,
        &[
            (&["snapshot", "chunk_size"], TomlValue::from(250)),
            (&["snapshot", "max_rows_per_sec"], TomlValue::from(600)),
        ],
    );
    let mut source = streaming_source(&source_cfg);
    let ready = wait_until("the sink ready", Duration::from_secs(90), || {
        http_get(admin, "/ready").0 == 200
    });
    assert!(ready.is_ok(), "sink not ready:\n{}", sink.log());

    // Live updates and deletes of snapshotted products while the snapshot runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let write = Db {
            name: write.name.clone(),
        };
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 600 {
                live_write(&write, n);
                n += 1;
            }
            n
        })
    };
    let initial = format!("initial-{}", names.slot);
    let first = wait_completed(&names.topic, &initial, &source);
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    eprintln!(
        "snapshot: {} rows in {} chunks; {writes} live writes",
        first.rows(),
        first.tables[0].chunks
    );
    assert!(writes >= 20, "live writes during the snapshot: {writes}");

    let equal = wait_until(
        "the target equal to the write DB",
        Duration::from_secs(120),
        || read.psql(READ_ROWS) == write.psql(WRITE_ROWS),
    );
    assert!(
        equal.is_ok(),
        "target differs from the write DB\nsink log:\n{}",
        sink.log()
    );

    // A second snapshot of the current system: every row's position is already applied.
    let xmins = "SELECT string_agg(product_id::text || ':' || xmin::text, ',' ORDER BY product_id) \
                 FROM catalog_product_read";
    let before = read.psql(xmins);
    assert!(source.stop(), "source stop:\n{}", source.log());
    request_snapshot(&names.topic, "second");
    let mut source = streaming_source(&source_cfg);
    let second = wait_completed(&names.topic, "second", &source);
    assert_eq!(
        second.rows() as usize,
        read.psql("SELECT count(*) FROM catalog_product_read")
            .parse::<usize>()
            .unwrap()
    );
    let end = stored_end(&names.topic);
    read.wait_offsets(end, Duration::from_secs(120), &sink);
    assert_eq!(read.psql(xmins), before, "the second snapshot rewrote rows");
    assert_eq!(read.psql(READ_ROWS), write.psql(WRITE_ROWS));
    assert!(source.stop());
    assert!(sink.stop());
}

/// The end offset of the topic's one partition.
fn stored_end(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap())
        .create()
        .unwrap();
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap()
        .1
}
