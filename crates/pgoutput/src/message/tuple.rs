//! `TupleData`: the column values of a row in Insert, Update and Delete.

use bytes::Bytes;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::reader::Reader;

/// One column value of a row as sent by pgoutput.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: a TOASTed value that did not change; the server does not resend it.
    UnchangedToast,
    /// `t`: the value in Postgres' text output format (in the database
    /// encoding; UTF-8 in practice).
    Text(Bytes),
    /// `b`: the value in binary format (only with the `binary` option).
    Binary(Bytes),
}

impl TupleValue {
    /// The text form, if this is a `t` value that is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            TupleValue::Text(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// The values of one row, in the column order of the Relation message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData {
    /// One value per column.
    pub columns: Vec<TupleValue>,
}

impl TupleData {
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<TupleData, DecodeError> {
        let at = r.pos();
        let n = r.i16("Int16 number of columns")?;
        let n = usize::try_from(n).map_err(|_| r.invalid_at(at, "a non-negative column count"))?;
        // Each column takes at least one byte: never trust `n` for allocation.
        let mut columns = Vec::with_capacity(n.min(r.remaining()));
        for _ in 0..n {
            let at = r.pos();
            let value = match r.u8("Byte1 column kind")? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => TupleValue::Text(len_prefixed(r)?),
                b'b' => TupleValue::Binary(len_prefixed(r)?),
                tag => {
                    return Err(DecodeError::new(
                        r.context(),
                        at,
                        DecodeErrorKind::UnknownTag {
                            tag,
                            expected: "column kind 'n', 'u', 't' or 'b'",
                        },
                    ));
                }
            };
            columns.push(value);
        }
        Ok(TupleData { columns })
    }
}

fn len_prefixed(r: &mut Reader<'_>) -> Result<Bytes, DecodeError> {
    let at = r.pos();
    let len = r.i32("Int32 column value length")?;
    let len = usize::try_from(len).map_err(|_| r.invalid_at(at, "a non-negative value length"))?;
    r.bytes(len, "Byten column value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &'static [u8]) -> Result<TupleData, DecodeError> {
        let buf = Bytes::from_static(raw);
        let mut r = Reader::new(&buf, "tuple");
        let t = TupleData::parse(&mut r)?;
        r.finish()?;
        Ok(t)
    }

    #[test]
    fn all_column_kinds() {
        let t = parse(b"\x00\x04nut\x00\x00\x00\x02hib\x00\x00\x00\x01\xff");
        assert_eq!(
            t,
            Ok(TupleData {
                columns: vec![
                    TupleValue::Null,
                    TupleValue::UnchangedToast,
                    TupleValue::Text(Bytes::from_static(b"hi")),
                    TupleValue::Binary(Bytes::from_static(b"\xff")),
                ]
            })
        );
        assert_eq!(
            TupleValue::Text(Bytes::from_static(b"hi")).as_text(),
            Some("hi")
        );
        assert_eq!(TupleValue::Null.as_text(), None);
    }

    #[test]
    fn malformed_tuples_are_errors() {
        assert!(parse(b"\xff\xff").is_err(), "negative count");
        assert!(parse(b"\x7f\xff").is_err(), "count larger than data");
        assert!(parse(b"\x00\x01x").is_err(), "unknown kind");
        assert!(
            parse(b"\x00\x01t\xff\xff\xff\xff").is_err(),
            "negative length"
        );
        assert!(
            parse(b"\x00\x01t\x00\x00\x00\x05ab").is_err(),
            "short value"
        );
    }
}
