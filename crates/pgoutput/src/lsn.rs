//! Log sequence numbers: positions in the write-ahead log.

use std::fmt;
use std::str::FromStr;

/// A PostgreSQL log sequence number (`pg_lsn`), a byte position in the WAL.
///
/// Displays and parses the way Postgres prints it: `16/B374D848`, the high and
/// low 32 bits in upper-case hex. Serializes with serde as that string.
///
/// `Lsn::ZERO` (`0/0`) is what Postgres calls `InvalidXLogRecPtr`; there is
/// deliberately no separate "invalid" constant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `0/0`.
    pub const ZERO: Lsn = Lsn(0);

    /// The LSN as a plain integer.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether this is `0/0`.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self + bytes`, or `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<Lsn> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(Lsn(v)),
            None => None,
        }
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(v: Lsn) -> Self {
        v.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The error from parsing an [`Lsn`] that is not of the form `XXXXXXXX/XXXXXXXX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid LSN {input:?}: expected two hex numbers of 1 to 8 digits separated by '/', like \"16/B374D848\""
)]
pub struct ParseLsnError {
    input: String,
}

fn parse_half(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok().map(u64::from)
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError {
            input: s.to_owned(),
        };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let hi = parse_half(hi).ok_or_else(err)?;
        let lo = parse_half(lo).ok_or_else(err)?;
        Ok(Lsn((hi << 32) | lo))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Lsn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an LSN string like \"16/B374D848\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Lsn, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn displays_like_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn::ZERO.to_string(), "0/0");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!(Lsn(0x0000_0000_0150_0A28).to_string(), "0/1500A28");
    }

    #[test]
    fn parses_postgres_form() {
        assert_eq!("16/B374D848".parse(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!("0/0".parse(), Ok(Lsn::ZERO));
        assert_eq!("16/b374d848".parse(), Ok(Lsn(0x16_B374_D848)));
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "1/2/3",
            "+1/2",
            "1/-2",
            "123456789/0",
            "g/0",
            " 1/2",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should not parse");
        }
        let msg = "x".parse::<Lsn>().err().map(|e| e.to_string());
        assert_eq!(
            msg.as_deref(),
            Some(
                "invalid LSN \"x\": expected two hex numbers of 1 to 8 digits separated by '/', like \"16/B374D848\""
            )
        );
    }

    #[test]
    fn serde_uses_string_form() {
        let json = serde_json::to_string(&Lsn(0x16_B374_D848)).ok();
        assert_eq!(json.as_deref(), Some("\"16/B374D848\""));
        let back: Option<Lsn> = serde_json::from_str("\"16/B374D848\"").ok();
        assert_eq!(back, Some(Lsn(0x16_B374_D848)));
        assert!(serde_json::from_str::<Lsn>("12").is_err());
    }

    #[test]
    fn ordering_and_arithmetic() {
        assert!(Lsn(1) < Lsn(2));
        assert_eq!(Lsn(1).checked_add(2), Some(Lsn(3)));
        assert_eq!(Lsn(u64::MAX).checked_add(1), None);
        assert!(Lsn::default().is_zero());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v: u64) {
            prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>(), Ok(Lsn(v)));
        }
    }
}
