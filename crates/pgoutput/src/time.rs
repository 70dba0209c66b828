//! Postgres timestamps on the wire: microseconds since 2000-01-01 00:00:00 UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the Unix epoch (1970-01-01) to the Postgres epoch (2000-01-01).
pub const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

const MICROS_PER_DAY: i64 = 86_400_000_000;

fn pg_epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS)
}

/// Microseconds from the Postgres epoch to `t`, saturating at the `i64` range.
///
/// This is the clock field of a `StandbyStatusUpdate`.
pub fn pg_epoch_micros(t: SystemTime) -> i64 {
    match t.duration_since(pg_epoch()) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros())
            .map(|m| -m)
            .unwrap_or(i64::MIN),
    }
}

/// The inverse of [`pg_epoch_micros`]; `None` if the platform's `SystemTime`
/// cannot represent the instant.
pub fn system_time_from_pg_micros(micros: i64) -> Option<SystemTime> {
    let d = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        pg_epoch().checked_add(d)
    } else {
        pg_epoch().checked_sub(d)
    }
}

/// Formats Postgres-epoch microseconds as ISO 8601 UTC with microsecond
/// precision, e.g. `2026-11-23T07:49:44.123456Z`. Total over all `i64`.
///
/// Runs twice per transaction while streaming, so years 0–9999 are written
/// digit by digit instead of through `format!`.
pub fn format_pg_micros(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    // 2000-01-01 is day 10957 after 1970-01-01.
    let (y, m, d) = civil_from_days(days + 10_957);
    let secs = of_day / 1_000_000;
    let frac = of_day % 1_000_000;
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{frac:06}Z");
    }
    let mut out = String::with_capacity(27);
    push_padded(&mut out, y, 4);
    out.push('-');
    push_padded(&mut out, i64::from(m), 2);
    out.push('-');
    push_padded(&mut out, i64::from(d), 2);
    out.push('T');
    push_padded(&mut out, hh, 2);
    out.push(':');
    push_padded(&mut out, mm, 2);
    out.push(':');
    push_padded(&mut out, ss, 2);
    out.push('.');
    push_padded(&mut out, frac, 6);
    out.push('Z');
    out
}

/// Appends the last `width` decimal digits of `v` (≥ 0), zero-padded.
fn push_padded(out: &mut String, v: i64, width: u32) {
    let mut div = 10i64.pow(width - 1);
    while div > 0 {
        let digit = (v / div % 10) as u8;
        out.push(char::from(b'0' + digit));
        div /= 10;
    }
}

/// Proleptic Gregorian (year, month, day) for days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is in 1..=31 and m in 1..=12 by construction.
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn epoch_is_zero() {
        assert_eq!(pg_epoch_micros(pg_epoch()), 0);
        assert_eq!(format_pg_micros(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(pg_epoch_micros(UNIX_EPOCH), -946_684_800_000_000);
        assert_eq!(format_pg_micros(-1), "1999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn formats_known_instant() {
        // 2026-11-23T07:49:44.123456Z is Unix 1795420184.123456
        let t = UNIX_EPOCH + Duration::from_micros(1_795_420_184_123_456);
        let m = pg_epoch_micros(t);
        assert_eq!(format_pg_micros(m), "2026-11-23T07:49:44.123456Z");
        assert_eq!(system_time_from_pg_micros(m), Some(t));
        assert_eq!(
            format_pg_micros(59 * MICROS_PER_DAY),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn extremes_do_not_panic() {
        assert!(!format_pg_micros(i64::MIN).is_empty());
        assert!(!format_pg_micros(i64::MAX).is_empty());
        let _ = system_time_from_pg_micros(i64::MIN);
        let _ = system_time_from_pg_micros(i64::MAX);
    }

    proptest! {
        #[test]
        // Years -1 to 10000: the digit-by-digit path and both sides of its edges.
        fn digit_by_digit_matches_format(m in -63_200_000_000_000_000i64..252_500_000_000_000_000) {
            let days = m.div_euclid(MICROS_PER_DAY);
            let of_day = m.rem_euclid(MICROS_PER_DAY);
            let (y, mo, d) = civil_from_days(days + 10_957);
            let secs = of_day / 1_000_000;
            let expected = format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                of_day % 1_000_000
            );
            prop_assert_eq!(format_pg_micros(m), expected);
        }

        #[test]
        fn system_time_round_trip(m in -4_000_000_000_000_000i64..4_000_000_000_000_000) {
            if let Some(t) = system_time_from_pg_micros(m) {
                prop_assert_eq!(pg_epoch_micros(t), m);
            }
        }
    }
}
