use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;

use serde::Deserialize;

/// `[kafka.properties]`: extra librdkafka settings, some of them credentials
/// (`sasl.password`, `ssl.key.password`, ...). `Debug` masks the value of every
/// [secret key](is_secret_property), so a config dump or a `?config` log field never shows one.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct KafkaProperties(BTreeMap<String, String>);

impl KafkaProperties {
    /// The settings with their values, for the client only.
    pub fn expose(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// Whether a librdkafka property holds a credential: `sasl.password`, `ssl.key.password`,
/// `ssl.keystore.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`,
/// `sasl.oauthbearer.config`, JAAS or token settings.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "token", "oauthbearer.config"]
        .iter()
        .any(|s| k.contains(s))
        || k == "ssl.key.pem"
        || k == "ssl_key"
}

impl Deref for KafkaProperties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a KafkaProperties {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<BTreeMap<String, String>> for KafkaProperties {
    fn from(map: BTreeMap<String, String>) -> Self {
        KafkaProperties(map)
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v = if is_secret_property(k) {
                    "********"
                } else {
                    v.as_str()
                };
                (k, v)
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_credentials_only() {
        let p = KafkaProperties::from(BTreeMap::from([
            ("sasl.password".to_owned(), "hunter2".to_owned()),
            ("ssl.key.password".to_owned(), "k3y".to_owned()),
            (
                "sasl.oauthbearer.client.secret".to_owned(),
                "s3c".to_owned(),
            ),
            ("linger.ms".to_owned(), "5".to_owned()),
        ]));
        let shown = format!("{p:?}");
        for secret in ["hunter2", "k3y", "s3c"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("\"linger.ms\": \"5\""), "{shown}");
        assert_eq!(p.expose()["sasl.password"], "hunter2");
    }
}
