//! The replication connection is terminated while a large transaction is half published: the
//! server sends that transaction again from its Begin, and the confirmed position must still
//! pass it (and everything after it) within seconds.

use std::time::Duration;

use walcast_source::metrics;

use crate::support::kafka::TopicReader;
use crate::support::{InProcess, TestDb, blocking, config_file, load_config, ok, wait_until_async};

/// Rows of the large transaction: big enough that it is reliably in flight when the
/// connection is cut.
const ROWS: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_transaction_does_not_stall_the_slot() {
    let kafka = crate::support::shared_kafka();
    let brokers = kafka.bootstrap();
    let db = TestDb::new("midtxn");
    db.prepare().await;
    let dir = ok(tempfile::tempdir());
    let source = InProcess::start(load_config(&config_file(dir.path(), &db, &brokers, "", "")));
    assert!(db.streams_within(Duration::from_secs(60)).await);

    db.exec(&format!(
        "INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
         SELECT gen_random_uuid(), \
                ('00000000-0000-4000-8000-' || lpad(to_hex(g % 97), 12, '0'))::uuid, \
                'Big', now(), jsonb_build_object('n', g, 'pad', repeat('x', 200)) \
         FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    // Cut the walsender once part of the transaction is published.
    let started = wait_until_async(
        "5,000 events published",
        Duration::from_secs(60),
        || async { source.metric(metrics::EVENTS_PUBLISHED) >= 5_000.0 },
    )
    .await
    .is_ok();
    assert!(started, "the large transaction was not being published");
    let terminated = db
        .query_text(&format!(
            "SELECT pg_terminate_backend(active_pid)::text FROM pg_replication_slots \
             WHERE slot_name = '{}'",
            db.slot
        ))
        .await;
    let published_at_cut = source.metric(metrics::EVENTS_PUBLISHED);
    assert_eq!(terminated.as_deref(), Some("true"));
    assert!(
        published_at_cut < ROWS as f64,
        "the cut must land inside the transaction ({published_at_cut} of {ROWS} already published)"
    );

    // One small transaction after it: the slot must confirm past it.
    db.exec(
        "INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
         VALUES (gen_random_uuid(), '00000000-0000-4000-8000-0000000000ff', 'Small', now(), '{}')",
    )
    .await;
    let after_small = db.current_lsn().await;
    let confirmed = wait_until_async(
        "the slot confirmed past the small transactions",
        Duration::from_secs(120),
        || async { db.slot_confirmed().await >= after_small },
    )
    .await
    .is_ok();
    assert!(
        confirmed,
        "the slot's confirmed_flush_lsn {} never passed {after_small} (the transaction cut \
         mid-stream was sent again and the source must confirm it)",
        db.slot_confirmed().await
    );

    let topic = db.topic.clone();
    let reader = blocking(move || {
        let mut reader = TopicReader::new(&brokers, &topic);
        reader.until_ids(ROWS + 1, Duration::from_secs(120));
        reader
    })
    .await;
    assert_eq!(reader.distinct(), ROWS + 1, "every event is on the topic");
    assert!(source.health.is_ready(), "ready once the slot moves again");
    assert!(!source.is_finished());
    ok(source.stop().await);
    db.drop_slot().await;
}
