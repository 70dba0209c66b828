//! The session settings walcast forces on every Postgres connection whose text it parses.
//!
//! Postgres formats dates, times, intervals and floats by the session's `DateStyle`,
//! `IntervalStyle`, `TimeZone` and `extra_float_digits`, which a role or database may set
//! (`ALTER DATABASE … SET DateStyle = 'SQL, DMY'`). pgoutput renders row values with the
//! walsender's settings too. So every connection sends these at startup, after the DSN's own
//! `options`: a later `-c` wins, so nothing configured can change how values read.

/// `(name, value)` of each forced setting.
pub const SESSION_SETTINGS: [(&str, &str); 4] = [
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
];

/// The startup `options` value: the DSN's `options` (if any), then `-c name=value` for each
/// of [`SESSION_SETTINGS`].
pub fn session_options(dsn_options: Option<&str>) -> String {
    let mut out = dsn_options.unwrap_or("").trim().to_owned();
    for (name, value) in SESSION_SETTINGS {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("-c {name}={value}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_settings_come_after_the_dsn_options() {
        assert_eq!(
            session_options(Some("-c statement_timeout=5s")),
            "-c statement_timeout=5s -c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC \
             -c extra_float_digits=3"
        );
        assert!(session_options(None).starts_with("-c DateStyle=ISO"));
    }
}
