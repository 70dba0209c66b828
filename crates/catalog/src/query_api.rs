//! The query API: the read model, served round-robin by the read replicas that are healthy and
//! caught up (see [`crate::lag`] for the policy).
//!
//! ```text
//! GET /products?q=mug&page=1&page_size=20  -> {"items":[...],"page":1,"pageSize":20,"total":N,"replica":{...}}
//! GET /products/{id}                       -> {"product":{...},"replica":{...}}
//! ```
//!
//! Every answer (a 404 too) says which replica gave it and how far behind that replica was:
//! headers `X-Walcast-Replica`, `X-Walcast-Replica-Lag` (seconds), `X-Walcast-Replica-Lag-Bytes`
//! and `X-Walcast-Replica-Lsn`, and the same as `"replica"` in the JSON body. A 404 on a lagging
//! replica may just mean the product has not arrived there yet.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use walcast_telemetry::metrics::Registry;

use crate::error::{Error, Result};
use crate::lag::{LagPolicy, ReplicaStatus};
use crate::pool::PoolOptions;
use crate::product::Product;
use crate::read_model::{self, Page, Search};
use crate::replica::{ReplicaConfig, ReplicaSet};
use crate::write_api::product_id;

pub const REPLICA_HEADER: &str = "x-walcast-replica";
pub const LAG_HEADER: &str = "x-walcast-replica-lag";
pub const LAG_BYTES_HEADER: &str = "x-walcast-replica-lag-bytes";
pub const LSN_HEADER: &str = "x-walcast-replica-lsn";

const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;
const MAX_PAGE: u32 = 1_000_000;
const MAX_QUERY_CHARS: usize = 200;

/// The query API over a set of read replicas.
#[derive(Debug, Clone)]
pub struct QueryApi {
    replicas: ReplicaSet,
}

#[derive(Debug)]
enum Read {
    Get(Uuid),
    Search(Search),
}

#[derive(Debug)]
enum Answer {
    Product(Option<Product>),
    Page(Page),
}

impl QueryApi {
    /// A query API over `replicas` (none is connected yet: call [`QueryApi::probe`] before
    /// serving, then every `policy.probe_interval`).
    pub fn new(
        replicas: &[ReplicaConfig],
        policy: LagPolicy,
        pool: PoolOptions,
        registry: &Registry,
    ) -> Result<QueryApi> {
        Ok(QueryApi {
            replicas: ReplicaSet::new(replicas, policy, pool, registry)?,
        })
    }

    /// Probes every replica once: health, applied LSN and lag.
    pub async fn probe(&self) {
        self.replicas.probe().await;
    }

    /// Every replica's health and lag as of the last probe.
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.replicas.statuses()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/products", get(list))
            .route("/products/{id}", get(get_one))
            .with_state(self.clone())
    }

    /// Runs `read` on the next eligible replica, failing over to the others.
    async fn read(&self, read: &Read) -> Result<(Answer, ReplicaStatus)> {
        for i in self.replicas.candidates() {
            let Some(status) = self.replicas.status(i) else {
                continue;
            };
            match self.read_on(i, read).await {
                Ok(answer) => {
                    self.replicas.served(i);
                    return Ok((answer, status));
                }
                Err(e) => {
                    self.replicas.mark_down(i, &e);
                    self.replicas.failed_over(i);
                }
            }
        }
        Err(Error::NoReplica {
            reasons: self.replicas.reasons(),
        })
    }

    async fn read_on(&self, i: usize, read: &Read) -> Result<Answer> {
        let mut client = self.replicas.client(i).await?;
        Ok(match read {
            Read::Get(id) => Answer::Product(read_model::get(&client, *id).await?),
            Read::Search(s) => Answer::Page(read_model::search(&mut client, s).await?),
        })
    }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    q: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
}

async fn list(
    State(api): State<QueryApi>,
    params: std::result::Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let search = match params {
        Ok(Query(p)) => search(p),
        Err(e) => Err(Error::bad_request(format!("invalid query string: {e}"))),
    };
    let search = match search {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let (page, page_size) = (search.page, search.page_size);
    match api.read(&Read::Search(search)).await {
        Ok((Answer::Page(p), replica)) => {
            let body = json!({
                "items": p.items,
                "page": page,
                "pageSize": page_size,
                "total": p.total,
                "replica": replica_json(&replica),
            });
            with_replica(StatusCode::OK, body, &replica)
        }
        Ok((Answer::Product(_), _)) => {
            Error::Config("internal: a search answered a product".into()).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn get_one(State(api): State<QueryApi>, Path(id): Path<String>) -> Response {
    let id = match product_id(&id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match api.read(&Read::Get(id)).await {
        Ok((Answer::Product(Some(p)), replica)) => {
            let body = json!({ "product": p, "replica": replica_json(&replica) });
            with_replica(StatusCode::OK, body, &replica)
        }
        Ok((Answer::Product(None), replica)) => {
            let problem = Error::NotFound { id }
                .problem()
                .with("replica", replica_json(&replica));
            let mut response = problem.into_response();
            replica_headers(&mut response, &replica);
            response
        }
        Ok((Answer::Page(_), _)) => {
            Error::Config("internal: a get answered a page".into()).into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn search(p: ListParams) -> Result<Search> {
    let mut errors = Vec::new();
    let mut number = |field: &str, text: Option<String>, default: u32, max: u32| match text {
        None => default,
        Some(t) => match t.trim().parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                errors.push(crate::error::FieldError::new(
                    field,
                    format!("must be a whole number from 1 to {max}, got {t:?}"),
                ));
                default
            }
        },
    };
    let page = number("page", p.page, 1, MAX_PAGE);
    let page_size = number("page_size", p.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    let q = p.q.unwrap_or_default();
    if q.chars().count() > MAX_QUERY_CHARS {
        errors.push(crate::error::FieldError::new(
            "q",
            format!("must be at most {MAX_QUERY_CHARS} characters"),
        ));
    } else if q.contains('\0') {
        errors.push(crate::error::FieldError::new(
            "q",
            crate::product::NUL_MESSAGE,
        ));
    }
    if errors.is_empty() {
        Ok(Search { q, page, page_size })
    } else {
        Err(Error::invalid(errors))
    }
}

fn replica_json(r: &ReplicaStatus) -> Value {
    json!({
        "name": r.name,
        "lagSeconds": r.lag.as_secs_f64(),
        "lagBytes": r.lag_bytes,
        "appliedLsn": r.applied_lsn.to_string(),
    })
}

fn with_replica(status: StatusCode, body: Value, replica: &ReplicaStatus) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    replica_headers(&mut response, replica);
    response
}

fn replica_headers(response: &mut Response, r: &ReplicaStatus) {
    let headers = response.headers_mut();
    let values = [
        (REPLICA_HEADER, r.name.clone()),
        (LAG_HEADER, format!("{:.3}", r.lag.as_secs_f64())),
        (LAG_BYTES_HEADER, r.lag_bytes.to_string()),
        (LSN_HEADER, r.applied_lsn.to_string()),
    ];
    for (name, value) in values {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn params(q: Option<&str>, page: Option<&str>, size: Option<&str>) -> ListParams {
        ListParams {
            q: q.map(Into::into),
            page: page.map(Into::into),
            page_size: size.map(Into::into),
        }
    }

    #[test]
    fn paging_defaults_and_bounds() {
        let s = search(params(None, None, None)).unwrap();
        assert_eq!((s.page, s.page_size, s.q.as_str()), (1, 20, ""));
        let s = search(params(Some("mug"), Some("3"), Some("100"))).unwrap();
        assert_eq!((s.page, s.page_size), (3, 100));
        for (page, size) in [
            ("0", "10"),
            ("x", "10"),
            ("1", "0"),
            ("1", "101"),
            ("-1", "5"),
        ] {
            assert!(
                search(params(None, Some(page), Some(size))).is_err(),
                "{page} {size}"
            );
        }
    }
}
