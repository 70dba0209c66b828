//! RFC 7807 problem details: every error of both APIs is an `application/problem+json` body
//! with `type`, `title`, `status` and `detail`, plus extension members where a client can act
//! on them (`errors` per invalid field, `currentVersion` on a conflict).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// The media type of a problem body (RFC 7807 section 3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem response. `kind` becomes the `type` URI `urn:walcast:problem:<kind>`, which a
/// client can match on without parsing `detail`.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    extensions: Map<String, Value>,
    headers: Vec<(&'static str, String)>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            extensions: Map::new(),
            headers: Vec::new(),
        }
    }

    /// Adds an extension member to the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a response header (e.g. `Retry-After`, or the replica that answered).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Problem {
        self.headers.push((name, value.into()));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `type` member.
    pub fn type_uri(&self) -> String {
        format!("urn:walcast:problem:{}", self.kind)
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), self.type_uri().into());
        body.insert("title".into(), self.title.into());
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.clone().into());
        for (k, v) in &self.extensions {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        response
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_rfc_7807_members_and_extensions() {
        let p = Problem::new(
            StatusCode::CONFLICT,
            "version-conflict",
            "Version conflict",
            "product is at version 3",
        )
        .with("currentVersion", 3);
        let body = p.body();
        assert_eq!(body["type"], "urn:walcast:problem:version-conflict");
        assert_eq!(body["title"], "Version conflict");
        assert_eq!(body["status"], 409);
        assert_eq!(body["detail"], "product is at version 3");
        assert_eq!(body["currentVersion"], 3);
    }
}
