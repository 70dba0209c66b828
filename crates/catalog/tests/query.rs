//! The query API over three replica databases seeded directly with SQL (no sink involved):
//! round-robin, failover past a stopped replica, skipping a lagging one, search and paging.

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;
use walcast_catalog::{LagPolicy, PoolOptions, QueryApi, ReplicaConfig};
use walcast_postgres::Dsn;
use walcast_telemetry::metrics::Registry;
use walcast_testkit::Postgres;

use crate::support::http::get;
use crate::support::{Server, connect, read_db, shared_pg, wait_until_async};

fn replicas(dsns: &[String]) -> Vec<ReplicaConfig> {
    dsns.iter()
        .enumerate()
        .map(|(i, dsn)| ReplicaConfig {
            name: format!("replica-{}", i + 1),
            dsn: Dsn::parse(dsn).unwrap(),
        })
        .collect()
}

fn api(dsns: &[String], policy: LagPolicy) -> QueryApi {
    let pool = PoolOptions {
        max_size: 4,
        timeout: Duration::from_secs(2),
    };
    QueryApi::new(&replicas(dsns), policy, pool, &Registry::default()).unwrap()
}

/// Inserts a read-model row the way the sink projects it (search_text included).
async fn seed_product(dsn: &str, id: Uuid, sku: &str, name: &str, description: &str) {
    let db = connect(dsn).await;
    db.execute(
        "INSERT INTO catalog_product_read (product_id, sku, name, description, price, currency, \
         is_active, search_text, version, occurred_at, updated_at) \
         VALUES ($1, $2, $3, $4, 12.50, 'EUR', true, lower(concat_ws(' ', $2::text, $3::text, $4::text)), \
         1, now(), now())",
        &[&id, &sku, &name, &description],
    )
    .await
    .unwrap();
}

async fn set_applied_lsn(dsn: &str, lsn: &str) {
    let db = connect(dsn).await;
    db.execute(
        "INSERT INTO walcast_applied_lsn (consumer_group, commit_lsn) VALUES ('walcast.sink.t', $1::text::pg_lsn) \
         ON CONFLICT (consumer_group) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, applied_at = now()",
        &[&lsn],
    )
    .await
    .unwrap();
}

/// Three replica databases holding one product each under the same id, named after the
/// replica, so an answer proves where it came from.
async fn three_replicas(pg: [&Postgres; 3], id: Uuid) -> Vec<String> {
    let mut dsns = Vec::new();
    for (i, pg) in pg.into_iter().enumerate() {
        let dsn = read_db(pg);
        let name = format!("Mug on replica-{}", i + 1);
        seed_product(&dsn, id, "MUG-1", &name, "stoneware").await;
        set_applied_lsn(&dsn, "0/3000000").await;
        dsns.push(dsn);
    }
    dsns
}

/// GETs the product and checks that the body came from the replica the headers name.
async fn served_by(server: &Server, id: Uuid) -> String {
    let r = get(server.addr, &format!("/products/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let replica = r.header("x-walcast-replica").unwrap().to_owned();
    let body = r.json();
    assert_eq!(body["product"]["name"], format!("Mug on {replica}"));
    assert_eq!(body["product"]["price"], "12.50");
    assert_eq!(body["replica"]["name"], replica);
    assert!(r.header("x-walcast-replica-lag").is_some());
    assert!(r.header("x-walcast-replica-lag-bytes").is_some());
    replica
}

#[tokio::test]
async fn queries_go_round_robin_across_three_replicas() {
    let pg = shared_pg();
    let id = Uuid::now_v7();
    let dsns = three_replicas([pg, pg, pg], id).await;
    let api = api(&dsns, LagPolicy::default());
    api.probe().await;
    assert!(
        api.replicas().iter().all(|r| r.eligible),
        "{:?}",
        api.replicas()
    );
    let server = Server::start(api.router()).await;

    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(served_by(&server, id).await);
    }
    assert_eq!(&order[..3], &order[3..], "a fixed rotation: {order:?}");
    let mut first_three = order[..3].to_vec();
    first_three.sort();
    assert_eq!(first_three, ["replica-1", "replica-2", "replica-3"]);

    let r = get(server.addr, &format!("/products/{id}")).await;
    assert_eq!(r.header("x-walcast-replica-lag"), Some("0.000"));
    assert_eq!(r.header("x-walcast-replica-lag-bytes"), Some("0"));
    assert_eq!(r.header("x-walcast-replica-lsn"), Some("0/3000000"));
}

#[tokio::test]
async fn a_stopped_replica_is_skipped_and_comes_back_after_a_restart() {
    let pg = shared_pg();
    let mut own = Postgres::start().unwrap();
    let id = Uuid::now_v7();
    let dsns = three_replicas([pg, pg, &own], id).await;
    let api = api(&dsns, LagPolicy::default());
    api.probe().await;
    assert!(api.replicas().iter().all(|r| r.eligible));
    let server = Server::start(api.router()).await;

    own.stop();
    // No probe has run since: the first query that lands on replica-3 fails over at once.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..8 {
        *counts.entry(served_by(&server, id).await).or_default() += 1;
    }
    assert_eq!(counts.get("replica-3"), None, "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    let status = &api.replicas()[2];
    assert!(!status.healthy && !status.eligible, "{status:?}");
    api.probe().await;
    assert!(
        !api.replicas()[2].healthy,
        "a probe does not revive a stopped replica"
    );

    own.restart().unwrap();
    wait_until_async(
        "replica-3 to be probed healthy",
        Duration::from_secs(30),
        || async {
            api.probe().await;
            api.replicas()[2].eligible
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(served_by(&server, id).await);
    }
    assert!(seen.contains(&"replica-3".to_owned()), "{seen:?}");
}

#[tokio::test]
async fn a_replica_far_behind_in_wal_bytes_is_skipped() {
    let pg = shared_pg();
    let id = Uuid::now_v7();
    let dsns = three_replicas([pg, pg, pg], id).await;
    set_applied_lsn(&dsns[0], "1/0").await;
    set_applied_lsn(&dsns[1], "1/0").await;
    let api = api(&dsns, LagPolicy::default());
    api.probe().await;
    let status = &api.replicas()[2];
    assert!(status.healthy && !status.eligible, "{status:?}");
    assert!(
        status.reason.contains("WAL bytes behind"),
        "{}",
        status.reason
    );
    let server = Server::start(api.router()).await;
    for _ in 0..4 {
        assert_ne!(served_by(&server, id).await, "replica-3");
    }
}

#[tokio::test]
async fn a_replica_that_stops_applying_is_skipped_once_it_is_behind_for_too_long() {
    let pg = shared_pg();
    let id = Uuid::now_v7();
    let dsns = three_replicas([pg, pg, pg], id).await;
    let policy = LagPolicy {
        max_lag: Duration::from_millis(300),
        max_lag_bytes: u64::MAX,
        probe_interval: Duration::from_millis(50),
    };
    let api = api(&dsns, policy);
    api.probe().await;
    // replica-1 and replica-2 apply another transaction; replica-3 does not.
    set_applied_lsn(&dsns[0], "0/3000100").await;
    set_applied_lsn(&dsns[1], "0/3000100").await;
    api.probe().await;
    let status = &api.replicas()[2];
    assert_eq!(status.lag_bytes, 0x100);
    wait_until_async(
        "replica-3 to lag past max_lag",
        Duration::from_secs(10),
        || async {
            api.probe().await;
            !api.replicas()[2].eligible
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let status = &api.replicas()[2];
    assert!(
        status.healthy && status.lag >= Duration::from_millis(300),
        "{status:?}"
    );
    let server = Server::start(api.router()).await;
    for _ in 0..4 {
        assert_ne!(served_by(&server, id).await, "replica-3");
    }
    // It catches up and serves again.
    set_applied_lsn(&dsns[2], "0/3000100").await;
    api.probe().await;
    assert!(api.replicas()[2].eligible);
}

#[tokio::test]
async fn search_and_paging() {
    let pg = shared_pg();
    let dsn = read_db(pg);
    for n in 1..=12 {
        let sku = format!("MUG-{n:02}");
        seed_product(
            &dsn,
            Uuid::now_v7(),
            &sku,
            &format!("Mug {n:02}"),
            "stoneware mug",
        )
        .await;
    }
    for n in 1..=13 {
        let sku = format!("PLT-{n:02}");
        seed_product(
            &dsn,
            Uuid::now_v7(),
            &sku,
            &format!("Plate {n:02}"),
            "ceramic plate",
        )
        .await;
    }
    seed_product(&dsn, Uuid::now_v7(), "SALE-1", "Bowl", "50% off this week").await;
    set_applied_lsn(&dsn, "0/100").await;
    let api = api(std::slice::from_ref(&dsn), LagPolicy::default());
    api.probe().await;
    let server = Server::start(api.router()).await;

    let names = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let r = get(server.addr, "/products?page_size=10").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(
        (
            body["total"].clone(),
            body["page"].clone(),
            body["pageSize"].clone()
        ),
        (26.into(), 1.into(), 10.into())
    );
    assert_eq!(names(&body)[..3], ["Bowl", "Mug 01", "Mug 02"]);
    assert_eq!(body["replica"]["name"], "replica-1");
    let body = get(server.addr, "/products?page_size=10&page=3")
        .await
        .json();
    assert_eq!(names(&body).len(), 6);
    assert_eq!(names(&body).last().map(String::as_str), Some("Plate 13"));
    let body = get(server.addr, "/products?page_size=10&page=4")
        .await
        .json();
    assert_eq!((names(&body).len(), body["total"].as_i64()), (0, Some(26)));

    let body = get(server.addr, "/products?q=mug").await.json();
    assert_eq!(body["total"], 12);
    assert_eq!(names(&body)[0], "Mug 01");
    let body = get(server.addr, "/products?q=MUG&page_size=5&page=3")
        .await
        .json();
    assert_eq!(names(&body), ["Mug 11", "Mug 12"]);
    let body = get(server.addr, "/products?q=plate&page=2&page_size=5")
        .await
        .json();
    assert_eq!(body["total"], 13);
    assert_eq!(
        names(&body),
        ["Plate 06", "Plate 07", "Plate 08", "Plate 09", "Plate 10"]
    );
    // LIKE wildcards in the query are literal: "50%" matches the one product that says it.
    let body = get(server.addr, "/products?q=50%25").await.json();
    assert_eq!(names(&body), ["Bowl"]);
    let body = get(server.addr, "/products?q=sku-that-does-not-exist")
        .await
        .json();
    assert_eq!(body["total"], 0);
    // A typo still finds the plates (trigram word similarity).
    let body = get(server.addr, "/products?q=plats&page_size=100")
        .await
        .json();
    assert_eq!(body["total"], 13, "{body}");

    for path in [
        "/products?page=0",
        "/products?page_size=101",
        "/products?page=two",
    ] {
        get(server.addr, path).await.problem(400, "invalid-request");
    }
    get(server.addr, "/products/not-a-uuid")
        .await
        .problem(400, "invalid-request");
    let missing = Uuid::now_v7();
    let r = get(server.addr, &format!("/products/{missing}")).await;
    let body = r.problem(404, "not-found");
    assert_eq!(body["replica"]["name"], "replica-1");
    assert_eq!(r.header("x-walcast-replica"), Some("replica-1"));
}

#[tokio::test]
async fn no_replica_at_all_is_a_503_problem() {
    let mut gone = Postgres::start().unwrap();
    let dsn = read_db(&gone);
    gone.stop();
    let api = api(&[dsn], LagPolicy::default());
    api.probe().await;
    assert!(!api.replicas()[0].healthy);
    let server = Server::start(api.router()).await;
    let r = get(server.addr, "/products").await;
    let body = r.problem(503, "no-replica");
    assert!(
        body["detail"].as_str().unwrap().contains("replica-1"),
        "{body}"
    );
    assert_eq!(r.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn a_replica_being_rebuilt_is_skipped_until_its_marker_is_gone() {
    let pg = shared_pg();
    let id = Uuid::now_v7();
    let dsns = three_replicas([pg, pg, pg], id).await;
    // replica-1 has a schema older than the marker table: it is served as before.
    connect(&dsns[0])
        .await
        .batch_execute("DROP TABLE walcast_rebuilding")
        .await
        .unwrap();
    // replica-2 is half-way through `walcast sink rebuild --from catalog_read`.
    let marker = connect(&dsns[1]).await;
    marker
        .execute(
            "INSERT INTO walcast_rebuilding (consumer_group, mode) \
             VALUES ('walcast.sink.replica-2', 'peer catalog_read')",
            &[],
        )
        .await
        .unwrap();
    let api = api(&dsns, LagPolicy::default());
    api.probe().await;
    let status = &api.replicas()[1];
    assert!(
        !status.eligible
            && status
                .reason
                .starts_with("rebuilding (peer catalog_read) since "),
        "{status:?}"
    );
    assert!(api.replicas()[0].eligible && api.replicas()[2].eligible);
    let server = Server::start(api.router()).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        *counts.entry(served_by(&server, id).await).or_default() += 1;
    }
    assert_eq!(counts.get("replica-2"), None, "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");

    // The rebuild completes: its last transaction deletes the marker.
    marker
        .execute("DELETE FROM walcast_rebuilding", &[])
        .await
        .unwrap();
    api.probe().await;
    assert!(api.replicas()[1].eligible, "{:?}", api.replicas()[1]);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        *counts.entry(served_by(&server, id).await).or_default() += 1;
    }
    assert_eq!(counts.get("replica-2"), Some(&2), "{counts:?}");
}
