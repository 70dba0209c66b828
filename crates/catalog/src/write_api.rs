//! The write API: product commands over HTTP, each one transaction on the write database.
//!
//! ```text
//! POST   /products                  {"sku","name","description","price","currency"} -> 201
//! PUT    /products/{id}             {"name","description"}                          -> 200
//! PUT    /products/{id}/price       {"price","currency"}                            -> 200
//! POST   /products/{id}/activate                                                    -> 200
//! POST   /products/{id}/deactivate                                                  -> 200
//! DELETE /products/{id}                                                             -> 204
//! ```
//!
//! Request headers: `If-Match: <version>` (optimistic concurrency, 409 on mismatch; a weak
//! ETag `W/"3"` is a 412, since `If-Match` compares strongly),
//! `Idempotency-Key` (see [`crate::idempotency`]), `X-Correlation-Id: <uuid>` (copied into the
//! outbox row; a new one when absent). Responses carry `ETag: "<version>"`, the correlation id,
//! `Location` on 201 and `Idempotent-Replayed: true` on a replay. Errors are RFC 7807 problems.

use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use bytes::Bytes;
use deadpool_postgres::Pool;
use uuid::Uuid;
use walcast_postgres::Dsn;
use walcast_telemetry::metrics::Registry;

use crate::command::{self, Command};
use crate::error::{Error, Result};
use crate::idempotency::{self, Claim, KeyRetention, Reply};
use crate::metrics::WriteMetrics;
use crate::pool::{self, PoolOptions};
use crate::product::{Details, NewProduct, PriceChange};

pub(crate) const CORRELATION_HEADER: &str = "x-correlation-id";
const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The write API over one write database.
#[derive(Debug, Clone)]
pub struct WriteApi {
    pool: Pool,
    metrics: WriteMetrics,
}

impl WriteApi {
    /// A write API on the write database `dsn`. Connects lazily: see [`WriteApi::check`].
    pub fn new(dsn: &Dsn, pool: PoolOptions, registry: &Registry) -> Result<WriteApi> {
        Ok(WriteApi {
            pool: pool::build(dsn, pool)?,
            metrics: WriteMetrics::new(registry),
        })
    }

    /// Whether the write database answers and has the write schema.
    pub async fn check(&self) -> Result<()> {
        let client = self.pool.get().await.map_err(|source| Error::Pool {
            db: "write".into(),
            source,
        })?;
        client
            .execute(
                "SELECT 1 FROM products, outbox_messages, idempotency_keys WHERE false",
                &[],
            )
            .await
            .map_err(Error::pg(
                "checking the write schema (apply it with `walcast schema`)",
            ))?;
        Ok(())
    }

    /// One pruning pass over `idempotency_keys` (see [`KeyRetention`]), on a pooled connection
    /// outside any command.
    pub(crate) async fn prune_keys(&self, retention: &KeyRetention) -> Result<idempotency::Pruned> {
        let client = self.pool.get().await.map_err(|source| Error::Pool {
            db: "write".into(),
            source,
        })?;
        idempotency::prune(&client, retention).await
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/products", post(create))
            .route("/products/{id}", put(update).delete(delete))
            .route("/products/{id}/price", put(change_price))
            .route("/products/{id}/activate", post(activate))
            .route("/products/{id}/deactivate", post(deactivate))
            .with_state(self.clone())
    }

    async fn handle(
        &self,
        name: &'static str,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        parse: impl FnOnce() -> Result<Command>,
    ) -> Response {
        let started = Instant::now();
        let correlation = correlation_id(headers);
        let echoed = correlation.as_ref().ok().copied();
        let result = match correlation {
            Ok(id) => self.run(method, path, headers, body, parse, id).await,
            Err(e) => Err(e),
        };
        let (outcome, mut response) = match result {
            Ok((reply, replayed)) => (
                if replayed { "replayed" } else { "ok" },
                respond(reply, replayed),
            ),
            Err(e) if e.is_client_error() => ("rejected", e.into_response()),
            Err(e) => ("failed", e.into_response()),
        };
        self.metrics
            .record(name, outcome, started.elapsed().as_secs_f64());
        if let Some(id) = echoed
            && let Ok(v) = HeaderValue::from_str(&id.to_string())
        {
            response.headers_mut().insert(CORRELATION_HEADER, v);
        }
        tracing::debug!(command = name, %path, outcome, "write command");
        response
    }

    async fn run(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        parse: impl FnOnce() -> Result<Command>,
        correlation_id: Uuid,
    ) -> Result<(Reply, bool)> {
        let if_match = if_match(headers)?;
        let key = idempotency::key(headers)?;
        let command = parse()?;
        let mut client = self.pool.get().await.map_err(|source| Error::Pool {
            db: "write".into(),
            source,
        })?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::pg("starting a transaction"))?;
        if let Some(key) = &key {
            let fingerprint = idempotency::fingerprint(method, path, body);
            if let Claim::Replay(reply) = idempotency::claim(&tx, key, &fingerprint).await? {
                return Ok((reply, true));
            }
        }
        let reply = command::execute(&tx, command, if_match, correlation_id).await?;
        if let Some(key) = &key {
            idempotency::record(&tx, key, &reply).await?;
        }
        tx.commit().await.map_err(Error::pg("committing"))?;
        Ok((reply, false))
    }
}

async fn create(State(api): State<WriteApi>, headers: HeaderMap, body: Bytes) -> Response {
    let parse = || NewProduct::parse(&body).map(Command::Create);
    api.handle("create", "POST", "/products", &headers, &body, parse)
        .await
}

async fn update(
    State(api): State<WriteApi>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parse = || {
        let id = product_id(&id)?;
        Ok(Command::Update {
            id,
            details: Details::parse(&body)?,
        })
    };
    let path = format!("/products/{id}");
    api.handle("update", "PUT", &path, &headers, &body, parse)
        .await
}

async fn change_price(
    State(api): State<WriteApi>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parse = || {
        let id = product_id(&id)?;
        Ok(Command::ChangePrice {
            id,
            change: PriceChange::parse(&body)?,
        })
    };
    let path = format!("/products/{id}/price");
    api.handle("change_price", "PUT", &path, &headers, &body, parse)
        .await
}

async fn activate(
    State(api): State<WriteApi>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    set_active(api, id, headers, true).await
}

async fn deactivate(
    State(api): State<WriteApi>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    set_active(api, id, headers, false).await
}

async fn set_active(api: WriteApi, id: String, headers: HeaderMap, active: bool) -> Response {
    let parse = || {
        Ok(Command::SetActive {
            id: product_id(&id)?,
            active,
        })
    };
    let (name, verb) = if active {
        ("activate", "activate")
    } else {
        ("deactivate", "deactivate")
    };
    let path = format!("/products/{id}/{verb}");
    api.handle(name, "POST", &path, &headers, b"", parse).await
}

async fn delete(
    State(api): State<WriteApi>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let parse = || {
        Ok(Command::Delete {
            id: product_id(&id)?,
        })
    };
    let path = format!("/products/{id}");
    api.handle("delete", "DELETE", &path, &headers, b"", parse)
        .await
}

/// The reply as HTTP: the product as JSON with its version as ETag, or an empty 204.
fn respond(reply: Reply, replayed: bool) -> Response {
    let mut response = match &reply.body {
        Some(body) => (reply.status, axum::Json(body.clone())).into_response(),
        None => reply.status.into_response(),
    };
    let headers = response.headers_mut();
    if let Some(body) = &reply.body {
        if let Some(v) = body.get("version").and_then(|v| v.as_i64())
            && let Ok(etag) = HeaderValue::from_str(&format!("\"{v}\""))
        {
            headers.insert(header::ETAG, etag);
        }
        if reply.status == StatusCode::CREATED
            && let Some(id) = body.get("id").and_then(|v| v.as_str())
            && let Ok(location) = HeaderValue::from_str(&format!("/products/{id}"))
        {
            headers.insert(header::LOCATION, location);
        }
    }
    if replayed {
        headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

pub(crate) fn product_id(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| Error::field("id", format!("must be a UUID, got {text:?}")))
}

/// `If-Match`: a version, bare (`3`) or as the strong ETag we send (`"3"`); `*` is no check.
/// A weak tag (`W/"3"`) is a 412: `If-Match` compares strongly, and a weak tag never matches.
fn if_match(headers: &HeaderMap) -> Result<Option<i32>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    if text.starts_with("W/") {
        return Err(Error::WeakEtag {
            tag: text.to_owned(),
        });
    }
    let bare = text.trim_matches('"');
    match bare.parse::<i32>() {
        Ok(v) if v >= 0 => Ok(Some(v)),
        _ => Err(Error::bad_request(format!(
            "If-Match must be a product version such as \"3\", got {text:?}"
        ))),
    }
}

/// `X-Correlation-Id` (a UUID), or a new UUIDv7 when the client sent none.
fn correlation_id(headers: &HeaderMap) -> Result<Uuid> {
    match headers.get(CORRELATION_HEADER) {
        None => Ok(Uuid::now_v7()),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .ok_or_else(|| Error::bad_request("X-Correlation-Id must be a UUID")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(if_match(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(if_match(&headers("if-match", "3")).ok(), Some(Some(3)));
        assert_eq!(if_match(&headers("if-match", "\"3\"")).ok(), Some(Some(3)));
        assert!(matches!(
            if_match(&headers("if-match", "W/\"7\"")),
            Err(Error::WeakEtag { .. })
        ));
        assert_eq!(if_match(&headers("if-match", "*")).ok(), Some(None));
        assert!(if_match(&headers("if-match", "abc")).is_err());
        assert!(if_match(&headers("if-match", "-1")).is_err());
    }

    #[test]
    fn correlation_ids() {
        let id = "0190b7a2-6f1c-7c52-9a53-0e4c1c4b5f10";
        let parsed = correlation_id(&headers(CORRELATION_HEADER, id));
        assert_eq!(parsed.ok().map(|u| u.to_string()), Some(id.to_owned()));
        assert!(correlation_id(&headers(CORRELATION_HEADER, "nope")).is_err());
        assert!(correlation_id(&HeaderMap::new()).is_ok());
    }
}
