//! The one error type of the catalog app, classified retryable or not, and mapped to the
//! problem body a client sees.
//!
//! *Client* errors (400, 404, 409, 422) describe the request: retrying it unchanged gives the
//! same answer. *Retryable* errors are the database being unreachable or a serialization
//! failure: the same request can succeed later (503 with `Retry-After`). Anything else is a
//! bug or a broken schema (500); its cause goes to the log, never to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use crate::problem::Problem;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Everything that can go wrong in `walcast-catalog`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or fails validation (400).
    #[error("invalid request: {detail}")]
    Invalid {
        detail: String,
        errors: Vec<FieldError>,
    },

    /// No product with this id (404).
    #[error("no product with id {id}")]
    NotFound { id: Uuid },

    /// `If-Match` named another version than the product has (409).
    #[error("product {id} is at version {current}, not {expected}")]
    VersionConflict {
        id: Uuid,
        expected: i32,
        current: i32,
    },

    /// `If-Match` sent a weak entity tag (412): under RFC 9110's strong comparison, which
    /// `If-Match` uses, a weak tag never matches.
    #[error("If-Match: {tag} is a weak entity tag, which never matches (RFC 9110, 13.1.1)")]
    WeakEtag { tag: String },

    /// Another product already has this SKU (409).
    #[error("a product with sku {sku:?} already exists")]
    DuplicateSku { sku: String },

    /// The `Idempotency-Key` was used before for another request (422).
    #[error("idempotency key {key:?} was used for a different request")]
    IdempotencyMismatch { key: String },

    /// No read replica is healthy and caught up (503).
    #[error("no read replica can serve: {reasons}")]
    NoReplica { reasons: String },

    /// No database connection could be had from the pool (503).
    #[error("database {db}: {source}")]
    Pool {
        db: String,
        #[source]
        source: deadpool_postgres::PoolError,
    },

    /// A statement failed.
    #[error("{context}: {source}")]
    Postgres {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    /// The app cannot start with this configuration; the message names the fix.
    #[error("catalog config: {0}")]
    Config(String),

    /// A listener failed.
    #[error("serving http: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A validation error with one invalid field.
    pub(crate) fn field(field: &str, message: impl Into<String>) -> Error {
        Error::invalid(vec![FieldError::new(field, message)])
    }

    /// A validation error listing every invalid field.
    pub(crate) fn invalid(errors: Vec<FieldError>) -> Error {
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} invalid fields: {}", errors.len(), fields.join(", ")),
        };
        Error::Invalid { detail, errors }
    }

    /// A malformed request that is not about one field (bad JSON, bad header).
    pub(crate) fn bad_request(detail: impl Into<String>) -> Error {
        Error::Invalid {
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub(crate) fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Postgres { context, source }
    }

    /// The message with every cause appended (tokio-postgres puts the server's message in the
    /// source, not in its own `Display`).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        out
    }

    /// Whether the same request may succeed later without anybody changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Pool { .. } | Error::NoReplica { .. } => true,
            Error::Postgres { source, .. } => pg_retryable(source),
            Error::Invalid { .. }
            | Error::NotFound { .. }
            | Error::VersionConflict { .. }
            | Error::WeakEtag { .. }
            | Error::DuplicateSku { .. }
            | Error::IdempotencyMismatch { .. }
            | Error::Config(_)
            | Error::Io(_) => false,
        }
    }

    /// Whether this says the request was wrong (4xx) rather than the service (5xx).
    pub fn is_client_error(&self) -> bool {
        self.problem().status().is_client_error()
    }

    /// The problem body a client sees.
    pub fn problem(&self) -> Problem {
        use StatusCode as S;
        match self {
            Error::Invalid { detail, errors } => {
                let p = Problem::new(S::BAD_REQUEST, "invalid-request", "Invalid request", detail);
                if errors.is_empty() {
                    p
                } else {
                    p.with("errors", serde_json::to_value(errors).unwrap_or_default())
                }
            }
            Error::NotFound { id } => Problem::new(
                S::NOT_FOUND,
                "not-found",
                "Product not found",
                self.to_string(),
            )
            .with("productId", id.to_string()),
            Error::VersionConflict {
                id,
                expected,
                current,
            } => Problem::new(
                S::CONFLICT,
                "version-conflict",
                "Version conflict",
                format!(
                    "{self}; read the product again and retry with If-Match: {current} if the \
                     change still applies"
                ),
            )
            .with("productId", id.to_string())
            .with("expectedVersion", *expected)
            .with("currentVersion", *current),
            Error::WeakEtag { tag } => Problem::new(
                S::PRECONDITION_FAILED,
                "weak-etag",
                "Weak ETag in If-Match",
                format!(
                    "{self}; send the strong ETag this API returns (\"3\", not W/\"3\"): a \
                     proxy that compresses responses may have weakened it on the way"
                ),
            )
            .with("ifMatch", tag.clone()),
            Error::DuplicateSku { sku } => Problem::new(
                S::CONFLICT,
                "duplicate-sku",
                "Duplicate SKU",
                self.to_string(),
            )
            .with("sku", sku.clone()),
            Error::IdempotencyMismatch { .. } => Problem::new(
                S::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
                format!("{self}; use a new key for a new request"),
            ),
            Error::NoReplica { .. } => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "no-replica",
                "No read replica available",
                self.to_string(),
            )
            .header("retry-after", "1"),
            Error::Pool { .. } => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "Database unavailable",
                "the database cannot be reached; retry later",
            )
            .header("retry-after", "1"),
            Error::Postgres { .. } if self.is_retryable() => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "Database unavailable",
                "the database failed transiently; retry later",
            )
            .header("retry-after", "1"),
            Error::Postgres { .. } | Error::Config(_) | Error::Io(_) => Problem::new(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the request failed inside the service; its log has the cause",
            ),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status().is_server_error() {
            tracing::warn!(error = %self.chain(), retryable = self.is_retryable(), "request failed");
        }
        problem.into_response()
    }
}

/// Connection loss, admin shutdown, serialization failure, deadlock, too many connections:
/// the table in [`walcast_postgres::sqlstate`].
fn pg_retryable(e: &tokio_postgres::Error) -> bool {
    walcast_postgres::sqlstate::connection_is_transient(e)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn validation_lists_every_field() {
        let e = Error::invalid(vec![
            FieldError::new("sku", "must not be empty"),
            FieldError::new("price", "at most 2 decimals"),
        ]);
        let body = e.problem().body();
        assert_eq!(body["status"], 400);
        assert_eq!(body["detail"], "2 invalid fields: sku, price");
        assert_eq!(body["errors"][1]["field"], "price");
        assert!(!e.is_retryable());
    }

    #[test]
    fn statuses() {
        let id = Uuid::nil();
        assert_eq!(Error::NotFound { id }.problem().status(), 404);
        let conflict = Error::VersionConflict {
            id,
            expected: 1,
            current: 2,
        };
        assert_eq!(conflict.problem().status(), 409);
        assert_eq!(conflict.problem().body()["currentVersion"], 2);
        let dup = Error::DuplicateSku { sku: "A".into() };
        assert_eq!(dup.problem().status(), 409);
        let key = Error::IdempotencyMismatch { key: "k".into() };
        assert_eq!(key.problem().status(), 422);
        assert!(
            Error::NoReplica {
                reasons: "x".into()
            }
            .is_retryable()
        );
    }
}
