//! Products as clients send and receive them: the validated bodies of the write commands and
//! the product representation both APIs return (camelCase, price as exact decimal text).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::{Error, FieldError, Result};
use crate::money::{Currency, Price};

const MAX_SKU_CHARS: usize = 100;
const MAX_NAME_CHARS: usize = 300;
const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Postgres `text` cannot hold U+0000; refused here rather than failing the insert (a 500).
pub(crate) const NUL_MESSAGE: &str = "must not contain the NUL character (\\u0000)";

/// A product as both APIs return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    /// Exact decimal text with two decimals, e.g. `"12.50"`.
    pub price: String,
    pub currency: String,
    pub is_active: bool,
    pub version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// RFC 3339 in UTC with microseconds, formatted by Postgres so no date crate is needed.
macro_rules! utc {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}
pub(crate) use utc;

/// The columns [`Product::from_row`] reads, in order, from `products`.
pub(crate) const WRITE_COLUMNS: &str = concat!(
    "id, sku, name, description, price::text, currency, is_active, version, ",
    utc!("created_at"),
    ", ",
    utc!("updated_at")
);

impl Product {
    /// Reads a row selected with [`WRITE_COLUMNS`].
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Result<Product> {
        let get = Error::pg("reading a product row");
        Ok(Product {
            id: row.try_get(0).map_err(get)?,
            sku: row.try_get(1).map_err(Error::pg("reading sku"))?,
            name: row.try_get(2).map_err(Error::pg("reading name"))?,
            description: row.try_get(3).map_err(Error::pg("reading description"))?,
            price: row.try_get(4).map_err(Error::pg("reading price"))?,
            currency: row.try_get(5).map_err(Error::pg("reading currency"))?,
            is_active: row.try_get(6).map_err(Error::pg("reading is_active"))?,
            version: row.try_get(7).map_err(Error::pg("reading version"))?,
            created_at: row.try_get(8).map_err(Error::pg("reading created_at"))?,
            updated_at: row.try_get(9).map_err(Error::pg("reading updated_at"))?,
        })
    }
}

/// `POST /products`.
#[derive(Debug, Clone)]
pub(crate) struct NewProduct {
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) price: Price,
    pub(crate) currency: Currency,
}

/// `PUT /products/{id}`.
#[derive(Debug, Clone)]
pub(crate) struct Details {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
}

/// `PUT /products/{id}/price`.
#[derive(Debug, Clone)]
pub(crate) struct PriceChange {
    pub(crate) price: Price,
    pub(crate) currency: Currency,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    sku: Option<String>,
    name: Option<String>,
    description: Option<String>,
    price: Option<Box<RawValue>>,
    currency: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailsBody {
    name: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    price: Option<Box<RawValue>>,
    currency: Option<String>,
}

/// Collects every invalid field of one body, so a client fixes them in one round.
#[derive(Default)]
struct Check(Vec<FieldError>);

impl Check {
    fn text(&mut self, field: &str, value: Option<String>, max: usize) -> String {
        match value {
            None => self.fail(field, "is required"),
            Some(v) if v.trim().is_empty() => self.fail(field, "must not be empty"),
            Some(v) if v.contains('\0') => self.fail(field, NUL_MESSAGE),
            Some(v) if v.chars().count() > max => {
                self.fail(field, format!("must be at most {max} characters"))
            }
            Some(v) => return v,
        }
        String::new()
    }

    fn description(&mut self, value: Option<String>) -> Option<String> {
        if value.as_ref().is_some_and(|d| d.contains('\0')) {
            self.fail("description", NUL_MESSAGE);
        } else if value
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            self.fail(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            );
        }
        value
    }

    fn price(&mut self, raw: Option<Box<RawValue>>) -> Option<Price> {
        match raw.as_deref().map(Price::from_json) {
            None => self.fail("price", "is required"),
            Some(Err(m)) => self.fail("price", m),
            Some(Ok(p)) => return Some(p),
        }
        None
    }

    fn currency(&mut self, value: Option<String>) -> Option<Currency> {
        match value.as_deref().map(Currency::parse) {
            None => self.fail("currency", "is required"),
            Some(Err(m)) => self.fail("currency", m),
            Some(Ok(c)) => return Some(c),
        }
        None
    }

    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T> {
        match value() {
            Some(v) if self.0.is_empty() => Ok(v),
            _ => Err(Error::invalid(self.0)),
        }
    }
}

/// Parses a JSON body, answering a malformed one with a 400 that quotes the parser.
fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
}

impl NewProduct {
    pub(crate) fn parse(body: &[u8]) -> Result<NewProduct> {
        let b: CreateBody = json(body)?;
        let mut c = Check::default();
        let sku = c.text("sku", b.sku, MAX_SKU_CHARS);
        let name = c.text("name", b.name, MAX_NAME_CHARS);
        let description = c.description(b.description);
        let price = c.price(b.price);
        let currency = c.currency(b.currency);
        c.finish(|| {
            Some(NewProduct {
                sku,
                name,
                description,
                price: price?,
                currency: currency?,
            })
        })
    }
}

impl Details {
    pub(crate) fn parse(body: &[u8]) -> Result<Details> {
        let b: DetailsBody = json(body)?;
        let mut c = Check::default();
        let name = c.text("name", b.name, MAX_NAME_CHARS);
        let description = c.description(b.description);
        c.finish(|| Some(Details { name, description }))
    }
}

impl PriceChange {
    pub(crate) fn parse(body: &[u8]) -> Result<PriceChange> {
        let b: PriceBody = json(body)?;
        let mut c = Check::default();
        let price = c.price(b.price);
        let currency = c.currency(b.currency);
        c.finish(|| {
            Some(PriceChange {
                price: price?,
                currency: currency?,
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn fields(e: Error) -> Vec<String> {
        match e {
            Error::Invalid { errors, .. } => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("not a validation error: {other}"),
        }
    }

    #[test]
    fn create_body_is_validated_field_by_field() {
        let ok = NewProduct::parse(
            br#"{"sku":"A-1","name":"Mug","description":null,"price":"12.50","currency":"EUR"}"#,
        )
        .unwrap();
        assert_eq!(ok.price.as_str(), "12.50");
        let bad = NewProduct::parse(br#"{"sku":" ","name":"","price":1.234,"currency":"eur"}"#)
            .unwrap_err();
        assert_eq!(fields(bad), ["sku", "name", "price", "currency"]);
    }

    #[test]
    fn malformed_and_unknown_fields_are_rejected() {
        assert!(matches!(
            NewProduct::parse(b"{"),
            Err(Error::Invalid { errors, .. }) if errors.is_empty()
        ));
        assert!(Details::parse(br#"{"name":"x","colour":"red"}"#).is_err());
        assert!(PriceChange::parse(b"").is_err());
    }
}
