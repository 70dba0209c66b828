//! The crate's one error type.
//!
//! Every decoding failure says *what* was being decoded (`context`), *where*
//! (`offset`, in bytes from the start of the buffer handed to the parser) and
//! *what was expected* there. Malformed input is never retryable: the same
//! bytes will fail the same way, so a caller should stop and report, not loop.

use std::fmt;

/// An error decoding replication or pgoutput bytes, or a text-format value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decoding {context}: at offset {offset}: {kind}")]
pub struct DecodeError {
    context: &'static str,
    offset: usize,
    kind: DecodeErrorKind,
}

/// What went wrong, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended early.
    UnexpectedEof {
        /// What should have been there, e.g. "Int64 wal_end".
        expected: &'static str,
    },
    /// A tag byte was not one of the known ones.
    UnknownTag {
        /// The byte found.
        tag: u8,
        /// The tags that were acceptable.
        expected: &'static str,
    },
    /// A field was present but its value is not acceptable.
    Invalid {
        /// What a valid value looks like.
        expected: String,
    },
    /// The message was fully decoded but bytes remained.
    TrailingBytes {
        /// How many bytes were left over.
        remaining: usize,
    },
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEof { expected } => {
                write!(f, "unexpected end of input, expected {expected}")
            }
            Self::UnknownTag { tag, expected } => write!(
                f,
                "unknown tag {:?} (0x{tag:02x}), expected {expected}",
                char::from(*tag)
            ),
            Self::Invalid { expected } => write!(f, "invalid value, expected {expected}"),
            Self::TrailingBytes { remaining } => {
                write!(f, "{remaining} unexpected trailing byte(s)")
            }
        }
    }
}

impl DecodeError {
    pub(crate) fn new(context: &'static str, offset: usize, kind: DecodeErrorKind) -> Self {
        Self {
            context,
            offset,
            kind,
        }
    }

    pub(crate) fn invalid(
        context: &'static str,
        offset: usize,
        expected: impl Into<String>,
    ) -> Self {
        Self::new(
            context,
            offset,
            DecodeErrorKind::Invalid {
                expected: expected.into(),
            },
        )
    }

    /// What was being decoded, e.g. `"XLogData"` or `"int4 value"`.
    pub fn context(&self) -> &'static str {
        self.context
    }

    /// Where it failed: the byte offset in the message or value text given to
    /// the parser, or for a [`crate::value::tuple_to_json`] failure the column index.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// What went wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }

    /// Always `false`: the same bytes decode the same way every time.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_context_offset_and_expectation() {
        let e = DecodeError::new(
            "XLogData",
            9,
            DecodeErrorKind::UnexpectedEof {
                expected: "Int64 wal_end",
            },
        );
        assert_eq!(
            e.to_string(),
            "decoding XLogData: at offset 9: unexpected end of input, expected Int64 wal_end"
        );
        let e = DecodeError::new(
            "replication message",
            0,
            DecodeErrorKind::UnknownTag {
                tag: b'z',
                expected: "'w' or 'k'",
            },
        );
        assert_eq!(
            e.to_string(),
            "decoding replication message: at offset 0: unknown tag 'z' (0x7a), expected 'w' or 'k'"
        );
        assert!(!e.is_retryable());
    }
}
