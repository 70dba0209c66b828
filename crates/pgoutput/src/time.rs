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
pub fn format_pg_micros(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    // 2000-01-01 is day 10957 after 1970-01-01.
    let (y, m, d) = civil_from_days(days + 10_957);
    let secs = of_day / 1_000_000;
    let frac = of_day % 1_000_000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
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
        fn system_time_round_trip(m in -4_000_000_000_000_000i64..4_000_000_000_000_000) {
            if let Some(t) = system_time_from_pg_micros(m) {
                prop_assert_eq!(pg_epoch_micros(t), m);
            }
        }
    }
}
