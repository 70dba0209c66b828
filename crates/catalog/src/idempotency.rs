//! `Idempotency-Key`: a retried command returns its first result and writes no second event.
//!
//! The key is claimed in the command's own transaction, before the command runs:
//!
//! ```text
//! BEGIN
//!   INSERT INTO idempotency_keys ... ON CONFLICT (key) DO NOTHING   -- claim
//!     inserted  -> run the command, UPDATE the key row with its reply, COMMIT
//!     conflict  -> SELECT the stored reply: same request -> replay it, other -> 422
//! ```
//!
//! A concurrent retry with the same key blocks on the claimed row until the first transaction
//! ends: after a COMMIT it sees the stored reply and replays it; after a ROLLBACK (the command
//! failed) its own INSERT succeeds and it runs the command itself. So a key never stands for
//! two committed events, and only successful replies are stored: a failed command (400, 404,
//! 409) stores nothing and a retry is evaluated again, against the state at that time.
//!
//! "Same request" means the same method, path and JSON body (compared after parsing, so
//! whitespace does not matter), fingerprinted with `md5` in Postgres.

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio_postgres::Transaction;

use crate::error::{Error, Result};

pub(crate) const HEADER: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 255;

/// What a command answered; stored per idempotency key and replayed as it was.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Option<Value>,
}

/// The outcome of claiming a key.
#[derive(Debug)]
pub(crate) enum Claim {
    /// First use: run the command, then [`record`] its reply.
    Fresh,
    /// Used before for the same request: answer this, change nothing.
    Replay(Reply),
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
pub(crate) fn key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            Error::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

/// The text whose md5 identifies a request.
pub(crate) fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<Value>(body)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    format!("{method} {path}\n{canonical}")
}

pub(crate) async fn claim(tx: &Transaction<'_>, key: &str, fingerprint: &str) -> Result<Claim> {
    let claimed = tx
        .execute(
            "INSERT INTO idempotency_keys (key, request_hash, status_code, response_body) \
             VALUES ($1, md5($2), 0, 'null') ON CONFLICT (key) DO NOTHING",
            &[&key, &fingerprint],
        )
        .await
        .map_err(Error::pg("claiming the idempotency key"))?;
    if claimed == 1 {
        return Ok(Claim::Fresh);
    }
    let row = tx
        .query_one(
            "SELECT request_hash = md5($2), status_code, response_body \
             FROM idempotency_keys WHERE key = $1",
            &[&key, &fingerprint],
        )
        .await
        .map_err(Error::pg("reading the idempotency key"))?;
    let same: bool = row.try_get(0).map_err(Error::pg("reading request_hash"))?;
    if !same {
        return Err(Error::IdempotencyMismatch {
            key: key.to_owned(),
        });
    }
    let status: i32 = row.try_get(1).map_err(Error::pg("reading status_code"))?;
    let body: Value = row.try_get(2).map_err(Error::pg("reading response_body"))?;
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    Ok(Claim::Replay(Reply {
        status,
        body: (!body.is_null()).then_some(body),
    }))
}

/// Stores the reply of the command that claimed `key`, in the command's transaction.
pub(crate) async fn record(tx: &Transaction<'_>, key: &str, reply: &Reply) -> Result<()> {
    let body = reply.body.clone().unwrap_or(Value::Null);
    tx.execute(
        "UPDATE idempotency_keys SET status_code = $2, response_body = $3 WHERE key = $1",
        &[&key, &i32::from(reply.status.as_u16()), &body],
    )
    .await
    .map_err(Error::pg("storing the idempotent reply"))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_whitespace_not_content() {
        let a = fingerprint("PUT", "/products/1", br#"{"name": "a"}"#);
        let b = fingerprint("PUT", "/products/1", br#"{ "name":"a" }"#);
        let c = fingerprint("PUT", "/products/1", br#"{"name":"b"}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, fingerprint("PUT", "/products/2", br#"{"name":"a"}"#));
    }

    #[test]
    fn key_header_is_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(key(&h).ok(), Some(None));
        h.insert(HEADER, "abc-123".parse().unwrap());
        assert_eq!(key(&h).ok(), Some(Some("abc-123".into())));
        h.insert(HEADER, "has space".parse().unwrap());
        assert!(key(&h).is_err());
    }
}
