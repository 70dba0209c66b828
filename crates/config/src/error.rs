use std::fmt::Write;
use std::path::{Path, PathBuf};

use figment::error::{Actual, Kind};

/// A configuration that cannot be used. The message names the key, the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "config file {path} does not exist; pass --config with the path of a connector file \
         (see connectors/ for examples)"
    )]
    Missing { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

/// Whether a key path may hold a credential (`postgres.dsn`, `kafka.properties."sasl.password"`).
fn is_secret_path(path: &[String]) -> bool {
    path.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        [
            "password",
            "secret",
            "dsn",
            "jaas",
            "token",
            "credential",
            "key",
        ]
        .iter()
        .any(|s| p.contains(s))
            || p == "properties"
    })
}

/// What was found, without the value unless it is a harmless number or boolean.
fn describe(actual: &Actual, secret: bool) -> String {
    match actual {
        Actual::Str(_) => "a string".to_owned(),
        Actual::Char(_) => "a character".to_owned(),
        Actual::Bytes(_) => "bytes".to_owned(),
        Actual::Other(_) => "a value".to_owned(),
        Actual::Bool(_) | Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) if secret => {
            match actual {
                Actual::Bool(_) => "a boolean".to_owned(),
                _ => "a number".to_owned(),
            }
        }
        other => other.to_string(),
    }
}

impl ConfigError {
    /// A value that parsed but makes no sense (checked after loading).
    pub fn invalid(path: &Path, key: &str, problem: impl std::fmt::Display) -> ConfigError {
        ConfigError::Invalid(format!("{}: key `{key}`: {problem}", path.display()))
    }

    pub(crate) fn from_figment(path: &Path, error: figment::Error) -> ConfigError {
        let mut out = String::new();
        for (i, e) in error.into_iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(figment::Source::File(f)) => f.display().to_string(),
                    _ => m.name.to_string(),
                })
                .unwrap_or_else(|| path.display().to_string());
            let parent = e.path.join(".");
            // Figment's path ends with the offending field for unknown keys, but not always
            // for missing ones.
            let key = |field: &str| match e.path.last() {
                Some(last) if last == field => parent.clone(),
                _ if parent.is_empty() => field.to_owned(),
                _ => format!("{parent}.{field}"),
            };
            let from_env = !matches!(
                e.metadata.as_ref().and_then(|m| m.source.as_ref()),
                Some(figment::Source::File(_))
            ) && e.metadata.is_some();
            let source = if from_env {
                let var = e.path.join("__").to_uppercase();
                format!("{source} (variable {}{var})", crate::ENV_PREFIX)
            } else {
                source
            };
            let _ = match &e.kind {
                Kind::UnknownField(field, expected) => write!(
                    out,
                    "{source}: unknown key `{}`; remove it or fix its spelling (expected one of: {})",
                    key(field),
                    expected.join(", ")
                ),
                Kind::MissingField(field) => write!(
                    out,
                    "{source}: missing key `{}`; add it (see the connector files under connectors/)",
                    key(field)
                ),
                // The value is not echoed where it could be a secret: a string anywhere (a DSN
                // given where a table belongs), anything under a secret-looking key.
                Kind::InvalidType(actual, expected) => write!(
                    out,
                    "{source}: key `{parent}`: invalid type: found {}, expected {expected}",
                    describe(actual, is_secret_path(&e.path))
                ),
                Kind::InvalidValue(actual, expected) => write!(
                    out,
                    "{source}: key `{parent}`: invalid value: found {}, expected {expected}",
                    describe(actual, is_secret_path(&e.path))
                ),
                other => write!(out, "{source}: key `{parent}`: {other}"),
            };
        }
        ConfigError::Invalid(out)
    }
}
