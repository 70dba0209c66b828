//! Catalog events and the outbox row that carries each of them.
//!
//! The row is inserted in the transaction that changes `products`, so an event exists exactly
//! when its change committed: walcast's source reads the INSERT from the WAL and publishes it,
//! and nothing here talks to Kafka. Payloads are camelCase JSON with the product's new
//! `version`; the sink's projection (`connectors/catalog-read-sink.toml`) reads exactly these
//! fields, so a change here is a change of the event contract.

use serde_json::{Value, json};
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::product::Product;

/// One catalog event, built from the product as the command left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Created(Product),
    Updated(Product),
    PriceChanged(Product),
    Activated(Product),
    Deactivated(Product),
    /// The deleted product's id and the version its deletion has.
    Deleted {
        id: Uuid,
        version: i32,
    },
}

impl Event {
    pub(crate) fn event_type(&self) -> &'static str {
        match self {
            Event::Created(_) => "ProductCreated",
            Event::Updated(_) => "ProductUpdated",
            Event::PriceChanged(_) => "ProductPriceChanged",
            Event::Activated(_) => "ProductActivated",
            Event::Deactivated(_) => "ProductDeactivated",
            Event::Deleted { .. } => "ProductDeleted",
        }
    }

    pub(crate) fn aggregate_id(&self) -> Uuid {
        match self {
            Event::Created(p)
            | Event::Updated(p)
            | Event::PriceChanged(p)
            | Event::Activated(p)
            | Event::Deactivated(p) => p.id,
            Event::Deleted { id, .. } => *id,
        }
    }

    /// The product as the command left it (none after a deletion).
    pub(crate) fn product(&self) -> Option<&Product> {
        match self {
            Event::Created(p)
            | Event::Updated(p)
            | Event::PriceChanged(p)
            | Event::Activated(p)
            | Event::Deactivated(p) => Some(p),
            Event::Deleted { .. } => None,
        }
    }

    pub(crate) fn payload(&self) -> Value {
        match self {
            Event::Created(p) => json!({
                "productId": p.id,
                "sku": p.sku,
                "name": p.name,
                "description": p.description,
                "price": p.price,
                "currency": p.currency,
                "isActive": p.is_active,
                "version": p.version,
            }),
            Event::Updated(p) => json!({
                "productId": p.id,
                "name": p.name,
                "description": p.description,
                "version": p.version,
            }),
            Event::PriceChanged(p) => json!({
                "productId": p.id,
                "price": p.price,
                "currency": p.currency,
                "version": p.version,
            }),
            Event::Activated(p) | Event::Deactivated(p) => json!({
                "productId": p.id,
                "version": p.version,
            }),
            Event::Deleted { id, version } => json!({
                "productId": id,
                "version": version,
            }),
        }
    }
}

/// Inserts the event's outbox row; `occurred_at` is the transaction's `now()`, the same
/// instant the product's `updated_at` records. Returns the event id (a UUIDv7, so ids sort by
/// time).
pub(crate) async fn append(
    tx: &Transaction<'_>,
    event: &Event,
    correlation_id: Uuid,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    tx.execute(
        "INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, correlation_id, payload) \
         VALUES ($1, $2, $3, now(), $4, $5)",
        &[
            &id,
            &event.aggregate_id(),
            &event.event_type(),
            &correlation_id,
            &event.payload(),
        ],
    )
    .await
    .map_err(Error::pg("inserting the outbox row"))?;
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn product() -> Product {
        Product {
            id: Uuid::nil(),
            sku: "A-1".into(),
            name: "Mug".into(),
            description: None,
            price: "12.50".into(),
            currency: "EUR".into(),
            is_active: true,
            version: 1,
            created_at: None,
            updated_at: None,
        }
    }

    #[test]
    fn created_payload_is_the_contract_of_the_sink() {
        let p = Event::Created(product()).payload();
        assert_eq!(
            p,
            json!({"productId": Uuid::nil(), "sku": "A-1", "name": "Mug", "description": null,
                   "price": "12.50", "currency": "EUR", "isActive": true, "version": 1})
        );
    }

    #[test]
    fn other_payloads() {
        let p = product();
        assert_eq!(
            Event::PriceChanged(p.clone()).payload(),
            json!({"productId": p.id, "price": "12.50", "currency": "EUR", "version": 1})
        );
        assert_eq!(
            Event::Deactivated(p.clone()).payload(),
            json!({"productId": p.id, "version": 1})
        );
        let deleted = Event::Deleted {
            id: p.id,
            version: 4,
        };
        assert_eq!(deleted.event_type(), "ProductDeleted");
        assert_eq!(deleted.payload(), json!({"productId": p.id, "version": 4}));
    }
}
