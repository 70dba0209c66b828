//! Shared by the sink benches: the envelope headers the source writes, and whether every
//! target has stored its progress to the end.

use rdkafka::message::{Header, OwnedHeaders};

/// `id`, `event_type`, `occurred_at` and `walcast.commit_lsn`, as the source writes them.
pub fn envelope(id: &str, event_type: &str, occurred_at: &str, commit_lsn: &str) -> OwnedHeaders {
    [
        ("id", id),
        ("event_type", event_type),
        ("occurred_at", occurred_at),
        ("walcast.commit_lsn", commit_lsn),
    ]
    .into_iter()
    .fold(OwnedHeaders::new_with_capacity(4), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// True when every client's `walcast_offsets` sums to `total` (a topic that started at 0).
pub async fn all_drained(clients: &[tokio_postgres::Client], total: i64) -> bool {
    for c in clients {
        let p: Option<i64> = c
            .query_one("SELECT sum(next_offset)::bigint FROM walcast_offsets", &[])
            .await
            .ok()
            .and_then(|r| r.get(0));
        if p != Some(total) {
            return false;
        }
    }
    true
}
