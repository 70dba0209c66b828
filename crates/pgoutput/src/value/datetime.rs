//! Date/time text output (`DateStyle = ISO`) to ISO 8601.
//!
//! Postgres prints `2026-11-23 07:49:44.123+00`; ISO 8601 wants a `T` and a
//! `±HH:MM` offset: `2026-11-23T07:49:44.123+00:00`. Years BC (`0044-03-15
//! BC`) become astronomical years (`-0043-03-15`); `infinity` and
//! `-infinity` are kept as they are.

use std::fmt::Write as _;

use crate::error::DecodeError;

const DATE_FORMAT: &str =
    "an ISO date 'YYYY-MM-DD' (set DateStyle=ISO on the replication connection)";
const TIME_FORMAT: &str = "a time 'HH:MM:SS[.ffffff]'";
const OFFSET_FORMAT: &str = "a UTC offset '±HH[:MM[:SS]]'";

fn digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_infinity(s: &str) -> bool {
    s == "infinity" || s == "-infinity"
}

/// Appends `YYYY-MM-DD` (+ `bc`) as ISO 8601 with an astronomical year.
///
/// The converters below build their result in one `String`: they run for
/// every date/time column of every row, so allocations count.
fn push_iso_date(
    out: &mut String,
    context: &'static str,
    d: &str,
    bc: bool,
) -> Result<(), DecodeError> {
    let err = || DecodeError::invalid(context, 0, DATE_FORMAT);
    let mut parts = d.splitn(3, '-');
    let (Some(y), Some(m), Some(day)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err());
    };
    if !digits(y, 4, 9) || !digits(m, 2, 2) || !digits(day, 2, 2) {
        return Err(err());
    }
    if !bc {
        out.push_str(d);
        return Ok(());
    }
    let year: u64 = y.parse().map_err(|_| err())?;
    let written = match year.checked_sub(1) {
        Some(0) => write!(out, "0000-{m}-{day}"),
        Some(astro) => write!(out, "-{astro:04}-{m}-{day}"),
        None => return Err(err()),
    };
    written.map_err(|_| err())
}

fn check_time(context: &'static str, t: &str) -> Result<(), DecodeError> {
    let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
    let mut parts = hms.splitn(3, ':');
    let ok = matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(h), Some(m), Some(s)) if digits(h, 2, 2) && digits(m, 2, 2) && digits(s, 2, 2)
    ) && digits(frac, 1, 9);
    if ok {
        Ok(())
    } else {
        Err(DecodeError::invalid(context, 0, TIME_FORMAT))
    }
}

/// Appends `+HH`, `+HH:MM` or `+HH:MM:SS` as `+HH:MM` (`+HH:MM:SS` is kept:
/// ISO 8601 has no seconds in offsets, and Postgres only prints them for
/// pre-1900 LMT).
fn push_iso_offset(out: &mut String, context: &'static str, o: &str) -> Result<(), DecodeError> {
    let err = || DecodeError::invalid(context, 0, OFFSET_FORMAT);
    let body = o.strip_prefix(['+', '-']).ok_or_else(err)?;
    let valid = body.split(':').count() <= 3 && body.split(':').all(|p| digits(p, 2, 2));
    if !valid {
        return Err(err());
    }
    out.push_str(o);
    if body.len() == 2 {
        out.push_str(":00");
    }
    Ok(())
}

/// `time` is already ISO 8601.
fn split_time_offset(t: &str) -> Option<(&str, &str)> {
    t.find(['+', '-']).map(|i| t.split_at(i))
}

/// Room for the longest rewrite: `T` for the space and `:00` for an hour-only offset.
fn with_room(s: &str) -> String {
    String::with_capacity(s.len() + 4)
}

pub(crate) fn date(s: &str) -> Result<String, DecodeError> {
    if is_infinity(s) {
        return Ok(s.to_owned());
    }
    let (d, bc) = s.strip_suffix(" BC").map_or((s, false), |d| (d, true));
    let mut out = with_room(s);
    push_iso_date(&mut out, "date value", d, bc)?;
    Ok(out)
}

pub(crate) fn time(s: &str) -> Result<String, DecodeError> {
    check_time("time value", s)?;
    Ok(s.to_owned())
}

pub(crate) fn timetz(s: &str) -> Result<String, DecodeError> {
    const CONTEXT: &str = "timetz value";
    let (t, o) =
        split_time_offset(s).ok_or_else(|| DecodeError::invalid(CONTEXT, 0, OFFSET_FORMAT))?;
    check_time(CONTEXT, t)?;
    let mut out = with_room(s);
    out.push_str(t);
    push_iso_offset(&mut out, CONTEXT, o)?;
    Ok(out)
}

fn timestamp_inner(context: &'static str, s: &str, with_tz: bool) -> Result<String, DecodeError> {
    if is_infinity(s) {
        return Ok(s.to_owned());
    }
    let (s, bc) = s.strip_suffix(" BC").map_or((s, false), |d| (d, true));
    let (d, rest) = s.split_once(' ').ok_or_else(|| {
        DecodeError::invalid(context, 0, "'YYYY-MM-DD HH:MM:SS' (set DateStyle=ISO)")
    })?;
    let mut out = with_room(s);
    push_iso_date(&mut out, context, d, bc)?;
    out.push('T');
    if !with_tz {
        check_time(context, rest)?;
        out.push_str(rest);
        return Ok(out);
    }
    let (t, o) =
        split_time_offset(rest).ok_or_else(|| DecodeError::invalid(context, 0, OFFSET_FORMAT))?;
    check_time(context, t)?;
    out.push_str(t);
    push_iso_offset(&mut out, context, o)?;
    Ok(out)
}

pub(crate) fn timestamp(s: &str) -> Result<String, DecodeError> {
    timestamp_inner("timestamp value", s, false)
}

pub(crate) fn timestamptz(s: &str) -> Result<String, DecodeError> {
    timestamp_inner("timestamptz value", s, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let ok = |s: &str| timestamptz(s).ok();
        assert_eq!(
            ok("2026-11-23 07:49:44.123+00").as_deref(),
            Some("2026-11-23T07:49:44.123+00:00")
        );
        assert_eq!(
            ok("2026-11-23 07:49:44+05:30").as_deref(),
            Some("2026-11-23T07:49:44+05:30")
        );
        assert_eq!(
            ok("2026-11-23 07:49:44-03").as_deref(),
            Some("2026-11-23T07:49:44-03:00")
        );
        assert_eq!(
            ok("1850-01-01 00:00:00+00:53:28").as_deref(),
            Some("1850-01-01T00:00:00+00:53:28")
        );
        assert_eq!(
            ok("0044-03-15 12:00:00+00 BC").as_deref(),
            Some("-0043-03-15T12:00:00+00:00")
        );
        assert_eq!(ok("infinity").as_deref(), Some("infinity"));
        assert_eq!(
            timestamp("2026-11-23 07:49:44.123").ok().as_deref(),
            Some("2026-11-23T07:49:44.123")
        );
        assert_eq!(
            timestamp("0001-01-01 00:00:00 BC").ok().as_deref(),
            Some("0000-01-01T00:00:00")
        );
        assert_eq!(timestamp("-infinity").ok().as_deref(), Some("-infinity"));
        assert_eq!(
            timestamp("12345-01-01 00:00:00").ok().as_deref(),
            Some("12345-01-01T00:00:00")
        );
        for bad in [
            "",
            "2026-11-23",
            "Mon Nov 23 07:49:44 2026 UTC",
            "2026-11-23 07:49:44",
            "2026-11-23 7:49:44+00",
            "2026-11-23 07:49:44+0",
            "2026-11-23 07:49:44.+00",
            "0000-01-01 00:00:00+00 BC",
        ] {
            assert!(timestamptz(bad).is_err(), "{bad:?}");
        }
        assert!(timestamp("2026-11-23 07:49:44+00").is_err());
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(date("2026-11-23").ok().as_deref(), Some("2026-11-23"));
        assert_eq!(date("0044-03-15 BC").ok().as_deref(), Some("-0043-03-15"));
        assert_eq!(date("infinity").ok().as_deref(), Some("infinity"));
        assert!(date("11/23/2026").is_err());
        assert_eq!(time("07:49:44.123").ok().as_deref(), Some("07:49:44.123"));
        assert_eq!(time("24:00:00").ok().as_deref(), Some("24:00:00"));
        assert!(time("07:49").is_err());
        assert_eq!(
            timetz("07:49:44+02").ok().as_deref(),
            Some("07:49:44+02:00")
        );
        assert_eq!(
            timetz("07:49:44.5-09:30").ok().as_deref(),
            Some("07:49:44.5-09:30")
        );
        assert!(timetz("07:49:44").is_err());
    }
}
