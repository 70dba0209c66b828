//! Concurrent writers: retries racing with one idempotency key, and updates racing with one
//! expected version. The database decides; exactly one event per decision.

use std::collections::HashSet;

use crate::support::http::request;
use crate::write::setup;

#[tokio::test]
async fn racing_retries_with_one_key_create_one_product_and_one_event() {
    let env = setup().await;
    let addr = env.server.addr;
    let body = r#"{"sku":"RACE-1","name":"Racer","price":"5","currency":"EUR"}"#;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            request(
                addr,
                "POST",
                "/products",
                &[("Idempotency-Key", "race-1")],
                Some(body),
            )
            .await
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        ids.insert(r.json()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "every retry sees the same product");
    assert_eq!(env.count("products").await, 1);
    assert_eq!(env.count("outbox_messages").await, 1);
}

#[tokio::test]
async fn racing_updates_on_one_version_let_exactly_one_win() {
    let env = setup().await;
    let p = env.create("RACE-2").await;
    let path = format!("/products/{}", p["id"].as_str().unwrap());
    let addr = env.server.addr;
    let mut tasks = Vec::new();
    for n in 0..6 {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"name":"writer {n}"}}"#);
            request(addr, "PUT", &path, &[("If-Match", "1")], Some(&body)).await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409, 409, 409, 409, 409]);
    assert_eq!(env.count("outbox_messages").await, 2);
}
