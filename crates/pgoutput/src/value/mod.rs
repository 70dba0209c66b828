//! Typed conversion of text-format tuple values into JSON.
//!
//! pgoutput sends column values in Postgres' text output format; this module
//! turns them into [`serde_json::Value`]s by type OID:
//!
//! | Postgres type | JSON |
//! |---|---|
//! | `bool` | `true` / `false` |
//! | `int2`, `int4`, `int8`, `oid` | number |
//! | `float4`, `float8` | number; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings |
//! | `numeric` | string, exact (`"12.30"`, `"NaN"`) |
//! | `text`, `varchar`, `bpchar`, `name`, `char`, `uuid` | string |
//! | `json`, `jsonb` | the parsed JSON (the text as a string if it does not parse) |
//! | `date`, `time`, `timetz`, `timestamp`, `timestamptz` | ISO 8601 string, see below |
//! | `bytea` | standard base64 string |
//! | arrays of the above | (nested) JSON arrays, `NULL` elements as `null` |
//! | anything else (`interval`, enums, domains, ...) | the text as a string |
//!
//! Date/time values assume `DateStyle = ISO` (the server default) on the
//! replication connection: `2026-11-23 07:49:44.123+00` becomes
//! `2026-11-23T07:49:44.123+00:00`, `timestamp` has no offset.
//!
//! A value that does not match its type's text format is a [`DecodeError`],
//! not silently passed through: it means a wrong type OID or `DateStyle`.

mod array;
mod bytea;
mod datetime;
pub mod pg_type;

pub use array::{ArrayElement, parse_array_literal};
pub use bytea::base64;

use serde_json::{Map, Value};

use crate::error::DecodeError;
use crate::message::{Oid, Relation, TupleData, TupleValue};

/// Converts one text-format value of type `type_oid` to JSON.
pub fn text_to_json(type_oid: Oid, text: &str) -> Result<Value, DecodeError> {
    use pg_type::*;
    Ok(match type_oid {
        BOOL => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => return Err(DecodeError::invalid("bool value", 0, "'t' or 'f'")),
        },
        INT2 | INT4 | INT8 => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| DecodeError::invalid("integer value", 0, "a decimal integer"))?,
        OID => text
            .parse::<u32>()
            .map(Value::from)
            .map_err(|_| DecodeError::invalid("oid value", 0, "an unsigned 32-bit integer"))?,
        FLOAT4 | FLOAT8 => float(text)?,
        JSON | JSONB => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
        BYTEA => Value::String(base64(&bytea::decode(text)?)),
        DATE => Value::String(datetime::date(text)?),
        TIME => Value::String(datetime::time(text)?),
        TIMETZ => Value::String(datetime::timetz(text)?),
        TIMESTAMP => Value::String(datetime::timestamp(text)?),
        TIMESTAMPTZ => Value::String(datetime::timestamptz(text)?),
        oid => match pg_type::array_element(oid) {
            Some(elem) => Value::Array(array_to_json(elem, parse_array_literal(text)?)?),
            // NUMERIC, text-like types, UUID and unknown types: the text itself.
            None => Value::String(text.into()),
        },
    })
}

fn float(text: &str) -> Result<Value, DecodeError> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Ok(Value::String(text.into()));
    }
    let f = text.parse::<f64>().map_err(|_| {
        DecodeError::invalid("float value", 0, "a decimal number, NaN or ±Infinity")
    })?;
    // Rust also accepts "inf"/"nan"; anything non-finite stays text.
    Ok(serde_json::Number::from_f64(f).map_or_else(|| Value::String(text.into()), Value::Number))
}

fn array_to_json(elem_oid: Oid, elems: Vec<ArrayElement>) -> Result<Vec<Value>, DecodeError> {
    elems
        .into_iter()
        .map(|e| match e {
            ArrayElement::Null => Ok(Value::Null),
            ArrayElement::Value(s) => text_to_json(elem_oid, &s),
            ArrayElement::Array(inner) => array_to_json(elem_oid, inner).map(Value::Array),
        })
        .collect()
}

/// A row as JSON, from [`tuple_to_json`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowJson {
    /// `{column: value}`. Unchanged-TOAST columns are absent (their value
    /// is unknown, which is not the same as `null`).
    pub values: Map<String, Value>,
    /// Columns sent as "unchanged TOAST" (`u`): their value did not change,
    /// and the server did not resend it.
    pub unchanged_toast: Vec<String>,
}

/// Converts a decoded row of `relation` to JSON, column by column with
/// [`text_to_json`].
///
/// For an old key ([`OldTuple::Key`](crate::message::OldTuple::Key)) the
/// non-key columns come out as `null`; [`Column::is_key`](crate::relation::Column::is_key)
/// tells which are real.
///
/// Fails if the tuple's column count does not match the Relation (the cache
/// is stale) or if it holds binary-format values (replication was started
/// with `binary 'true'`, which this crate does not interpret).
pub fn tuple_to_json(relation: &Relation, tuple: &TupleData) -> Result<RowJson, DecodeError> {
    const CONTEXT: &str = "tuple";
    if relation.columns.len() != tuple.columns.len() {
        return Err(DecodeError::invalid(
            CONTEXT,
            0,
            format!(
                "{} columns as in the Relation message for {}.{} (got {})",
                relation.columns.len(),
                relation.namespace,
                relation.name,
                tuple.columns.len()
            ),
        ));
    }
    let mut row = RowJson::default();
    for (i, (col, value)) in relation.columns.iter().zip(&tuple.columns).enumerate() {
        let json = match value {
            TupleValue::Null => Value::Null,
            TupleValue::UnchangedToast => {
                row.unchanged_toast.push(col.name.clone());
                continue;
            }
            TupleValue::Text(raw) => {
                let text = std::str::from_utf8(raw).map_err(|_| {
                    DecodeError::invalid(CONTEXT, i, format!("UTF-8 text in column {:?}", col.name))
                })?;
                text_to_json(col.type_oid, text).map_err(|e| {
                    DecodeError::invalid(
                        CONTEXT,
                        i,
                        format!(
                            "a valid value in column {:?} (type OID {}): {e}",
                            col.name, col.type_oid
                        ),
                    )
                })?
            }
            TupleValue::Binary(_) => {
                return Err(DecodeError::invalid(
                    CONTEXT,
                    i,
                    format!(
                        "a text-format value in column {:?}; start replication without binary 'true'",
                        col.name
                    ),
                ));
            }
        };
        row.values.insert(col.name.clone(), json);
    }
    Ok(row)
}

#[cfg(test)]
mod tests;
