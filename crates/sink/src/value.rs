//! Payload values → the text Postgres casts to a column type.
//!
//! Every value is checked here, in Rust, before it reaches SQL: a wrong type in one event must
//! become a dead-letter entry, not a failed transaction for the whole batch.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use walcast_pgoutput::Timestamp;

use crate::config::ColumnType;
use crate::text;

/// Why a value cannot be written to a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeMismatch(pub(crate) String);

/// A column value's text, shared: a change, the plan folded from it and the statement
/// arguments written from the plan hold one copy of it (values may be about 1 MB each).
pub(crate) type Text = Arc<str>;

/// A [`Text`] as a statement argument (text, or whatever Postgres casts text to).
#[derive(Debug, Clone)]
pub(crate) struct SqlText(pub(crate) Text);

impl ToSql for SqlText {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        (&*self.0).to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// The canonical text of `v` for a column of type `ty`, or why it does not fit.
pub(crate) fn to_sql_text(
    ty: ColumnType,
    max_chars: Option<usize>,
    v: &Value,
) -> Result<String, TypeMismatch> {
    checked(ty, max_chars, v).map(Cow::into_owned)
}

/// [`to_sql_text`] as a shared column value: a text value is copied once, from the payload.
pub(crate) fn to_text(
    ty: ColumnType,
    max_chars: Option<usize>,
    v: &Value,
) -> Result<Text, TypeMismatch> {
    checked(ty, max_chars, v).map(|t| Text::from(&*t))
}

fn checked(
    ty: ColumnType,
    max_chars: Option<usize>,
    v: &Value,
) -> Result<Cow<'_, str>, TypeMismatch> {
    let wrong = |want: &str| TypeMismatch(format!("expected {want}, got {}", kind(v)));
    let text = match (ty, v) {
        (ColumnType::Uuid, Value::String(s)) => uuid::Uuid::parse_str(s)
            .map_err(|_| TypeMismatch(format!("expected a UUID, got {}", text::echo(s))))?
            .hyphenated()
            .to_string(),
        (ColumnType::Uuid, _) => return Err(wrong("a UUID string")),
        (ColumnType::Text, Value::String(s)) => return within(max_chars, Cow::Borrowed(s)),
        (ColumnType::Text, _) => return Err(wrong("a string")),
        (ColumnType::Numeric, Value::String(s)) if is_decimal(s) => s.trim().to_owned(),
        (ColumnType::Numeric, Value::String(s)) => {
            return Err(TypeMismatch(format!(
                "expected a decimal, got {}",
                text::echo(s)
            )));
        }
        (ColumnType::Numeric, Value::Number(n)) => n.to_string(),
        (ColumnType::Numeric, _) => return Err(wrong("a decimal string or number")),
        (ColumnType::Boolean, Value::Bool(b)) => b.to_string(),
        (ColumnType::Boolean, _) => return Err(wrong("true or false")),
        (ColumnType::Integer, Value::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| TypeMismatch(format!("expected a 32-bit integer, got {n}")))?
            .to_string(),
        (ColumnType::Integer, _) => return Err(wrong("an integer")),
        (ColumnType::Bigint, Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| TypeMismatch(format!("expected a 64-bit integer, got {n}")))?
            .to_string(),
        (ColumnType::Bigint, _) => return Err(wrong("an integer")),
        (ColumnType::Timestamptz, Value::String(s)) => {
            s.parse::<Timestamp>().map(|t| t.to_string()).map_err(|_| {
                TypeMismatch(format!(
                    "expected an ISO 8601 timestamp, got {}",
                    text::echo(s)
                ))
            })?
        }
        (ColumnType::Timestamptz, _) => return Err(wrong("an ISO 8601 timestamp string")),
        (ColumnType::Jsonb, v) => v.to_string(),
    };
    within(max_chars, Cow::Owned(text))
}

/// `text` if it has at most `max_chars` characters and no NUL.
fn within(max_chars: Option<usize>, text: Cow<'_, str>) -> Result<Cow<'_, str>, TypeMismatch> {
    if let Some(max) = max_chars {
        let n = text.chars().count();
        if n > max {
            return Err(TypeMismatch(format!("{n} characters, at most {max} fit")));
        }
    }
    if text.contains('\0') {
        return Err(TypeMismatch("text contains a NUL character".into()));
    }
    Ok(text)
}

/// `-?digits[.digits]`: what a JSON string holding an exact price looks like.
fn is_decimal(s: &str) -> bool {
    let s = s.trim();
    let s = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(ty: ColumnType, v: Value) -> Result<String, TypeMismatch> {
        to_sql_text(ty, None, &v)
    }

    #[test]
    fn values_of_the_right_type_become_canonical_text() {
        assert_eq!(
            t(
                ColumnType::Uuid,
                json!("6F9619FF-8B86-D011-B42D-00C04FC964FF")
            )
            .unwrap(),
            "6f9619ff-8b86-d011-b42d-00c04fc964ff"
        );
        assert_eq!(t(ColumnType::Numeric, json!("12.50")).unwrap(), "12.50");
        assert_eq!(t(ColumnType::Numeric, json!(7)).unwrap(), "7");
        assert_eq!(t(ColumnType::Boolean, json!(false)).unwrap(), "false");
        assert_eq!(t(ColumnType::Integer, json!(42)).unwrap(), "42");
        assert_eq!(
            t(ColumnType::Timestamptz, json!("2026-01-01T01:00:00+01:00")).unwrap(),
            "2026-01-01T00:00:00.000000Z"
        );
        assert_eq!(t(ColumnType::Jsonb, json!({"a": 1})).unwrap(), r#"{"a":1}"#);
    }

    #[test]
    fn values_of_the_wrong_type_are_rejected_with_a_reason() {
        assert!(t(ColumnType::Numeric, json!("12,50")).is_err());
        assert!(t(ColumnType::Numeric, json!(true)).is_err());
        assert!(
            t(ColumnType::Text, json!(12))
                .unwrap_err()
                .0
                .contains("a number")
        );
        assert!(t(ColumnType::Boolean, json!("true")).is_err());
        assert!(t(ColumnType::Integer, json!(3_000_000_000i64)).is_err());
        assert!(t(ColumnType::Uuid, json!("nope")).is_err());
        assert!(to_sql_text(ColumnType::Text, Some(3), &json!("EURO")).is_err());
        assert!(to_sql_text(ColumnType::Text, Some(3), &json!("EUR")).is_ok());
    }
}
