//! Topics the broker refuses or limits never stop the source: a refused or capped template
//! topic dead-letters its rows with the reason, and a topic whose `max.message.bytes` is
//! below the client's limit dead-letters only the records above it.

use std::time::Duration;

use walcast_source::record;
use walcast_testkit::Kafka;

use crate::dead_letters::{
    AGG, TEXT_OUTBOX, expect, insert, read, template_config, template_config_on,
};
use crate::support::kafka::Received;
use crate::support::{
    InProcess, TestDb, blocking, ok, shared_kafka, start_source, wait_until_async,
};

/// Writes one event per type, in order (ids 1, 2, ...).
async fn write_types(db: &TestDb, types: &[&str]) {
    let agg = format!("'{AGG}'");
    for (n, t) in types.iter().enumerate() {
        db.exec(&insert(n as u32 + 1, &agg, &format!("'{t}'"), "'{}'"))
            .await;
    }
}

/// Reads `<db>.ev.<type>` for each `(type, records)` and the DLQ (`dead` records).
async fn read_all(
    db: &TestDb,
    types: &[(&str, usize)],
    dead: usize,
    source: InProcess,
) -> (Vec<Vec<Received>>, Vec<Received>, InProcess) {
    let brokers = shared_kafka().bootstrap();
    let name = db.name.clone();
    let types: Vec<(String, usize)> = types.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect();
    let got = blocking(move || {
        let mut out = Vec::new();
        for (t, n) in types {
            out.push(read(brokers.clone(), format!("{name}.ev.{t}"), n)?);
        }
        Ok((out, read(brokers, format!("{name}.tpl.dlq"), dead)?))
    })
    .await;
    let ((events, dead), source) = expect(got, source).await;
    (events, dead, source)
}

fn kind_and_error(d: &Received) -> (&str, &str) {
    (
        d.header(record::ERROR_KIND).unwrap_or(""),
        d.header(record::ERROR).unwrap_or(""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_name_that_collides_is_dead_lettered_with_the_brokers_reason() {
    let db = TestDb::new("collide");
    db.prepare_with(TEXT_OUTBOX).await;
    let source = InProcess::start(template_config(&db, ""));
    // `A.B` and `A_B` are the same name to Kafka's metric names: the second is refused.
    write_types(&db, &["A.B", "A_B", "Good"]).await;
    let (events, dead, source) = read_all(&db, &[("A.B", 1), ("Good", 1)], 1, source).await;
    assert_eq!(events[0][0].id(), "00000000-0000-4000-8000-000000000001");
    assert_eq!(events[1][0].id(), "00000000-0000-4000-8000-000000000003");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id(), "00000000-0000-4000-8000-000000000002");
    let (kind, error) = kind_and_error(&dead[0]);
    assert_eq!(kind, "topic_refused", "{error}");
    assert!(error.contains("collides"), "the broker's reason: {error}");
    assert_eq!(
        dead[0].header(record::ORIGINAL_TOPIC),
        Some(format!("{}.ev.A_B", db.name).as_str())
    );
    ok(source.stop().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_topics_and_the_allow_list_bound_template_topics() {
    let db = TestDb::new("maxtopics");
    db.prepare_with(TEXT_OUTBOX).await;
    let allow = format!(
        "max_topics = 1\ntopic_allow = [\"{name}.ev.Al*\", \"{name}.ev.Be*\"]\n",
        name = db.name
    );
    let source = InProcess::start(template_config(&db, &allow));
    // Alpha creates the one topic allowed; Beta would be a second; Gamma is not on the list.
    write_types(&db, &["Alpha", "Beta", "Gamma", "Alpha"]).await;
    let (events, mut dead, source) = read_all(&db, &[("Alpha", 2)], 2, source).await;
    assert_eq!(events[0].len(), 2);
    dead.sort_by(|a, b| a.id().cmp(b.id()));
    assert_eq!(dead.len(), 2);
    let (kind, error) = kind_and_error(&dead[0]);
    assert_eq!(
        (dead[0].id(), kind),
        ("00000000-0000-4000-8000-000000000002", "too_many_topics"),
        "{error}"
    );
    assert!(error.contains("max_topics = 1"), "{error}");
    let (kind, error) = kind_and_error(&dead[1]);
    assert_eq!(
        (dead[1].id(), kind),
        ("00000000-0000-4000-8000-000000000003", "topic_not_allowed"),
        "{error}"
    );
    assert!(error.contains("topic_allow"), "{error}");
    ok(source.stop().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_create_topics_an_unknown_type_is_dead_lettered() {
    let kafka = shared_kafka();
    let db = TestDb::new("nocreate");
    db.prepare_with(TEXT_OUTBOX).await;
    for t in [
        format!("{}.ev.Alpha", db.name),
        format!("{}.tpl.dlq", db.name),
    ] {
        ok(kafka.create_topic(&t, 3).await);
    }
    let source = InProcess::start(template_config(&db, "create_topics = false\n"));
    write_types(&db, &["Alpha", "Beta", "Alpha"]).await;
    let (events, dead, source) = read_all(&db, &[("Alpha", 2)], 1, source).await;
    assert_eq!(events[0].len(), 2);
    assert_eq!(dead[0].id(), "00000000-0000-4000-8000-000000000002");
    let (kind, error) = kind_and_error(&dead[0]);
    assert_eq!(kind, "topic_refused", "{error}");
    assert!(error.contains("does not exist"), "{error}");
    ok(source.stop().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_a_lower_max_message_bytes_dead_letters_only_the_big_event() {
    let kafka = shared_kafka();
    let db = TestDb::new("topiclimit");
    db.prepare().await;
    ok(kafka
        .create_topic_with(&db.topic, 3, &[("max.message.bytes", "100000")])
        .await);
    let source = start_source(&db, "");
    // One transaction: 3,000 small events (about 600 kB together, produced in one burst),
    // one 150 kB event, above the topic's limit but below the client's 1 MB, and one 90 kB
    // event, below the topic's limit (it must go through, alone in its batch if need be).
    let fitting = 3001;
    db.exec(&format!(
        "BEGIN;
         INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload)
         SELECT gen_random_uuid(), md5((g % 50)::text)::uuid, 'ProductUpdated', now(),
                jsonb_build_object('seq', g, 'pad', repeat('p', 150))
         FROM generate_series(1, {fitting} - 1) g;
         INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload)
         VALUES ('00000000-0000-4000-8000-0000000000bb', '{AGG}', 'ProductUpdated', now(),
                 jsonb_build_object('blob', repeat('x', 150000))),
                ('00000000-0000-4000-8000-0000000000aa', '{AGG}', 'ProductUpdated', now(),
                 jsonb_build_object('blob', repeat('y', 90000)));
         COMMIT;"
    ))
    .await;
    let (brokers, topic, dlq) = (
        kafka.bootstrap(),
        db.topic.clone(),
        format!("{}.dlq", db.topic),
    );
    let got = blocking(move || {
        let mut reader = crate::support::kafka::TopicReader::new(&brokers, &topic);
        if !reader.until_ids(fitting, Duration::from_secs(120)) {
            return Err(format!("{} of {fitting} events", reader.distinct()));
        }
        let dead = read(brokers, dlq, 1)?;
        reader.read_to_end(Duration::from_secs(10));
        Ok((reader.distinct(), dead))
    })
    .await;
    let ((events, dead), source) = expect(got, source).await;
    assert_eq!(
        events, fitting,
        "every event within the topic's limit on the topic"
    );
    assert_eq!(
        dead.len(),
        1,
        "only the big one: {:?}",
        dead.iter().map(Received::id).collect::<Vec<_>>()
    );
    assert_eq!(dead[0].id(), "00000000-0000-4000-8000-0000000000bb");
    let (kind, error) = kind_and_error(&dead[0]);
    assert_eq!(kind, "payload_too_large", "{error}");
    assert!(error.contains("max.message.bytes = 100000"), "{error}");
    ok(source.stop().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_topic_creation_keeps_the_replication_connection_alive() {
    let mut kafka = ok(blocking(Kafka::start).await);
    let brokers = kafka.bootstrap();
    let mut db = TestDb::new("keepalive");
    db.prepare_with(TEXT_OUTBOX).await;
    // A short keepalive budget for this source's walsender only.
    db.dsn = format!("{} options='-c wal_sender_timeout=4s'", db.dsn);
    let source = InProcess::start(template_config_on(&db, &brokers, ""));
    write_types(&db, &["Alpha"]).await;
    let (b, topic) = (brokers.clone(), format!("{}.ev.Alpha", db.name));
    let alpha = blocking(move || read(b, topic, 1)).await;
    let (_, source) = expect(alpha, source).await;
    let pid_sql = format!(
        "SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = '{}'",
        db.slot
    );
    let pid = db.query_text(&pid_sql).await;
    assert!(pid.is_some(), "the slot is streaming");

    // With the broker gone, creating Beta's topic waits for the admin request's timeout
    // (10 s); meanwhile status updates must keep the walsender from timing out at 4 s.
    kafka.kill();
    db.exec(&insert(2, &format!("'{AGG}'"), "'Beta'", "'{}'"))
        .await;
    let dropped = wait_until_async(
        "the walsender's connection dropped",
        Duration::from_secs(8),
        || async { db.query_text(&pid_sql).await != pid },
    )
    .await
    .is_ok();
    assert!(
        !dropped,
        "the walsender ended while the topic was being created: {:?} -> {:?}",
        pid,
        db.query_text(&pid_sql).await
    );

    // The broker comes back: Beta's topic is created and its event published.
    let kafka = ok(blocking(move || kafka.restart().map(|()| kafka)).await);
    let (b, topic) = (brokers.clone(), format!("{}.ev.Beta", db.name));
    let beta = blocking(move || read(b, topic, 1)).await;
    let (beta, source) = expect(beta, source).await;
    assert_eq!(beta[0].id(), "00000000-0000-4000-8000-000000000002");
    ok(source.stop().await);
    drop(kafka);
    db.drop_slot().await;
}
