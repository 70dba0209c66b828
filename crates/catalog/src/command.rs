//! The write commands. Each runs inside the caller's transaction and does exactly two writes:
//! it changes one `products` row (version + 1) and appends one outbox event carrying the new
//! version. The caller commits both together, or neither.
//!
//! Optimistic concurrency: with `If-Match: <version>` the UPDATE (or DELETE) only matches the
//! row at that version. Concurrent commands on one product serialize on its row lock, so of two
//! commands that both expected version 3, the second re-evaluates its WHERE against version 4,
//! matches nothing and answers 409.

use axum::http::StatusCode;
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::idempotency::Reply;
use crate::outbox::{self, Event};
use crate::product::{Details, NewProduct, PriceChange, Product, WRITE_COLUMNS};

/// One write command, validated.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    Create(NewProduct),
    Update { id: Uuid, details: Details },
    ChangePrice { id: Uuid, change: PriceChange },
    SetActive { id: Uuid, active: bool },
    Delete { id: Uuid },
}

/// Runs `command` in `tx` and returns the reply to send once `tx` has committed.
pub(crate) async fn execute(
    tx: &Transaction<'_>,
    command: Command,
    if_match: Option<i32>,
    correlation_id: Uuid,
) -> Result<Reply> {
    let (status, event) = match command {
        Command::Create(new) => (StatusCode::CREATED, Event::Created(create(tx, new).await?)),
        Command::Update { id, details } => {
            let sql = format!(
                "UPDATE products SET name = $3, description = $4, version = version + 1, \
                 updated_at = now() WHERE id = $1 AND ($2::int4 IS NULL OR version = $2) \
                 RETURNING {WRITE_COLUMNS}"
            );
            let params: [&(dyn ToSql + Sync); 2] = [&details.name, &details.description];
            let p = update(tx, id, if_match, &sql, &params).await?;
            (StatusCode::OK, Event::Updated(p))
        }
        Command::ChangePrice { id, change } => {
            let sql = format!(
                "UPDATE products SET price = $3::text::numeric, currency = $4, \
                 version = version + 1, updated_at = now() \
                 WHERE id = $1 AND ($2::int4 IS NULL OR version = $2) RETURNING {WRITE_COLUMNS}"
            );
            let (price, currency) = (change.price.as_str(), change.currency.as_str());
            let params: [&(dyn ToSql + Sync); 2] = [&price, &currency];
            let p = update(tx, id, if_match, &sql, &params).await?;
            (StatusCode::OK, Event::PriceChanged(p))
        }
        Command::SetActive { id, active } => {
            let sql = format!(
                "UPDATE products SET is_active = $3, version = version + 1, updated_at = now() \
                 WHERE id = $1 AND ($2::int4 IS NULL OR version = $2) RETURNING {WRITE_COLUMNS}"
            );
            let p = update(tx, id, if_match, &sql, &[&active]).await?;
            let event = if active {
                Event::Activated(p)
            } else {
                Event::Deactivated(p)
            };
            (StatusCode::OK, event)
        }
        Command::Delete { id } => {
            let row = tx
                .query_opt(
                    "DELETE FROM products WHERE id = $1 AND ($2::int4 IS NULL OR version = $2) \
                     RETURNING version",
                    &[&id, &if_match],
                )
                .await
                .map_err(Error::pg("deleting the product"))?;
            let Some(row) = row else {
                return Err(missed(tx, id, if_match).await);
            };
            let version: i32 = row.try_get(0).map_err(Error::pg("reading version"))?;
            let version = version + 1;
            (StatusCode::NO_CONTENT, Event::Deleted { id, version })
        }
    };
    outbox::append(tx, &event, correlation_id).await?;
    let body = event
        .product()
        .map(|p| serde_json::to_value(p).unwrap_or_default());
    Ok(Reply { status, body })
}

async fn create(tx: &Transaction<'_>, new: NewProduct) -> Result<Product> {
    let id = Uuid::now_v7();
    let sql = format!(
        "INSERT INTO products (id, sku, name, description, price, currency, is_active, \
         created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5::text::numeric, $6, true, now(), now(), 1) \
         RETURNING {WRITE_COLUMNS}"
    );
    let row = tx
        .query_one(
            &sql,
            &[
                &id,
                &new.sku,
                &new.name,
                &new.description,
                &new.price.as_str(),
                &new.currency.as_str(),
            ],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                Error::DuplicateSku {
                    sku: new.sku.clone(),
                }
            } else {
                Error::pg("inserting the product")(e)
            }
        })?;
    Product::from_row(&row)
}

/// Runs a versioned UPDATE whose `$1` is the id, `$2` the expected version and `$3..` `rest`.
async fn update(
    tx: &Transaction<'_>,
    id: Uuid,
    if_match: Option<i32>,
    sql: &str,
    rest: &[&(dyn ToSql + Sync)],
) -> Result<Product> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &if_match];
    params.extend_from_slice(rest);
    match tx
        .query_opt(sql, &params)
        .await
        .map_err(Error::pg("updating the product"))?
    {
        Some(row) => Product::from_row(&row),
        None => Err(missed(tx, id, if_match).await),
    }
}

/// Why a versioned statement matched no row: the product is gone, or at another version.
async fn missed(tx: &Transaction<'_>, id: Uuid, if_match: Option<i32>) -> Error {
    let row = match tx
        .query_opt("SELECT version FROM products WHERE id = $1", &[&id])
        .await
    {
        Ok(row) => row,
        Err(e) => return Error::pg("reading the product version")(e),
    };
    match (row.and_then(|r| r.try_get::<_, i32>(0).ok()), if_match) {
        (Some(current), Some(expected)) => Error::VersionConflict {
            id,
            expected,
            current,
        },
        _ => Error::NotFound { id },
    }
}
