//! A bounds-checked cursor over a message buffer.
//!
//! Every read checks the remaining length first and turns a short buffer into
//! a [`DecodeError`] naming the field, so parsers built on it cannot panic.

use bytes::Bytes;

use crate::error::{DecodeError, DecodeErrorKind};

#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    context: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes, context: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            context,
        }
    }

    /// Switches the context named in errors, e.g. once the tag is known.
    pub(crate) fn set_context(&mut self, context: &'static str) {
        self.context = context;
    }

    pub(crate) fn context(&self) -> &'static str {
        self.context
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.context, self.pos, kind)
    }

    pub(crate) fn invalid_at(&self, offset: usize, expected: impl Into<String>) -> DecodeError {
        DecodeError::invalid(self.context, offset, expected)
    }

    fn take(&mut self, n: usize, expected: &'static str) -> Result<&'a [u8], DecodeError> {
        let buf: &'a [u8] = self.buf;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= buf.len())
            .ok_or_else(|| self.error(DecodeErrorKind::UnexpectedEof { expected }))?;
        let out = &buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, expected: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, expected)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, expected: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(expected)?[0])
    }

    pub(crate) fn i16(&mut self, expected: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(expected)?))
    }

    pub(crate) fn i32(&mut self, expected: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(expected)?))
    }

    pub(crate) fn u32(&mut self, expected: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(expected)?))
    }

    pub(crate) fn i64(&mut self, expected: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(expected)?))
    }

    pub(crate) fn u64(&mut self, expected: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(expected)?))
    }

    /// A zero-copy slice of the next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize, expected: &'static str) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n, expected)?;
        Ok(self.buf.slice(start..self.pos))
    }

    /// Everything that is left, zero-copy.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos.min(self.buf.len());
        self.pos = self.buf.len();
        self.buf.slice(start..)
    }

    /// A NUL-terminated UTF-8 string (the terminator is consumed, not returned).
    pub(crate) fn cstr(&mut self, expected: &'static str) -> Result<String, DecodeError> {
        let start = self.pos;
        let buf: &'a [u8] = self.buf;
        let tail = buf.get(start..).unwrap_or_default();
        let len = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.error(DecodeErrorKind::UnexpectedEof { expected }))?;
        let raw = self.take(len, expected)?;
        let s = std::str::from_utf8(raw)
            .map_err(|_| self.invalid_at(start, format!("{expected} as UTF-8")))?
            .to_owned();
        self.pos += 1; // the NUL found above
        Ok(s)
    }

    /// Fails if any bytes are left unread.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            remaining => Err(self.error(DecodeErrorKind::TrailingBytes { remaining })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_strings() {
        let buf = Bytes::from_static(b"\x00\x01\x00\x00\x00\x02ab\x00\xff");
        let mut r = Reader::new(&buf, "test");
        assert_eq!(r.i16("a"), Ok(1));
        assert_eq!(r.i32("b"), Ok(2));
        assert_eq!(r.cstr("c").as_deref(), Ok("ab"));
        assert_eq!(r.u8("d"), Ok(0xff));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn short_reads_are_errors_with_offset() {
        let buf = Bytes::from_static(b"\x00\x01\x02");
        let mut r = Reader::new(&buf, "test");
        r.u8("first").ok();
        let e = r.i32("Int32 x").err();
        assert_eq!(
            e,
            Some(DecodeError::new(
                "test",
                1,
                DecodeErrorKind::UnexpectedEof {
                    expected: "Int32 x"
                }
            ))
        );
        let no_nul = Bytes::from_static(b"abc");
        assert!(Reader::new(&no_nul, "test").cstr("name").is_err());
        let mut r = Reader::new(&buf, "test");
        assert!(r.bytes(usize::MAX, "huge").is_err());
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let buf = Bytes::from_static(b"\xc3\x28\x00");
        assert!(Reader::new(&buf, "test").cstr("name").is_err());
    }
}
