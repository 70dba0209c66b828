//! Bounded text: cutting text that came from a database or the network to a byte budget
//! without splitting a character. Slicing a `str` at a byte offset inside a UTF-8 sequence
//! panics, so every cut of such text goes through these functions.

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// The longest prefix of `b` that is at most `max` bytes and, when `b` is UTF-8, does not end
/// inside a character (bytes that are not UTF-8 are cut at `max`).
pub fn prefix_bytes(b: &[u8], max: usize) -> &[u8] {
    if b.len() <= max {
        return b;
    }
    let mut end = max;
    // Back off over continuation bytes (10xxxxxx) to the start of the character; a UTF-8
    // character has at most three of them.
    while end > 0 && max - end < 3 && b[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    if b[end] & 0xC0 == 0x80 {
        // Not UTF-8 here: a plain byte cut.
        end = max;
    }
    &b[..end]
}

/// `s` when it fits in `max` bytes; otherwise its prefix followed by `…` and the full length,
/// the whole at most `max` bytes (for error messages that quote a value).
pub fn excerpt(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let tail = format!("… ({} bytes)", s.len());
    format!("{}{tail}", prefix(s, max.saturating_sub(tail.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_cuts_inside_a_character() {
        let s = "ab€d😀";
        for max in 0..=s.len() + 2 {
            let p = prefix(s, max);
            assert!(p.len() <= max && s.starts_with(p), "{max}");
            let b = prefix_bytes(s.as_bytes(), max);
            assert!(std::str::from_utf8(b).is_ok(), "{max}");
            assert_eq!(b, p.as_bytes(), "{max}");
        }
        assert_eq!(prefix("ab€", 3), "ab");
        assert_eq!(
            prefix_bytes(&[0xFF; 8], 5).len(),
            5,
            "not UTF-8: a byte cut"
        );
        assert_eq!(prefix_bytes(&[0x80; 8], 5).len(), 5);
    }

    #[test]
    fn excerpts_fit_and_say_how_long_the_value_was() {
        assert_eq!(excerpt("short", 10), "short");
        let long = "é".repeat(1000);
        let e = excerpt(&long, 64);
        assert!(e.len() <= 64 && e.ends_with("… (2000 bytes)"), "{e}");
        assert!(excerpt(&long, 3).len() <= 3 + "… (2000 bytes)".len());
    }
}
