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
//! "Same request" means the same method, path and JSON body, fingerprinted with `md5` in
//! Postgres. The body is compared exactly, token for token: only whitespace outside strings
//! is ignored. Numbers are never parsed (through `f64`, `1234567890123456.78` and
//! `1234567890123456.79` are one number), strings and key order are kept as sent.
//!
//! Keys are kept for [`KeyRetention::window`] (24 hours by default, as long as a client goes
//! on retrying one command), then deleted in small batches by the app's pruning task.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio_postgres::{Client, Transaction};

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

/// The bytes whose md5 identifies a request: method, path and the body without the
/// whitespace between JSON tokens. Everything else is kept byte for byte (numbers as written,
/// strings with their escapes), so two bodies match only if they say exactly the same.
pub(crate) fn fingerprint(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(method.len() + path.len() + body.len() + 2);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.push(b'\n');
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        out.push(b);
    }
    out
}

pub(crate) async fn claim(tx: &Transaction<'_>, key: &str, fingerprint: &[u8]) -> Result<Claim> {
    let claimed = tx
        .execute(
            "INSERT INTO idempotency_keys (key, request_hash, status_code, response_body) \
             VALUES ($1, md5($2::bytea), 0, 'null') ON CONFLICT (key) DO NOTHING",
            &[&key, &fingerprint],
        )
        .await
        .map_err(Error::pg("claiming the idempotency key"))?;
    if claimed == 1 {
        return Ok(Claim::Fresh);
    }
    let row = tx
        .query_one(
            "SELECT request_hash = md5($2::bytea), status_code, response_body \
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

/// How long idempotency keys are kept, and how they are pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRetention {
    /// A key older than this is deleted; a retry after it runs the command again. At least as
    /// long as a client retries one command (see `docs/delivery-guarantees.md`).
    pub window: Duration,
    /// Time between pruning passes.
    pub interval: Duration,
    /// Keys deleted per statement (each its own short transaction).
    pub batch_rows: u32,
}

impl Default for KeyRetention {
    fn default() -> KeyRetention {
        KeyRetention {
            window: Duration::from_secs(24 * 3600),
            interval: Duration::from_secs(60),
            batch_rows: 1000,
        }
    }
}

const PRUNE_KEYS: &str = "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY( \
     SELECT ctid FROM idempotency_keys \
     WHERE created_at < now() - make_interval(secs => $1::float8) LIMIT $2)) \
     AND created_at < now() - make_interval(secs => $1::float8)";
const KEY_STATS: &str = "SELECT GREATEST(c.reltuples, 0)::float8, \
     COALESCE(extract(epoch FROM now() - (SELECT min(created_at) FROM idempotency_keys)), 0)::float8 \
     FROM pg_class c WHERE c.oid = 'idempotency_keys'::regclass";

/// What one pruning pass did and saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Pruned {
    pub(crate) rows: u64,
    pub(crate) statements: u64,
    /// Planner estimate of the keys left.
    pub(crate) remaining: f64,
    /// Age of the oldest key left, seconds (0 when none).
    pub(crate) oldest_secs: f64,
}

/// Deletes the keys older than the window, `batch_rows` per statement, outside any command's
/// transaction. A claim in flight is not visible to it, so it is never deleted.
pub(crate) async fn prune(client: &Client, retention: &KeyRetention) -> Result<Pruned> {
    let window = retention.window.as_secs_f64();
    let batch = i64::from(retention.batch_rows.max(1));
    let mut done = Pruned::default();
    loop {
        let n = client
            .execute(PRUNE_KEYS, &[&window, &batch])
            .await
            .map_err(Error::pg("pruning idempotency keys"))?;
        done.rows += n;
        done.statements += 1;
        if n < batch as u64 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let row = client
        .query_one(KEY_STATS, &[])
        .await
        .map_err(Error::pg("reading the size of idempotency_keys"))?;
    done.remaining = row.try_get(0).map_err(Error::pg("reading reltuples"))?;
    done.oldest_secs = row
        .try_get(1)
        .map_err(Error::pg("reading the oldest key"))?;
    Ok(done)
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
        // Whitespace inside a string, and an escaped quote, are content.
        let spaced = fingerprint("PUT", "/p", br#"{"name":"a b"}"#);
        assert_ne!(spaced, fingerprint("PUT", "/p", br#"{"name":"ab"}"#));
        let quoted = fingerprint("PUT", "/p", br#"{"name":"a\" b"}"#);
        assert_ne!(quoted, fingerprint("PUT", "/p", br#"{"name":"a\"b"}"#));
    }

    #[test]
    fn fingerprint_compares_numbers_exactly() {
        // Through f64 each pair reads as one number; they are different prices.
        for (a, b) in [
            ("9007199254740992.00", "9007199254740992.01"),
            ("1234567890123456.78", "1234567890123456.79"),
            ("9007199254740993.00", "9007199254740994.00"),
            ("9007199254740993", "9007199254740992"),
        ] {
            let body = |p: &str| format!(r#"{{"price":{p}}}"#);
            assert_ne!(
                fingerprint("POST", "/products", body(a).as_bytes()),
                fingerprint("POST", "/products", body(b).as_bytes()),
                "{a} vs {b}"
            );
        }
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
