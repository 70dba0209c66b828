//! `bytea` text output (hex or escape format) to standard base64.

use crate::error::DecodeError;

const CONTEXT: &str = "bytea value";
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Decodes Postgres' `bytea` text output: `\x` + hex (the default
/// `bytea_output`), or the legacy escape format (`\\` and `\ooo` octal).
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    let b = text.as_bytes();
    match b.strip_prefix(b"\\x") {
        Some(hex) => decode_hex(hex),
        None => decode_escape(b),
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_hex(hex: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if !hex.len().is_multiple_of(2) {
        return Err(DecodeError::invalid(
            CONTEXT,
            hex.len() + 2,
            "an even number of hex digits",
        ));
    }
    hex.chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(DecodeError::invalid(
                CONTEXT,
                2 + 2 * i,
                "hex digits after \\x",
            )),
        })
        .collect()
}

fn decode_escape(b: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        match b.get(i + 1..i + 4) {
            _ if b.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(&[d0 @ b'0'..=b'3', d1 @ b'0'..=b'7', d2 @ b'0'..=b'7']) => {
                out.push((d0 - b'0') << 6 | (d1 - b'0') << 3 | (d2 - b'0'));
                i += 4;
            }
            _ => {
                return Err(DecodeError::invalid(
                    CONTEXT,
                    i,
                    "\\\\ or a \\ooo octal escape",
                ));
            }
        }
    }
    Ok(out)
}

/// Standard base64 (RFC 4648, with `=` padding).
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = u32::from(b0) << 16 | u32::from(b1) << 8 | u32::from(b2);
        let sym = |shift: u32| char::from(BASE64[(n >> shift & 63) as usize]);
        out.push(sym(18));
        out.push(sym(12));
        out.push(if chunk.len() > 1 { sym(6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn decodes_hex_and_escape_formats() {
        assert_eq!(decode("\\xdeadBEEF00"), Ok(vec![0xde, 0xad, 0xbe, 0xef, 0]));
        assert_eq!(decode("\\x"), Ok(vec![]));
        assert_eq!(decode("ab\\\\c\\000\\377"), Ok(b"ab\\c\x00\xff".to_vec()));
        assert!(decode("\\xabc").is_err());
        assert!(decode("\\xzz").is_err());
        assert!(decode("a\\9").is_err());
        assert!(decode("a\\").is_err());
        assert!(decode("\\400").is_err());
    }
}
