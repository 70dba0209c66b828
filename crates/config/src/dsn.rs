use std::fmt;

use serde::{Deserialize, Deserializer};

/// A Postgres connection string (libpq `key=value` or `postgres://` URL form) whose password
/// never reaches a log line: `Debug` and `Display` print it as `********`.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn(String);

impl Dsn {
    pub fn new(dsn: impl Into<String>) -> Dsn {
        Dsn(dsn.into())
    }

    /// The connection string with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connection string with the password masked, safe for logs and errors.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({:?})", self.redacted())
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for Dsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dsn, D::Error> {
        String::deserialize(d).map(Dsn)
    }
}

const MASK: &str = "********";

/// Masks the password of a URL (`postgres://user:secret@host`) or key=value DSN
/// (`password=secret`, `password='a b'`).
pub fn redact(dsn: &str) -> String {
    if let Some(rest) = dsn
        .strip_prefix("postgres://")
        .or_else(|| dsn.strip_prefix("postgresql://"))
    {
        let scheme = &dsn[..dsn.len() - rest.len()];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let tail = redact_query(tail);
        return match authority.rfind('@') {
            Some(at) => {
                let (userinfo, host) = authority.split_at(at);
                match userinfo.find(':') {
                    Some(colon) => format!("{scheme}{}:{MASK}{host}{tail}", &userinfo[..colon]),
                    None => format!("{scheme}{authority}{tail}"),
                }
            }
            None => format!("{scheme}{authority}{tail}"),
        };
    }
    redact_key_value(dsn)
}

fn redact_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(q + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={MASK}"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{path}{}", params.join("&"))
}

fn redact_key_value(dsn: &str) -> String {
    let mut out = String::with_capacity(dsn.len());
    let mut rest = dsn;
    while let Some(pos) = find_password_key(rest) {
        out.push_str(&rest[..pos]);
        let after_key = &rest[pos..];
        let eq = after_key
            .find('=')
            .map(|i| i + 1)
            .unwrap_or(after_key.len());
        out.push_str(&after_key[..eq]);
        let value = after_key[eq..].trim_start();
        let skipped_ws = after_key.len() - eq - value.len();
        out.push_str(&after_key[eq..eq + skipped_ws]);
        out.push_str(MASK);
        rest = &value[value_len(value)..];
    }
    out.push_str(rest);
    out
}

/// Byte offset of a `password` key (at the start or after whitespace, followed by `=`).
fn find_password_key(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("password") {
        let at = from + i;
        let boundary = at == 0 || s[..at].ends_with(char::is_whitespace);
        let next = s[at + "password".len()..].trim_start();
        if boundary && next.starts_with('=') {
            return Some(at);
        }
        from = at + "password".len();
    }
    None
}

/// Length of a key=value value: quoted with `'` (backslash escapes) or up to whitespace.
fn value_len(value: &str) -> usize {
    let bytes = value.as_bytes();
    if bytes.first() == Some(&b'\'') {
        let mut i = 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'\'' => return i + 1,
                _ => i += 1,
            }
        }
        return bytes.len();
    }
    value.find(char::is_whitespace).unwrap_or(value.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_passwords_are_masked() {
        assert_eq!(
            redact("host=db port=5432 user=app password=s3cret dbname=x"),
            "host=db port=5432 user=app password=******** dbname=x"
        );
        assert_eq!(
            redact("password='a b\\' c' host=db"),
            "password=******** host=db"
        );
        assert_eq!(
            redact("host=db password = hunter2"),
            "host=db password = ********"
        );
        assert_eq!(
            redact("host=db user=password_owner"),
            "host=db user=password_owner"
        );
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/catalog?sslmode=require"),
            "postgres://app:********@db:5432/catalog?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://app@db/catalog?password=s3cret&sslmode=require"),
            "postgresql://app@db/catalog?password=********&sslmode=require"
        );
        assert_eq!(redact("postgres://db/catalog"), "postgres://db/catalog");
    }

    #[test]
    fn non_ascii_text_around_every_cut_does_not_panic() {
        // Every offset redact slices at comes from an ASCII delimiter ('=', '@', ':', '?',
        // a quote) or whitespace, so multi-byte characters next to them are never split.
        for dsn in [
            "password='é\\€' host=ü",
            "password=\u{1F600}\u{2003}dbname=ß",
            "passwordé=x password=ü",
            "password='unterminated é",
            "postgres://ü:pä@ö/ß?password=é&x=ü",
            "postgres://üser@hö:5432",
            "\u{2003}password=é",
        ] {
            let r = redact(dsn);
            assert!(
                !r.contains("pä") && !r.contains("password=é"),
                "{dsn} -> {r}"
            );
        }
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let dsn = Dsn::new("host=db password=s3cret");
        assert!(!format!("{dsn:?}").contains("s3cret"));
        assert!(!format!("{dsn}").contains("s3cret"));
        assert!(dsn.expose().contains("s3cret"));
    }
}
