//! Sending a batch's statements on the target's connection: prepared once per connection,
//! several in flight at once, and the rows read back turned into a plan's [`Snapshot`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio_postgres::{Client, Row, Statement};

use crate::batch::decode_held;
use crate::error::{Error, Result};
use crate::plan::{Held, Snapshot};
use crate::projection::{Position, Table};

/// The prepared statement for `text`, from the connection's cache.
pub(crate) async fn stmt(
    cache: &mut HashMap<String, Statement>,
    client: &Client,
    target: &str,
    text: &str,
) -> Result<Statement> {
    if let Some(s) = cache.get(text) {
        return Ok(s.clone());
    }
    let s = client.prepare(text).await.map_err(Error::pg(
        target,
        format!("preparing {}", first_words(text)),
    ))?;
    cache.insert(text.to_owned(), s.clone());
    Ok(s)
}

/// Snapshot of what `table` holds for some keys, from the rows of [`crate::sql::snapshot_rows`],
/// [`crate::sql::SNAPSHOT_TOMBSTONES`] and [`crate::sql::SNAPSHOT_HELD`].
pub(crate) fn snapshot(
    target: &str,
    table: &Table,
    rows: &[Row],
    tombstones: &[Row],
    held: &[Row],
) -> Result<Snapshot> {
    let position = |r: &Row| {
        (
            r.get(0),
            Position {
                version: r.get(1),
                occurred_at: r.get(2),
            },
        )
    };
    let mut snap = Snapshot {
        rows: rows.iter().map(position).collect(),
        tombstones: tombstones.iter().map(position).collect(),
        ..Snapshot::default()
    };
    for r in held {
        let key: String = r.get(0);
        let event_id: uuid::Uuid = r.get(1);
        if r.get::<_, bool>(3) {
            snap.dead_letters.entry(key).or_default().push(event_id);
            continue;
        }
        let text: Option<String> = r.get(6);
        let op = decode_held(table, text.as_deref().unwrap_or("null")).map_err(|why| {
            Error::Config(format!(
                "target {target}: the held change {event_id} of {} key {key} cannot be read \
                 ({why}); restore the mapping it was held under, or rebuild the target",
                table.name
            ))
        })?;
        snap.held.entry(key).or_default().push(Held {
            event_id,
            event_type: r.get(2),
            pos: Position {
                version: r.get(4),
                occurred_at: r.get(5),
            },
            op,
            stored: true,
        });
    }
    Ok(snap)
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

/// One statement of a pipelined round trip.
pub(crate) type Flight<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Runs `flights` on one connection, sending them in order: each is polled for the first
/// time in list order, which is when tokio-postgres queues its messages. Stops at the first
/// error (the statements behind it then fail or roll back on the server).
pub(crate) async fn in_order<T>(mut flights: Vec<Flight<'_, T>>) -> Result<Vec<T>> {
    let mut done: Vec<Option<T>> = flights.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in flights.iter_mut().zip(done.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                Poll::Ready(Ok(v)) => *slot = Some(v),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await?;
    Ok(done.into_iter().flatten().collect())
}
