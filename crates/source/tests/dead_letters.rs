//! Bad input never blocks the stream: oversize payloads and rows the router cannot map go to
//! the dead-letter topic with headers naming the error and the source LSN, later events flow.

use std::time::Duration;

use walcast_pgoutput::Lsn;
use walcast_source::{SourceConfig, metrics, record};

use crate::support::kafka::{Received, TopicReader};
use crate::support::{
    InProcess, TestDb, blocking, config_file, load_config, ok, shared_kafka, start_source,
    wait_until_async,
};

/// An outbox whose columns may be null, so the unmappable rows can be written at all.
const LOOSE_OUTBOX: &str = "CREATE TABLE outbox_messages (
    id UUID PRIMARY KEY, aggregate_id UUID, event_type TEXT, occurred_at TIMESTAMPTZ,
    correlation_id UUID, payload JSONB)";

/// An outbox whose key and event type are unbounded text, as in many real outboxes.
pub const TEXT_OUTBOX: &str = "CREATE TABLE outbox_messages (
    id UUID PRIMARY KEY, aggregate_id TEXT NOT NULL, event_type TEXT NOT NULL,
    occurred_at TIMESTAMPTZ, correlation_id UUID, payload JSONB NOT NULL)";

pub const AGG: &str = "0000000a-0000-4000-8000-000000000001";

pub fn insert(id: u32, aggregate: &str, event_type: &str, payload: &str) -> String {
    format!(
        "INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
         VALUES ('00000000-0000-4000-8000-{id:012}', {aggregate}, {event_type}, now(), {payload})"
    )
}

/// A connector file routing by `{event_type}` to `<db>.ev.<type>`, dead letters to
/// `<db>.tpl.dlq`; `kafka_extra` goes into `[kafka]`.
pub fn template_config(db: &TestDb, kafka_extra: &str) -> SourceConfig {
    template_config_on(db, &shared_kafka().bootstrap(), kafka_extra)
}

/// Like [`template_config`], on the broker at `brokers`.
pub fn template_config_on(db: &TestDb, brokers: &str, kafka_extra: &str) -> SourceConfig {
    let dir = ok(tempfile::tempdir());
    let dir = dir.path();
    let kafka_extra = format!(
        "topic = \"{name}.ev.{{event_type}}\"\ndlq_topic = \"{name}.tpl.dlq\"\n{kafka_extra}",
        name = db.name
    );
    let path = config_file(dir, db, brokers, &kafka_extra, "");
    // config_file already wrote `topic = <db>.events`; the template replaces it.
    let text =
        ok(std::fs::read_to_string(&path)).replace(&format!("topic = \"{}\"\n", db.topic), "");
    let path = dir.join("tpl.toml");
    ok(std::fs::write(&path, text));
    load_config(&path)
}

pub fn read(brokers: String, topic: String, n: usize) -> Result<Vec<Received>, String> {
    let mut reader = TopicReader::new(&brokers, &topic);
    if !reader.poll_until(Duration::from_secs(120), |rs| rs.len() >= n) {
        return Err(format!("{topic}: {} of {n} records", reader.records.len()));
    }
    reader.read_to_end(Duration::from_secs(10));
    Ok(reader.records)
}

/// What was read, or a panic naming what is missing and why the source stopped, if it did.
pub async fn expect<T>(got: Result<T, String>, source: InProcess) -> (T, InProcess) {
    match got {
        Ok(v) => (v, source),
        Err(missing) if source.is_finished() => {
            panic!("{missing}; the source stopped: {:?}", source.stop().await)
        }
        Err(missing) => panic!("{missing}; the source is still running"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_unmappable_rows_go_to_the_dlq_while_later_events_flow() {
    let kafka = shared_kafka();
    let db = TestDb::new("dlq");
    db.prepare_with(LOOSE_OUTBOX).await;
    let dir = ok(tempfile::tempdir());
    let source = InProcess::start(load_config(&config_file(
        dir.path(),
        &db,
        &kafka.bootstrap(),
        "",
        "",
    )));
    let agg = format!("'{AGG}'");
    let good = |id: u32, seq: u32| {
        insert(
            id,
            &agg,
            "'ProductUpdated'",
            &format!("'{{\"seq\": {seq}}}'"),
        )
    };
    for sql in [
        good(1, 0),
        // 1.1 MB of jsonb: more than the broker's 1 MiB message.max.bytes.
        insert(
            2,
            &agg,
            "'ProductUpdated'",
            "jsonb_build_object('blob', repeat('x', 1100000))",
        ),
        insert(3, "NULL", "'ProductUpdated'", "'{}'"),
        insert(4, &agg, "NULL", "'{}'"),
        insert(5, &agg, "'ProductUpdated'", "NULL"),
        good(6, 1),
        // A configured column disappears (renamed) while the source runs ...
        "ALTER TABLE outbox_messages RENAME COLUMN event_type TO kind".to_owned(),
        insert(7, &agg, "'ProductUpdated'", "'{}'").replace("event_type,", "kind,"),
        // ... and comes back.
        "ALTER TABLE outbox_messages RENAME COLUMN kind TO event_type".to_owned(),
        good(8, 2),
    ] {
        db.exec(&sql).await;
    }
    let (brokers, topic, dlq) = (
        kafka.bootstrap(),
        db.topic.clone(),
        format!("{}.dlq", db.topic),
    );
    let (events, source) = expect(blocking(move || read(brokers, topic, 3)).await, source).await;
    let ids: Vec<&str> = events.iter().map(Received::id).collect();
    assert_eq!(
        ids,
        [
            "00000000-0000-4000-8000-000000000001",
            "00000000-0000-4000-8000-000000000006",
            "00000000-0000-4000-8000-000000000008"
        ],
        "the good events, in order, after the bad ones"
    );
    let brokers = kafka.bootstrap();
    let (dead, source) = expect(blocking(move || read(brokers, dlq, 5)).await, source).await;
    assert_eq!(dead.len(), 5, "{dead:#?}");
    let by_id = |n: u32| {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        let found = dead
            .iter()
            .find(|r| r.header(record::ID) == Some(id.as_str()) || r.value_text().contains(&id));
        found
            .unwrap_or_else(|| panic!("no dead letter for {id}: {dead:#?}"))
            .clone()
    };
    for (n, kind, needle) in [
        (2, "payload_too_large", "max_message_bytes"),
        (3, "null_column", "\"aggregate_id\""),
        (4, "null_column", "\"event_type\""),
        (5, "null_column", "\"payload\""),
        (7, "missing_column", "no column \"event_type\""),
    ] {
        let d = by_id(n);
        assert_eq!(d.header(record::ERROR_KIND), Some(kind), "row {n}: {d:?}");
        assert!(
            d.header(record::ERROR).unwrap_or("").contains(needle),
            "row {n}: {d:?}"
        );
        assert!(
            d.header(record::LSN)
                .and_then(|s| s.parse::<Lsn>().ok())
                .is_some(),
            "row {n}: source LSN"
        );
        assert!(d.header(record::COMMIT_LSN).is_some() && d.header(record::XID).is_some());
        assert_eq!(
            d.header(record::SOURCE_TABLE),
            Some("public.outbox_messages")
        );
    }
    let oversize = by_id(2);
    assert!(oversize.value.is_none(), "the oversize payload is left out");
    assert_eq!(oversize.key.as_deref(), Some(AGG));
    assert_eq!(
        oversize.header(record::ORIGINAL_TOPIC),
        Some(db.topic.as_str())
    );
    let null_key = by_id(3);
    assert!(null_key.key.is_none());
    let row: serde_json::Value = serde_json::from_str(null_key.value_text()).unwrap_or_default();
    assert_eq!(
        row["event_type"], "ProductUpdated",
        "the row as JSON: {row}"
    );

    // Nothing is stuck: everything, dead letters included, is confirmed.
    let last = db.current_lsn().await;
    let confirmed = wait_until_async(
        "the slot confirmed past the last event",
        Duration::from_secs(30),
        || async { db.slot_confirmed().await >= last },
    )
    .await
    .is_ok();
    assert!(
        confirmed,
        "slot at {}, WAL at {last}",
        db.slot_confirmed().await
    );
    assert_eq!(source.metric(metrics::DEAD_LETTERS), 5.0);
    ok(source.stop().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_template_routes_by_event_type() {
    let kafka = shared_kafka();
    let db = TestDb::new("tpl");
    db.prepare().await;
    let source = InProcess::start(template_config(&db, ""));
    let agg = format!("'{AGG}'");
    for (n, t) in [(1, "Alpha"), (2, "Beta"), (3, "Alpha"), (4, "Bad Type")] {
        db.exec(&insert(n, &agg, &format!("'{t}'"), "'{}'")).await;
    }
    let name = db.name.clone();
    let brokers = kafka.bootstrap();
    let got = blocking(move || {
        Ok((
            read(brokers.clone(), format!("{name}.ev.Alpha"), 2)?,
            read(brokers.clone(), format!("{name}.ev.Beta"), 1)?,
            read(brokers, format!("{name}.tpl.dlq"), 1)?,
        ))
    })
    .await;
    let ((alpha, beta, dead), source) = expect(got, source).await;
    assert_eq!(alpha.len(), 2);
    assert_eq!(beta.len(), 1);
    assert_eq!(dead[0].header(record::ERROR_KIND), Some("bad_topic"));
    assert!(
        dead[0]
            .header(record::ERROR)
            .unwrap_or("")
            .contains("Bad Type")
    );
    ok(source.stop().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_non_ascii_event_type_is_a_bad_topic_not_a_crash() {
    let kafka = shared_kafka();
    let db = TestDb::new("utf");
    db.prepare_with(TEXT_OUTBOX).await;
    let source = InProcess::start(template_config(&db, ""));
    // The rendered name is `<db>.ev.` + event_type; pad with ASCII so that byte 40 falls in
    // the middle of a three-byte '€', then make the name longer than Kafka's 249.
    let prefix = format!("{}.ev.", db.name);
    assert!(prefix.len() < 39, "{prefix}");
    let event_type = format!("{}{}", "x".repeat(39 - prefix.len()), "€".repeat(100));
    let agg = format!("'{AGG}'");
    db.exec(&insert(1, &agg, &format!("'{event_type}'"), "'{}'"))
        .await;
    db.exec(&insert(2, &agg, "'Alpha'", "'{}'")).await;
    let brokers = kafka.bootstrap();
    let name = db.name.clone();
    let got = blocking(move || {
        Ok((
            read(brokers.clone(), format!("{name}.ev.Alpha"), 1)?,
            read(brokers, format!("{name}.tpl.dlq"), 1)?,
        ))
    })
    .await;
    let ((alpha, dead), source) = expect(got, source).await;
    assert_eq!(alpha.len(), 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header(record::ERROR_KIND), Some("bad_topic"));
    let error = dead[0].header(record::ERROR).unwrap_or("");
    assert!(error.contains("longer than 249"), "{error}");
    assert_eq!(
        dead[0].header(record::EVENT_TYPE),
        Some(event_type.as_str()),
        "the event type is kept whole: it fits"
    );
    ok(source.stop().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_huge_fields_are_cut_to_fit_and_later_events_flow() {
    let kafka = shared_kafka();
    let db = TestDb::new("dlqfit");
    db.prepare_with(TEXT_OUTBOX).await;
    let source = start_source(&db, "");
    let agg = format!("'{AGG}'");
    // 1.1 MB of event type (two-byte characters) and 1.1 MB of key: the event and a dead
    // letter carrying the same headers and key are both over the 1 MB limit.
    db.exec(&insert(1, &agg, "repeat('é', 550000)", "'{}'"))
        .await;
    db.exec(&insert(
        2,
        "repeat('k', 1100000)",
        "'ProductUpdated'",
        "'{}'",
    ))
    .await;
    db.exec(&insert(3, &agg, "'ProductUpdated'", "'{\"seq\": 3}'"))
        .await;
    let (brokers, topic, dlq) = (
        kafka.bootstrap(),
        db.topic.clone(),
        format!("{}.dlq", db.topic),
    );
    let got =
        blocking(move || Ok((read(brokers.clone(), topic, 1)?, read(brokers, dlq, 2)?))).await;
    let ((events, mut dead), source) = expect(got, source).await;
    dead.sort_by(|a, b| a.id().cmp(b.id()));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].id(), "00000000-0000-4000-8000-000000000003");
    assert_eq!(dead.len(), 2);
    for (d, n, field) in [(&dead[0], 1, "event_type"), (&dead[1], 2, "key")] {
        assert_eq!(
            d.id(),
            format!("00000000-0000-4000-8000-{n:012}"),
            "the id survives, so the row can be found"
        );
        assert_eq!(d.header(record::ERROR_KIND), Some("payload_too_large"));
        let truncated = d.header("walcast.truncated").unwrap_or("");
        assert!(truncated.contains(field), "row {n}: {truncated}");
        let size: usize = d.key.as_ref().map_or(0, String::len)
            + d.value.as_ref().map_or(0, Vec::len)
            + d.headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        assert!(size < 1_000_000, "row {n}: {size} bytes");
    }
    let event_type = dead[0].header(record::EVENT_TYPE).unwrap_or("");
    assert!(
        !event_type.is_empty() && event_type.chars().all(|c| c == 'é'),
        "cut at a character boundary"
    );
    let key = dead[1].key.as_deref().unwrap_or("");
    assert!(!key.is_empty() && key.len() < 1_100_000 && key.bytes().all(|b| b == b'k'));
    ok(source.stop().await);
    db.drop_slot().await;
}
