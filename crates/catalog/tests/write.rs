//! The write API: every command is one transaction with exactly one outbox event carrying
//! the documented payload and the new version; errors are RFC 7807 problems.

use serde_json::{Value, json};
use uuid::Uuid;
use walcast_catalog::{PoolOptions, WriteApi};
use walcast_postgres::Dsn;
use walcast_telemetry::metrics::Registry;

use crate::support::http::{self, Response, request};
use crate::support::{Server, connect, shared_pg, write_db};

pub struct Env {
    pub server: Server,
    pub db: tokio_postgres::Client,
    pub registry: Registry,
}

pub async fn setup() -> Env {
    let dsn = write_db(shared_pg());
    let registry = Registry::default();
    let api = WriteApi::new(
        &Dsn::parse(&dsn).unwrap(),
        PoolOptions::default(),
        &registry,
    )
    .unwrap();
    api.check().await.unwrap();
    Env {
        server: Server::start(api.router()).await,
        db: connect(&dsn).await,
        registry,
    }
}

#[derive(Debug)]
pub struct OutboxRow {
    pub aggregate_id: Uuid,
    pub event_type: String,
    pub correlation_id: Option<Uuid>,
    pub payload: Value,
}

impl Env {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        request(self.server.addr, method, path, headers, body).await
    }

    pub async fn create(&self, sku: &str) -> Value {
        let body = json!({"sku": sku, "name": "Espresso cup", "description": "Porcelain, 80 ml",
                          "price": "12.50", "currency": "EUR"});
        let r = http::post(self.server.addr, "/products", &body.to_string()).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()
    }

    pub async fn outbox(&self) -> Vec<OutboxRow> {
        self.db
            .query(
                "SELECT aggregate_id, event_type, correlation_id, payload FROM outbox_messages \
                 ORDER BY occurred_at, id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| OutboxRow {
                aggregate_id: r.get(0),
                event_type: r.get(1),
                correlation_id: r.get(2),
                payload: r.get(3),
            })
            .collect()
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test]
async fn create_answers_201_and_commits_the_product_with_one_event() {
    let env = setup().await;
    let correlation = Uuid::now_v7().to_string();
    let body = r#"{"sku":"CUP-1","name":"Espresso cup","description":"Porcelain","price":"12.5","currency":"EUR"}"#;
    let r = env
        .send(
            "POST",
            "/products",
            &[("X-Correlation-Id", &correlation)],
            Some(body),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let p = r.json();
    let id = p["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/products/{id}").as_str())
    );
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.header("x-correlation-id"), Some(correlation.as_str()));
    assert_eq!(p["sku"], "CUP-1");
    assert_eq!(
        p["price"], "12.50",
        "price comes back exact, as NUMERIC(18,2) text"
    );
    assert_eq!(
        (p["version"].clone(), p["isActive"].clone()),
        (json!(1), json!(true))
    );
    assert!(p["createdAt"].as_str().unwrap().ends_with('Z'));

    let events = env.outbox().await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type, "ProductCreated");
    assert_eq!(e.aggregate_id.to_string(), id);
    assert_eq!(e.correlation_id.map(|c| c.to_string()), Some(correlation));
    assert_eq!(
        e.payload,
        json!({"productId": id, "sku": "CUP-1", "name": "Espresso cup",
               "description": "Porcelain", "price": "12.50", "currency": "EUR",
               "isActive": true, "version": 1})
    );
    // One transaction: the event's occurred_at is the product's updated_at (both now()).
    let same: bool = env
        .db
        .query_one(
            "SELECT o.occurred_at = p.updated_at AND o.status = 'Pending' \
             FROM outbox_messages o JOIN products p ON p.id = o.aggregate_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same);
}

struct Step {
    method: &'static str,
    path: String,
    body: Option<&'static str>,
    status: u16,
    event_type: &'static str,
    payload: Value,
}

#[tokio::test]
async fn every_command_bumps_the_version_and_writes_exactly_one_event() {
    let env = setup().await;
    let p = env.create("MUG-1").await;
    let id = p["id"].as_str().unwrap().to_owned();
    let correlation = Uuid::now_v7().to_string();
    let h = [("X-Correlation-Id", correlation.as_str())];

    let step = |method, path: String, body, status, event_type, payload| Step {
        method,
        path,
        body,
        status,
        event_type,
        payload,
    };
    let steps = [
        step(
            "PUT",
            format!("/products/{id}"),
            Some(r#"{"name":"Big mug","description":null}"#),
            200,
            "ProductUpdated",
            json!({"productId": id, "name": "Big mug", "description": null, "version": 2}),
        ),
        step(
            "PUT",
            format!("/products/{id}/price"),
            Some(r#"{"price":19.99,"currency":"USD"}"#),
            200,
            "ProductPriceChanged",
            json!({"productId": id, "price": "19.99", "currency": "USD", "version": 3}),
        ),
        step(
            "POST",
            format!("/products/{id}/deactivate"),
            None,
            200,
            "ProductDeactivated",
            json!({"productId": id, "version": 4}),
        ),
        step(
            "POST",
            format!("/products/{id}/activate"),
            None,
            200,
            "ProductActivated",
            json!({"productId": id, "version": 5}),
        ),
        step(
            "DELETE",
            format!("/products/{id}"),
            None,
            204,
            "ProductDeleted",
            json!({"productId": id, "version": 6}),
        ),
    ];
    let uuid: Uuid = id.parse().unwrap();
    for (n, s) in steps.into_iter().enumerate() {
        let Step { method, path, .. } = &s;
        let r = env.send(method, path, &h, s.body).await;
        assert_eq!(r.status, s.status, "{method} {path}: {}", r.body);
        let version = n as i32 + 2;
        if s.status == 200 {
            let p = r.json();
            assert_eq!(p["version"], version, "{p}");
            assert_eq!(r.header("etag"), Some(format!("\"{version}\"").as_str()));
            // The row and the event committed together, at the same version.
            let row = env
                .db
                .query_one("SELECT version FROM products WHERE id = $1", &[&uuid])
                .await
                .unwrap();
            assert_eq!(row.get::<_, i32>(0), version);
        } else {
            assert!(r.body.is_empty());
        }
        let events = env.outbox().await;
        assert_eq!(
            events.len(),
            n + 2,
            "exactly one new event after {method} {path}"
        );
        let last = events.last().unwrap();
        assert_eq!(last.event_type, s.event_type);
        assert_eq!(last.payload, s.payload);
        assert_eq!(last.aggregate_id, uuid);
        assert_eq!(
            last.correlation_id.map(|c| c.to_string()),
            Some(correlation.clone())
        );
    }
    assert_eq!(env.count("products").await, 0, "DELETE removed the row");

    // Prices stay exact decimals end to end.
    let q = env.create("MUG-2").await;
    let qid = q["id"].as_str().unwrap();
    let r = env
        .send(
            "PUT",
            &format!("/products/{qid}/price"),
            &[],
            Some(r#"{"price":"0.1","currency":"JPY"}"#),
        )
        .await;
    assert_eq!(r.json()["price"], "0.10");
    let price: String = env
        .db
        .query_one("SELECT price::text FROM products WHERE sku = 'MUG-2'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(price, "0.10");
}

#[tokio::test]
async fn invalid_requests_are_400_problems_and_write_nothing() {
    let env = setup().await;
    let p = env.create("PEN-1").await;
    let id = p["id"].as_str().unwrap().to_owned();
    let before = env.count("outbox_messages").await;

    let r = env
        .send(
            "POST",
            "/products",
            &[],
            Some(r#"{"sku":"","name":"  ","price":"1.234","currency":"eur"}"#),
        )
        .await;
    let body = r.problem(400, "invalid-request");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["sku", "name", "price", "currency"]);

    let price = format!("/products/{id}/price");
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("POST", "/products".into(), vec![], Some("{not json")),
        ("POST", "/products".into(), vec![], None),
        (
            "POST",
            "/products".into(),
            vec![],
            Some(r#"{"sku":"X","name":"X","price":"1","currency":"EUR","colour":"red"}"#),
        ),
        (
            "PUT",
            price.clone(),
            vec![],
            Some(r#"{"price":"-1","currency":"EUR"}"#),
        ),
        (
            "PUT",
            price.clone(),
            vec![],
            Some(r#"{"price":"1e3","currency":"EUR"}"#),
        ),
        (
            "PUT",
            price.clone(),
            vec![],
            Some(r#"{"price":"1.00","currency":"EURO"}"#),
        ),
        (
            "PUT",
            price.clone(),
            vec![],
            Some(r#"{"price":true,"currency":"EUR"}"#),
        ),
        (
            "PUT",
            format!("/products/{id}"),
            vec![],
            Some(r#"{"description":"no name"}"#),
        ),
        (
            "PUT",
            price.clone(),
            vec![("If-Match", "yesterday")],
            Some(r#"{"price":"1","currency":"EUR"}"#),
        ),
        (
            "PUT",
            price.clone(),
            vec![("X-Correlation-Id", "not-a-uuid")],
            Some(r#"{"price":"1","currency":"EUR"}"#),
        ),
        ("POST", "/products/not-a-uuid/activate".into(), vec![], None),
    ];
    for (method, path, headers, body) in cases {
        let r = env.send(method, &path, &headers, body).await;
        assert_eq!(r.status, 400, "{method} {path} {body:?}: {}", r.body);
        r.problem(400, "invalid-request");
    }
    assert_eq!(env.count("outbox_messages").await, before);
    let version: i32 = env
        .db
        .query_one("SELECT version FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 1);
}

#[tokio::test]
async fn duplicate_sku_is_409_and_unknown_id_is_404() {
    let env = setup().await;
    env.create("SKU-DUP").await;
    let body = r#"{"sku":"SKU-DUP","name":"Other","price":"1","currency":"EUR"}"#;
    let r = env.send("POST", "/products", &[], Some(body)).await;
    assert_eq!(r.problem(409, "duplicate-sku")["sku"], "SKU-DUP");

    let missing = Uuid::now_v7();
    let cases = [
        (
            "PUT",
            format!("/products/{missing}"),
            Some(r#"{"name":"x"}"#),
        ),
        (
            "PUT",
            format!("/products/{missing}/price"),
            Some(r#"{"price":"1","currency":"EUR"}"#),
        ),
        ("POST", format!("/products/{missing}/activate"), None),
        ("POST", format!("/products/{missing}/deactivate"), None),
        ("DELETE", format!("/products/{missing}"), None),
    ];
    for (method, path, body) in cases {
        let r = env.send(method, &path, &[("If-Match", "1")], body).await;
        let p = r.problem(404, "not-found");
        assert_eq!(p["productId"], missing.to_string(), "{method} {path}");
    }
    assert_eq!(env.count("outbox_messages").await, 1);
    assert_eq!(env.count("products").await, 1);
}

#[tokio::test]
async fn if_match_on_a_stale_version_is_a_409_and_changes_nothing() {
    let env = setup().await;
    let p = env.create("LAMP-1").await;
    let id = p["id"].as_str().unwrap().to_owned();
    let path = format!("/products/{id}");

    let r = env
        .send(
            "PUT",
            &path,
            &[("If-Match", "\"1\"")],
            Some(r#"{"name":"Lamp v2"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], 2);

    // A second writer that read version 1 loses.
    let r = env
        .send(
            "PUT",
            &path,
            &[("If-Match", "1")],
            Some(r#"{"name":"Lamp v2 (other)"}"#),
        )
        .await;
    let problem = r.problem(409, "version-conflict");
    assert_eq!(
        (
            problem["expectedVersion"].clone(),
            problem["currentVersion"].clone()
        ),
        (json!(1), json!(2))
    );
    for (method, path, body) in [
        (
            "PUT",
            format!("/products/{id}/price"),
            Some(r#"{"price":"2","currency":"EUR"}"#),
        ),
        ("POST", format!("/products/{id}/deactivate"), None),
        ("DELETE", format!("/products/{id}"), None),
    ] {
        let r = env.send(method, &path, &[("If-Match", "1")], body).await;
        r.problem(409, "version-conflict");
    }
    let name: String = env
        .db
        .query_one("SELECT name FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "Lamp v2");
    assert_eq!(env.count("outbox_messages").await, 2);

    // With the current version it goes through.
    let r = env.send("DELETE", &path, &[("If-Match", "2")], None).await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_first_result_and_writes_no_second_event() {
    let env = setup().await;
    let body = r#"{"sku":"KEY-1","name":"Kettle","price":"30","currency":"EUR"}"#;
    let key = [("Idempotency-Key", "create-kettle-1")];
    let first = env.send("POST", "/products", &key, Some(body)).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(first.header("idempotent-replayed").is_none());
    // The same request again, formatted differently: same product, no new row, no new event.
    let again = env
        .send("POST", "/products", &key, Some(&format!(" {body} ")))
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), first.json());
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(env.count("products").await, 1);
    assert_eq!(env.count("outbox_messages").await, 1);

    // The same key with another body is a client error.
    let other = r#"{"sku":"KEY-2","name":"Kettle","price":"30","currency":"EUR"}"#;
    let r = env.send("POST", "/products", &key, Some(other)).await;
    r.problem(422, "idempotency-key-reused");

    // Keys work for every command, 204s included.
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/products/{id}/price");
    let k2 = [("Idempotency-Key", "kettle-price-1")];
    let price = r#"{"price":"35.00","currency":"EUR"}"#;
    let a = env.send("PUT", &path, &k2, Some(price)).await;
    let b = env.send("PUT", &path, &k2, Some(price)).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.json()["version"], 2);
    assert_eq!(b.json(), a.json());
    let k3 = [("Idempotency-Key", "kettle-delete-1")];
    let path = format!("/products/{id}");
    let a = env.send("DELETE", &path, &k3, None).await;
    let b = env.send("DELETE", &path, &k3, None).await;
    assert_eq!((a.status, b.status), (204, 204));
    assert_eq!(b.header("idempotent-replayed"), Some("true"));
    let types: Vec<String> = env
        .outbox()
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        ["ProductCreated", "ProductPriceChanged", "ProductDeleted"]
    );

    // A failed command stores nothing: after fixing the state the same key runs the command.
    let r = env
        .send("DELETE", &path, &[("Idempotency-Key", "late")], None)
        .await;
    r.problem(404, "not-found");
    let stored: i64 = env
        .db
        .query_one(
            "SELECT count(*) FROM idempotency_keys WHERE key = 'late'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
    let metrics = env.registry.render();
    assert!(
        metrics
            .contains(r#"walcast_catalog_commands_total{command="create",outcome="replayed"} 1"#),
        "{metrics}"
    );
}
