//! The whole app as `walcast app` runs it: both APIs on their own ports, admin endpoints on
//! each, readiness from the probe loop, graceful shutdown.

use std::time::Duration;

use walcast_catalog::app::{self, AppConfig};
use walcast_catalog::{KeyRetention, LagPolicy, PoolOptions, ReplicaConfig};
use walcast_postgres::Dsn;
use walcast_telemetry::admin::Health;
use walcast_telemetry::metrics::Registry;

use crate::support::http::{get, post};
use crate::support::{read_db, shared_pg, wait_until_async, write_db};

#[tokio::test]
async fn serves_both_apis_with_admin_endpoints_until_shutdown() {
    let pg = shared_pg();
    let config = AppConfig {
        write_dsn: Dsn::parse(&write_db(pg)).unwrap(),
        replicas: (1..=2)
            .map(|i| ReplicaConfig {
                name: format!("replica-{i}"),
                dsn: Dsn::parse(&read_db(pg)).unwrap(),
            })
            .collect(),
        pool: PoolOptions::default(),
        lag: LagPolicy {
            probe_interval: Duration::from_millis(100),
            ..LagPolicy::default()
        },
        idempotency: KeyRetention::default(),
    };
    let write_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let query_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (write_addr, query_addr) = (
        write_listener.local_addr().unwrap(),
        query_listener.local_addr().unwrap(),
    );
    let health = Health::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = tokio::spawn(app::run(
        config,
        write_listener,
        query_listener,
        Registry::default(),
        health.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    wait_until_async("the app to be ready", Duration::from_secs(10), || async {
        get(query_addr, "/ready").await.status == 200
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let ready = get(write_addr, "/ready").await;
    assert_eq!(ready.status, 200);
    assert!(
        ready.body.contains("write db ok; replicas serving 2/2"),
        "{}",
        ready.body
    );

    let r = post(
        write_addr,
        "/products",
        r#"{"sku":"APP-1","name":"Teapot","price":"24.00","currency":"GBP"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Nothing projects in this test, so the replicas have no rows yet: a 404 that says who.
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = get(query_addr, &format!("/products/{id}")).await;
    r.problem(404, "not-found");
    assert!(r.header("x-walcast-replica").is_some());

    let metrics = get(query_addr, "/metrics").await.body;
    assert!(
        metrics.contains("walcast_catalog_replica_eligible{replica=\"replica-1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("walcast_catalog_commands_total{command=\"create\",outcome=\"ok\"} 1")
    );
    get(query_addr, "/nowhere").await.problem(404, "no-route");
    assert_eq!(get(write_addr, "/health").await.status, 200);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), app)
        .await
        .expect("the app stops on shutdown")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(write_addr).await.is_err());
}
