//! Bounded texts. Every error text and header the sink writes has a size limit, whatever the
//! event held: a value from the network is echoed at most [`ECHO_CHARS`] characters, and a
//! text or header value is cut at a character boundary (never inside a UTF-8 sequence) with a
//! marker saying how long it was.

use std::borrow::Cow;

use serde_json::Value;

/// Characters of an offending value quoted in an error text.
pub(crate) const ECHO_CHARS: usize = 64;

/// `s` quoted as Rust's `{:?}` does, showing at most [`ECHO_CHARS`] characters of it (a
/// control character becomes up to 10 bytes, so a quote is at most about 700 bytes).
pub(crate) fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} characters in all)", &s[..cut], s.chars().count()),
    }
}

/// A JSON value for an error text: strings quoted by [`echo`], numbers and literals as they
/// are, arrays and objects by kind only.
pub(crate) fn echo_json(v: &Value) -> String {
    match v {
        Value::String(s) => echo(s),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        Value::Number(_) | Value::Bool(_) | Value::Null => v.to_string(),
    }
}

/// The greatest index `<= at` that does not fall inside a UTF-8 sequence of `b` (the shared
/// rule of [`walcast_config::text::prefix_bytes`]).
fn boundary(b: &[u8], at: usize) -> usize {
    walcast_config::text::prefix_bytes(b, at).len()
}

/// `b` cut to at most `max` bytes at a character boundary, ending with `… [truncated, N bytes]`
/// when cut (the marker is part of the `max`).
pub(crate) fn truncate_bytes(b: &[u8], max: usize) -> Cow<'_, [u8]> {
    if b.len() <= max {
        return Cow::Borrowed(b);
    }
    let marker = format!("… [truncated, {} bytes]", b.len());
    if marker.len() > max {
        return Cow::Borrowed(&b[..boundary(b, max)]);
    }
    let mut out = b[..boundary(b, max - marker.len())].to_vec();
    out.extend_from_slice(marker.as_bytes());
    Cow::Owned(out)
}

/// [`truncate_bytes`] for text.
pub(crate) fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    match truncate_bytes(s.as_bytes(), max) {
        Cow::Borrowed(b) => Cow::Borrowed(std::str::from_utf8(b).unwrap_or_default()),
        Cow::Owned(b) => Cow::Owned(String::from_utf8(b).unwrap_or_default()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn echo_quotes_short_values_whole_and_long_ones_bounded() {
        assert_eq!(echo("a\u{1}"), "\"a\\u{1}\"");
        let long = "\u{1}".repeat(170_000);
        let e = echo(&long);
        assert!(e.len() < 700, "{}", e.len());
        assert!(e.ends_with("… (170000 characters in all)"), "{e}");
        assert_eq!(echo_json(&serde_json::json!({"a": long})), "an object");
    }

    #[test]
    fn truncation_never_cuts_inside_a_character_and_fits_the_limit() {
        for s in ["é".repeat(1000), "😀".repeat(500), "a€😀é".repeat(300)] {
            for max in [0, 1, 2, 3, 5, 40, 41, 42, 43, 100, 999] {
                let t = truncate(&s, max);
                assert!(t.len() <= max, "{max}: {}", t.len());
                assert!(s.starts_with(t.split('…').next().unwrap()));
            }
        }
        assert_eq!(truncate("short", 5), "short");
        let xs = "x".repeat(100);
        let t = truncate(&xs, 60);
        assert!(
            t.ends_with("… [truncated, 100 bytes]") && t.len() <= 60,
            "{t}"
        );
        let binary = vec![0x80u8; 100];
        assert!(truncate_bytes(&binary, 50).len() <= 50);
    }
}
