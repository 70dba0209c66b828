//! Connector configuration: a TOML file under `connectors/` plus `WALCAST_` environment
//! overrides, loaded into typed structs that reject unknown keys.
//!
//! Environment variables override file values; `__` separates nesting levels, so
//! `WALCAST_KAFKA__BROKERS=broker:9092` sets `[kafka] brokers`. Only variables naming a key
//! inside a section (with at least one `__`) are read, so other `WALCAST_*` settings of the
//! scripts and the CLI (`WALCAST_LOG_JSON`, `WALCAST_LEADER_PORT`, ...) never clash with them. Every error names the key and
//! the file (or variable) it came from, because an operator fixes config by editing one line.
//!
//! ```
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Kafka { brokers: String }
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { kafka: Kafka }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("c.toml");
//! std::fs::write(&path, "[kafka]\nbrokers = \"127.0.0.1:19092\"\n").unwrap();
//! let config: Config = walcast_config::load(&path).unwrap();
//! assert_eq!(config.kafka.brokers, "127.0.0.1:19092");
//! ```

mod backoff;
mod error;
mod properties;
mod session;
pub mod text;

pub use backoff::Backoff;
pub use error::ConfigError;
pub use properties::{KafkaProperties, is_secret_property};
pub use session::{SESSION_SETTINGS, session_options};

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;

/// The prefix of environment variables that override connector files.
pub const ENV_PREFIX: &str = "WALCAST_";

/// Loads `path` with `WALCAST_*` environment overrides into `T`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    load_with_env(path, env_overrides())
}

/// The `WALCAST_<SECTION>__<KEY>` environment provider used by [`load`].
pub fn env_overrides() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

/// Like [`load`], with the environment provider given (tests use a private prefix so they do
/// not see each other's variables).
pub fn load_with_env<T: DeserializeOwned>(path: &Path, env: Env) -> Result<T, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError::Missing {
            path: path.to_owned(),
        });
    }
    Figment::new()
        .merge(Toml::file_exact(path))
        .merge(env)
        .extract()
        .map_err(|e| ConfigError::from_figment(path, e))
}

/// Like [`load`], with `vars` (name, value) standing in for the process environment: each
/// `WALCAST_<SECTION>__<KEY>` variable overrides the file as it would when set. For checking
/// a deployment's overrides (a compose file's `environment:`) without setting them.
pub fn load_with_vars<T: DeserializeOwned>(
    path: &Path,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError::Missing {
            path: path.to_owned(),
        });
    }
    let mut figment = Figment::new().merge(Toml::file_exact(path));
    for (name, value) in vars {
        let Some(key) = name.strip_prefix(ENV_PREFIX).filter(|k| k.contains("__")) else {
            continue;
        };
        // As the environment provider reads it: `__` nests, keys are lower case, and the
        // value is parsed (numbers, booleans, arrays) the same way.
        let key = key.to_lowercase().replace("__", ".");
        let value: figment::value::Value = value.parse().unwrap_or_else(|e| match e {});
        figment = figment.merge((key, value));
    }
    figment
        .extract()
        .map_err(|e| ConfigError::from_figment(path, e))
}
