//! Hostile and edge-case requests: NUL characters, numbers an f64 cannot tell apart, weak
//! ETags, and idempotency keys pruned after their window.

use std::time::Duration;

use walcast_catalog::app::{self, AppConfig};
use walcast_catalog::{KeyRetention, LagPolicy, PoolOptions, QueryApi, ReplicaConfig};
use walcast_postgres::Dsn;
use walcast_telemetry::admin::Health;
use walcast_telemetry::metrics::Registry;

use crate::support::http::{get, post, request};
use crate::support::{Server, connect, read_db, shared_pg, wait_until_async, write_db};
use crate::write::setup;

#[tokio::test]
async fn a_nul_character_in_a_text_field_or_the_query_is_a_400() {
    let env = setup().await;
    for (field, body) in [
        (
            "sku",
            r#"{"sku":"A\u0000B","name":"Mug","price":"1.00","currency":"EUR"}"#,
        ),
        (
            "name",
            r#"{"sku":"NUL-1","name":"M\u0000ug","price":"1.00","currency":"EUR"}"#,
        ),
        (
            "description",
            r#"{"sku":"NUL-2","name":"Mug","description":"\u0000","price":"1.00","currency":"EUR"}"#,
        ),
    ] {
        let r = env.send("POST", "/products", &[], Some(body)).await;
        let problem = r.problem(400, "invalid-request");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let id = env.create("NUL-3").await["id"].as_str().unwrap().to_owned();
    let r = env
        .send(
            "PUT",
            &format!("/products/{id}"),
            &[],
            Some(r#"{"name":"a\u0000"}"#),
        )
        .await;
    r.problem(400, "invalid-request");
    assert_eq!(env.count("outbox_messages").await, 1);

    let query = QueryApi::new(
        &[ReplicaConfig {
            name: "replica-1".into(),
            dsn: Dsn::parse(&read_db(shared_pg())).unwrap(),
        }],
        LagPolicy::default(),
        PoolOptions::default(),
        &Registry::default(),
    )
    .unwrap();
    query.probe().await;
    let server = Server::start(query.router()).await;
    let r = get(server.addr, "/products?q=a%00b").await;
    let problem = r.problem(400, "invalid-request");
    assert_eq!(problem["errors"][0]["field"], "q", "{problem}");
    // The replica was not blamed for it: it still serves.
    assert_eq!(get(server.addr, "/products?q=mug").await.status, 200);
}

#[tokio::test]
async fn an_idempotency_key_reused_with_a_price_an_f64_rounds_the_same_is_refused() {
    let env = setup().await;
    let key = [("Idempotency-Key", "big-price-1")];
    let body = |price: &str| {
        format!(r#"{{"sku":"BIG-1","name":"Yacht","price":{price},"currency":"EUR"}}"#)
    };
    let first = env
        .send(
            "POST",
            "/products",
            &key,
            Some(&body("1234567890123456.78")),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.json()["price"], "1234567890123456.78");
    // Through f64 both read 1234567890123456.8; as prices they differ by a cent.
    let other = env
        .send(
            "POST",
            "/products",
            &key,
            Some(&body("1234567890123456.79")),
        )
        .await;
    other.problem(422, "idempotency-key-reused");
    // The same bytes (with other whitespace) still replay.
    let again = env
        .send(
            "POST",
            "/products",
            &key,
            Some(&format!("\n{}\n", body("1234567890123456.78"))),
        )
        .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(env.count("outbox_messages").await, 1);
}

#[tokio::test]
async fn if_match_with_a_weak_etag_is_a_412_that_says_why() {
    let env = setup().await;
    let id = env.create("WEAK-1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/products/{id}/price");
    let body = r#"{"price":"2.00","currency":"EUR"}"#;
    let r = env
        .send("PUT", &path, &[("If-Match", "W/\"1\"")], Some(body))
        .await;
    let problem = r.problem(412, "weak-etag");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("weak entity tag"), "{detail}");
    assert!(detail.contains("\"3\", not W/\"3\""), "{detail}");
    assert_eq!(env.count("outbox_messages").await, 1, "nothing changed");
    // The strong form of the same tag goes through.
    let r = env
        .send("PUT", &path, &[("If-Match", "\"1\"")], Some(body))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn idempotency_keys_older_than_the_window_are_pruned_and_recent_ones_kept() {
    let pg = shared_pg();
    let write_dsn = write_db(pg);
    let db = connect(&write_dsn).await;
    db.batch_execute(
        "INSERT INTO idempotency_keys (key, request_hash, status_code, response_body, created_at) \
           SELECT 'old-' || i, md5('x'), 201, '{}', now() - interval '2 hours' \
           FROM generate_series(1, 250) i;",
    )
    .await
    .unwrap();
    let registry = Registry::default();
    let config = AppConfig {
        write_dsn: Dsn::parse(&write_dsn).unwrap(),
        replicas: vec![ReplicaConfig {
            name: "replica-1".into(),
            dsn: Dsn::parse(&read_db(pg)).unwrap(),
        }],
        pool: PoolOptions::default(),
        lag: LagPolicy::default(),
        idempotency: KeyRetention {
            window: Duration::from_secs(3600),
            interval: Duration::from_millis(200),
            batch_rows: 100,
        },
    };
    let write_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let query_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let write_addr = write_listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = tokio::spawn(app::run(
        config,
        write_listener,
        query_listener,
        registry.clone(),
        Health::default(),
        async {
            let _ = stopped.await;
        },
    ));
    // A key used now, inside the window.
    let body = r#"{"sku":"KEEP-1","name":"Kept","price":"1.00","currency":"EUR"}"#;
    let key = [("Idempotency-Key", "recent-1")];
    let first = request(write_addr, "POST", "/products", &key, Some(body)).await;
    assert_eq!(first.status, 201, "{}", first.body);

    // The pruner counts the rows once its pass is over, after they are gone: wait for both.
    wait_until_async(
        "the old keys pruned and counted",
        Duration::from_secs(30),
        || async {
            let n: i64 = db
                .query_one(
                    "SELECT count(*) FROM idempotency_keys WHERE key LIKE 'old-%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            n == 0
                && registry
                    .render()
                    .contains("walcast_catalog_idempotency_keys_pruned_total 250")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let metrics = registry.render();
    assert!(
        metrics.contains("walcast_catalog_idempotency_keys_pruned_total 250"),
        "{metrics}"
    );
    // The recent key is kept and still replays.
    let again = request(write_addr, "POST", "/products", &key, Some(body)).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        post(write_addr, "/products", body).await.status,
        409,
        "the sku exists"
    );
    let _ = stop.send(());
    app.await.unwrap().unwrap();
}
