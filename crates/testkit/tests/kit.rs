//! The kit's parts are real: Postgres reports logical WAL, Kafka keeps per-key order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use walcast_testkit::{Kafka, Postgres, unique_name};

#[test]
fn postgres_runs_with_logical_wal_and_restarts_after_a_crash() {
    let mut pg = Postgres::start().expect("start postgres");
    assert_eq!(pg.psql("postgres", "SHOW wal_level").unwrap(), "logical");
    let senders: i32 = pg
        .psql("postgres", "SHOW max_wal_senders")
        .unwrap()
        .parse()
        .unwrap();
    let slots: i32 = pg
        .psql("postgres", "SHOW max_replication_slots")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        senders >= 10 && slots >= 10,
        "senders {senders}, slots {slots}"
    );

    let db = unique_name("kit");
    pg.create_database(&db).unwrap();
    pg.psql(
        &db,
        "CREATE TABLE t(id int primary key); INSERT INTO t VALUES (1),(2)",
    )
    .unwrap();
    pg.kill();
    assert!(
        pg.psql(&db, "SELECT 1").is_err(),
        "a killed cluster must not answer"
    );
    pg.restart().expect("restart after kill -9");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM t").unwrap(), "2");
}

#[test]
fn tls_scram_cluster_wants_tls_and_a_password_on_tcp() {
    let pg = Postgres::builder()
        .tls_scram("kit_user", "kit pass'word")
        .start()
        .expect("start postgres with TLS");
    // The kit's own psql goes through the socket, where postgres is trusted.
    assert_eq!(pg.psql("postgres", "SHOW ssl").unwrap(), "on");
    let psql = |dsn: &str| {
        std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
            .args([
                "-X",
                "-At",
                "-c",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ])
            .arg(dsn)
            .env_remove("PGPASSWORD")
            .output()
            .unwrap()
    };
    let dsn = pg.secure_dsn("postgres").unwrap();
    assert!(dsn.contains("sslmode=verify-full"), "{dsn}");
    let ok = psql(&dsn);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "t");
    let plain = psql(&format!(
        "host=127.0.0.1 port={} user=kit_user dbname=postgres sslmode=disable",
        pg.port()
    ));
    assert!(!plain.status.success());
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("rejects connection"),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let wrong = psql(&dsn.replace("kit pass\\'word", "wrong"));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let ca = std::fs::read_to_string(pg.ca_file().unwrap()).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn clusters_are_independent_and_gone_after_drop() {
    let a = Postgres::start().unwrap();
    let b = Postgres::start().unwrap();
    assert_ne!(a.port(), b.port());
    let data = a.data_dir();
    let port = a.port();
    drop(a);
    assert!(!data.exists(), "data directory must be removed on drop");
    let refused = std::net::TcpStream::connect(("127.0.0.1", port)).is_err();
    assert!(refused, "postgres must be stopped on drop");
    assert_eq!(b.psql("postgres", "SELECT 1").unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_round_trips_10k_keyed_messages_with_headers_in_per_key_order() {
    const MESSAGES: usize = 10_000;
    const KEYS: usize = 37;
    let kafka = Kafka::shared().expect("start kafka");
    let topic = unique_name("roundtrip");
    kafka.create_topic(&topic, 3).await.expect("create topic");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut deliveries = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let key = format!("key-{}", i % KEYS);
        let value = format!("{{\"seq\":{i}}}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "id",
                value: Some(&i.to_string()),
            })
            .insert(Header {
                key: "event_type",
                value: Some("RoundTrip"),
            });
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    let mut partitions_of_key: HashMap<String, i32> = HashMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let delivery = d
            .await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("acknowledged");
        let key = format!("key-{}", i % KEYS);
        let p = *partitions_of_key.entry(key).or_insert(delivery.partition);
        assert_eq!(p, delivery.partition, "one key, one partition");
    }
    let used: std::collections::HashSet<i32> = partitions_of_key.values().copied().collect();
    assert_eq!(used.len(), 3, "37 keys spread over all 3 partitions");

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("group.id", unique_name("roundtrip_group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut last_seq_of_key: HashMap<String, i64> = HashMap::new();
    let mut received = 0;
    let mut stream = consumer.stream();
    while received < MESSAGES {
        let msg = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("no message within 60 s")
            .expect("stream ended")
            .expect("kafka error");
        let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
        let value: &str = msg.payload_view::<str>().unwrap().unwrap();
        let seq: i64 = value
            .trim_start_matches("{\"seq\":")
            .trim_end_matches('}')
            .parse()
            .unwrap();
        let headers = msg.headers().expect("headers");
        let id = headers
            .iter()
            .find(|h| h.key == "id")
            .and_then(|h| h.value)
            .unwrap();
        assert_eq!(std::str::from_utf8(id).unwrap(), seq.to_string());
        let event_type = headers.iter().find(|h| h.key == "event_type").unwrap();
        assert_eq!(event_type.value, Some(&b"RoundTrip"[..]));
        let previous = last_seq_of_key.insert(key.clone(), seq);
        if let Some(prev) = previous {
            assert!(prev < seq, "key {key}: {seq} arrived after {prev}");
        }
        received += 1;
    }
    assert_eq!(received, MESSAGES);
    assert_eq!(last_seq_of_key.len(), KEYS);
}
