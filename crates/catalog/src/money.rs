//! Prices and currencies, kept exact.
//!
//! A price travels as decimal text from the request to `NUMERIC(18,2)` (`$n::text::numeric`)
//! and back (`price::text`), and into event payloads as a string, so no binary float ever
//! rounds it. A request may send the price as a JSON string (`"12.50"`) or a JSON number
//! (`12.50`); a number is read from its literal text, never through `f64`.

use serde_json::value::RawValue;

/// The digits `NUMERIC(18,2)` holds before the decimal point.
const MAX_INTEGER_DIGITS: usize = 16;
const MAX_DECIMALS: usize = 2;

/// A validated non-negative decimal with at most two decimals, as text (`"12.5"`, `"0.99"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Price(String);

impl Price {
    pub(crate) fn parse(text: &str) -> Result<Price, String> {
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|f| !digits(f)) {
            return Err(format!(
                "must be a non-negative decimal such as \"12.50\", got {text:?}"
            ));
        }
        if let Some(f) = frac
            && f.len() > MAX_DECIMALS
        {
            return Err(format!(
                "must have at most {MAX_DECIMALS} decimals, got {text:?}"
            ));
        }
        if int.trim_start_matches('0').len() > MAX_INTEGER_DIGITS {
            return Err(format!(
                "must be below 10^{MAX_INTEGER_DIGITS}, got {text:?}"
            ));
        }
        Ok(Price(text.to_owned()))
    }

    /// From the raw JSON of a `price` member: a string or a number literal.
    pub(crate) fn from_json(raw: &RawValue) -> Result<Price, String> {
        let text = raw.get().trim();
        if text.starts_with('"') {
            let s: String = serde_json::from_str(text).map_err(|e| e.to_string())?;
            Price::parse(&s)
        } else if text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            Price::parse(text)
        } else {
            Err(format!(
                "must be a decimal string such as \"12.50\", got {text}"
            ))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 4217-style code: exactly three upper-case ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Currency(String);

impl Currency {
    pub(crate) fn parse(text: &str) -> Result<Currency, String> {
        if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(text.to_owned()))
        } else {
            Err(format!(
                "must be three upper-case letters such as \"EUR\", got {text:?}"
            ))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn prices() {
        for ok in [
            "0",
            "0.00",
            "12",
            "12.5",
            "12.50",
            "9999999999999999.99",
            "007.10",
        ] {
            assert!(Price::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-1",
            "+1",
            "1.",
            ".5",
            "1.234",
            "1e2",
            "12,50",
            " 1",
            "abc",
            "10000000000000000",
        ] {
            assert!(Price::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_prices_keep_their_literal_text() {
        assert_eq!(
            Price::from_json(&raw("\"12.50\"")).map(|p| p.0),
            Ok("12.50".into())
        );
        assert_eq!(
            Price::from_json(&raw("12.50")).map(|p| p.0),
            Ok("12.50".into())
        );
        assert_eq!(Price::from_json(&raw("0.1")).map(|p| p.0), Ok("0.1".into()));
        assert!(Price::from_json(&raw("-3")).is_err());
        assert!(Price::from_json(&raw("1.5e1")).is_err());
        assert!(Price::from_json(&raw("null")).is_err());
        assert!(Price::from_json(&raw("true")).is_err());
    }

    #[test]
    fn currencies() {
        assert!(Currency::parse("EUR").is_ok());
        for bad in ["eur", "EU", "EURO", "E1R", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }
}
