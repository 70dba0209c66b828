//! Instants: [`Timestamp`], the one calendar walcast uses.
//!
//! Postgres sends times as microseconds since 2000-01-01 00:00:00 UTC (a commit time, a
//! keepalive's clock). walcast carries that number typed from the decoder to the edge where
//! text is needed (a Kafka header, a SQL argument) and reads such text back into the same
//! type. The text is RFC 3339 in UTC with microseconds, `2026-11-23T07:49:44.123456Z`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the Unix epoch (1970-01-01) to the Postgres epoch (2000-01-01).
pub const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

const PG_EPOCH_UNIX_MICROS: i64 = PG_EPOCH_UNIX_SECS as i64 * 1_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// 2000-01-01 is day 10957 after 1970-01-01.
const PG_EPOCH_UNIX_DAYS: i64 = 10_957;
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
const TEXT_LEN: usize = 27;

/// An instant with microsecond precision, as Postgres counts it: microseconds since
/// 2000-01-01 00:00:00 UTC. Every `i64` is an instant (years about ±292,000).
///
/// Displays as RFC 3339 UTC with six fraction digits (`2026-11-23T07:49:44.123456Z`), and
/// serializes with serde as that string. Parses RFC 3339 and Postgres' ISO output
/// (`2026-11-23 07:49:44.123+02`): see [`FromStr`](#impl-FromStr-for-Timestamp).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 2000-01-01 00:00:00 UTC.
    pub const PG_EPOCH: Timestamp = Timestamp(0);

    /// The instant `micros` microseconds after 2000-01-01 00:00:00 UTC (the wire form).
    pub const fn from_pg_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since 2000-01-01 00:00:00 UTC (the wire form).
    pub const fn pg_micros(self) -> i64 {
        self.0
    }

    /// The instant `micros` microseconds after 1970-01-01 00:00:00 UTC; `None` if it is
    /// beyond the range (years about ±292,000).
    pub const fn from_unix_micros(micros: i64) -> Option<Timestamp> {
        match micros.checked_sub(PG_EPOCH_UNIX_MICROS) {
            Some(m) => Some(Timestamp(m)),
            None => None,
        }
    }

    /// Microseconds since 1970-01-01 00:00:00 UTC; `None` if that does not fit an `i64`.
    pub const fn unix_micros(self) -> Option<i64> {
        self.0.checked_add(PG_EPOCH_UNIX_MICROS)
    }

    /// Milliseconds since 1970-01-01 00:00:00 UTC, rounded down (a Kafka record timestamp).
    /// Total: every instant fits.
    pub const fn unix_millis(self) -> i64 {
        self.0.div_euclid(1000) + PG_EPOCH_UNIX_MICROS / 1000
    }

    /// The instant `t`, saturating at the `i64` range (the clock field of a
    /// `StandbyStatusUpdate` is `Timestamp::from_system_time(SystemTime::now())`).
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        Timestamp(match t.duration_since(pg_epoch) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros())
                .map(|m| -m)
                .unwrap_or(i64::MIN),
        })
    }

    /// The inverse of [`Timestamp::from_system_time`]; `None` if the platform's
    /// `SystemTime` cannot represent the instant.
    pub fn to_system_time(self) -> Option<SystemTime> {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        let d = Duration::from_micros(self.0.unsigned_abs());
        if self.0 >= 0 {
            pg_epoch.checked_add(d)
        } else {
            pg_epoch.checked_sub(d)
        }
    }

    /// The RFC 3339 text, e.g. `2026-11-23T07:49:44.123456Z`; the same as `to_string()`
    /// with one allocation of the right size (it runs once per transaction while streaming).
    pub fn to_rfc3339(self) -> String {
        let mut buf = [0u8; TEXT_LEN];
        match self.write_common(&mut buf) {
            Some(s) => s.to_owned(),
            None => self.to_string(),
        }
    }

    /// Writes years 0–9999 digit by digit into `buf`; `None` for other years.
    fn write_common(self, buf: &mut [u8; TEXT_LEN]) -> Option<&str> {
        let f = Fields::of(self);
        if !(0..=9999).contains(&f.year) {
            return None;
        }
        let mut at = 0;
        let mut put = |v: i64, width: u32, sep: Option<u8>| {
            let mut div = 10i64.pow(width - 1);
            while div > 0 {
                // A digit 0-9: the cast cannot truncate.
                buf[at] = b'0' + (v / div % 10) as u8;
                at += 1;
                div /= 10;
            }
            if let Some(sep) = sep {
                buf[at] = sep;
                at += 1;
            }
        };
        put(f.year, 4, Some(b'-'));
        put(f.month, 2, Some(b'-'));
        put(f.day, 2, Some(b'T'));
        put(f.hour, 2, Some(b':'));
        put(f.minute, 2, Some(b':'));
        put(f.second, 2, Some(b'.'));
        put(f.micros, 6, Some(b'Z'));
        std::str::from_utf8(buf).ok()
    }
}

/// A timestamp's calendar fields in UTC.
struct Fields {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    micros: i64,
}

impl Fields {
    fn of(t: Timestamp) -> Fields {
        let days = t.0.div_euclid(MICROS_PER_DAY);
        let of_day = t.0.rem_euclid(MICROS_PER_DAY);
        let (year, month, day) = civil_from_days(days + PG_EPOCH_UNIX_DAYS);
        let secs = of_day / 1_000_000;
        Fields {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            micros: of_day % 1_000_000,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; TEXT_LEN];
        if let Some(s) = self.write_common(&mut buf) {
            return f.write_str(s);
        }
        let t = Fields::of(*self);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year, t.month, t.day, t.hour, t.minute, t.second, t.micros
        )
    }
}

/// The error from parsing a [`Timestamp`] from text that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid timestamp {input:?}: expected RFC 3339 with a zone, like \"2026-11-23T07:49:44.123456Z\" or \"2026-11-23 07:49:44+02:00\""
)]
pub struct ParseTimestampError {
    input: String,
}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    /// Parses `2026-01-02T03:04:05.123456Z`, `...+02:00`, `...+0200`, `...+02`, a space
    /// instead of `T` (Postgres' ISO output), surrounding whitespace, and fractions of any
    /// length (truncated to microseconds). Years are four digits; a zone is required.
    fn from_str(s: &str) -> Result<Timestamp, ParseTimestampError> {
        parse_rfc3339(s).ok_or_else(|| ParseTimestampError {
            input: s.to_owned(),
        })
    }
}

fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..6 {
            micros *= 10;
        }
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) => {
            let (h, m) = match b.len() - i {
                6 if b[i + 3] == b':' => (num(i + 1..i + 3)?, num(i + 4..i + 6)?),
                5 => (num(i + 1..i + 3)?, num(i + 3..i + 5)?),
                3 => (num(i + 1..i + 3)?, 0),
                _ => return None,
            };
            let secs = h * 3600 + m * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Timestamp::from_unix_micros(secs * 1_000_000 + micros)
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian (year, month, day) for days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unix(micros: i64) -> Timestamp {
        Timestamp::from_unix_micros(micros).unwrap_or_default()
    }

    #[test]
    fn epochs() {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        assert_eq!(Timestamp::from_system_time(pg_epoch), Timestamp::PG_EPOCH);
        assert_eq!(
            Timestamp::PG_EPOCH.to_string(),
            "2000-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp::from_system_time(UNIX_EPOCH).pg_micros(),
            -946_684_800_000_000
        );
        assert_eq!(
            Timestamp::from_system_time(UNIX_EPOCH).unix_micros(),
            Some(0)
        );
        assert_eq!(
            Timestamp::from_pg_micros(-1).to_string(),
            "1999-12-31T23:59:59.999999Z"
        );
    }

    /// The header text (`walcast.commit_ts`, the sink's `occurred_at`) of a few instants:
    /// this text is what consumers read, so it must never change.
    #[test]
    fn header_text_is_pinned() {
        for (unix_micros, text, millis) in [
            (0, "1970-01-01T00:00:00.000000Z", 0),
            (
                1_795_420_184_123_456,
                "2026-11-23T07:49:44.123456Z",
                1_795_420_184_123,
            ),
            (
                951_782_400_000_001,
                "2000-02-29T00:00:00.000001Z",
                951_782_400_000,
            ),
            (
                1_709_164_799_999_999,
                "2024-02-28T23:59:59.999999Z",
                1_709_164_799_999,
            ),
            (
                1_709_251_199_000_000,
                "2024-02-29T23:59:59.000000Z",
                1_709_251_199_000,
            ),
            (-1, "1969-12-31T23:59:59.999999Z", -1),
            (
                -14_182_940_000_001,
                "1969-07-20T20:17:39.999999Z",
                -14_182_940_001,
            ),
            (
                -62_167_219_200_000_000,
                "0000-01-01T00:00:00.000000Z",
                -62_167_219_200_000,
            ),
            (
                253_402_300_799_999_999,
                "9999-12-31T23:59:59.999999Z",
                253_402_300_799_999,
            ),
        ] {
            let t = unix(unix_micros);
            assert_eq!(t.unix_micros(), Some(unix_micros));
            assert_eq!(t.to_rfc3339(), text, "{unix_micros}");
            assert_eq!(t.to_string(), text, "{unix_micros}");
            assert_eq!(t.unix_millis(), millis, "{unix_micros}");
            assert_eq!(text.parse::<Timestamp>(), Ok(t), "{text}");
        }
        assert_eq!(
            Timestamp::from_pg_micros(59 * MICROS_PER_DAY).to_string(),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            serde_json::to_string(&unix(1_795_420_184_123_456))
                .ok()
                .as_deref(),
            Some("\"2026-11-23T07:49:44.123456Z\"")
        );
    }

    #[test]
    fn converts_system_time() {
        // 2026-11-23T07:49:44.123456Z is Unix 1795420184.123456
        let t = UNIX_EPOCH + Duration::from_micros(1_795_420_184_123_456);
        let ts = Timestamp::from_system_time(t);
        assert_eq!(ts.to_string(), "2026-11-23T07:49:44.123456Z");
        assert_eq!(ts.to_system_time(), Some(t));
    }

    #[test]
    fn extremes_do_not_panic() {
        for t in [
            Timestamp::from_pg_micros(i64::MIN),
            Timestamp::from_pg_micros(i64::MAX),
        ] {
            assert!(!t.to_string().is_empty());
            assert_eq!(t.to_rfc3339(), t.to_string());
            let _ = t.to_system_time();
            let _ = t.unix_millis();
            assert_eq!(
                t.unix_micros()
                    .and_then(Timestamp::from_unix_micros)
                    .map_or(t, |u| u),
                t
            );
        }
        assert_eq!(Timestamp::from_unix_micros(i64::MIN), None);
        assert_eq!(Timestamp::from_pg_micros(i64::MAX).unix_micros(), None);
    }

    #[test]
    fn parses_utc_offsets_and_fractions() {
        let p = |s: &str| s.parse::<Timestamp>().ok().and_then(Timestamp::unix_micros);
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(p("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(p("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(p("1969-12-31T23:00:00-0100"), Some(0));
        assert_eq!(p("1970-01-01 02:00:00+02"), Some(0));
        assert_eq!(
            p(" 2000-01-01 00:00:00.123456789z "),
            Some(946_684_800_123_456)
        );
        assert_eq!(p("2000-01-01T00:00:00"), None, "a zone is required");
        assert_eq!(p("2000-13-01T00:00:00Z"), None);
        assert_eq!(p("2026-11-23T07:49:4€.1Z"), None);
        assert_eq!(p("yesterday"), None);
        let msg = "x".parse::<Timestamp>().err().map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.starts_with("invalid timestamp \"x\": expected RFC 3339")));
    }

    proptest! {
        #[test]
        // Years -1 to 10000: the digit-by-digit path and both sides of its edges.
        fn digit_by_digit_matches_format(m in -63_200_000_000_000_000i64..252_500_000_000_000_000) {
            let t = Timestamp::from_pg_micros(m);
            let f = Fields::of(t);
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                f.year, f.month, f.day, f.hour, f.minute, f.second, f.micros
            );
            prop_assert_eq!(t.to_rfc3339(), expected.clone());
            prop_assert_eq!(t.to_string(), expected);
        }

        #[test]
        // Years 0000-9999: what four-digit text can say.
        fn text_round_trip(m in -62_167_219_200_000_000i64..253_402_300_800_000_000) {
            let t = unix(m);
            prop_assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
            prop_assert_eq!(t.unix_millis(), m.div_euclid(1000));
        }

        #[test]
        fn system_time_round_trip(m in -4_000_000_000_000_000i64..4_000_000_000_000_000) {
            let t = Timestamp::from_pg_micros(m);
            if let Some(st) = t.to_system_time() {
                prop_assert_eq!(Timestamp::from_system_time(st), t);
            }
        }
    }
}
