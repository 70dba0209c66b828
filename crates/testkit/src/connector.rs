//! Connector files for tests: the shipped `connectors/*.toml` (or an empty file) as a TOML
//! document whose keys a test sets from typed values, removes or gives a wrong type, then
//! writes out. Comments and layout of the shipped file are kept.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, Value};

use crate::{KitError, repo_root};

/// The shipped source connector file, relative to the repository root.
pub const SOURCE_FILE: &str = "connectors/catalog-outbox-source.toml";
/// The shipped sink connector file, relative to the repository root.
pub const SINK_FILE: &str = "connectors/catalog-read-sink.toml";

/// A connector file as a TOML document. Keys are paths of segments (`["kafka", "properties",
/// "sasl.password"]`); an element of an array of tables (`[[events]]`) is named by its index
/// (`["events", "0", "type"]`).
///
/// ```no_run
/// # fn main() -> Result<(), walcast_testkit::KitError> {
/// use walcast_testkit::ConnectorFile;
/// let mut file = ConnectorFile::shipped(walcast_testkit::SOURCE_FILE)?;
/// file.set(&["postgres", "slot"], "my_slot")
///     .set(&["postgres", "create"], false)
///     .set(&["kafka", "partitions"], 1)
///     .set(&["kafka", "properties", "linger.ms"], "5");
/// let path = file.write(std::path::Path::new("/tmp/source.toml"))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConnectorFile {
    doc: DocumentMut,
}

impl ConnectorFile {
    /// An empty file.
    pub fn new() -> ConnectorFile {
        ConnectorFile::default()
    }

    /// A file of the repository (`connectors/…`), parsed.
    pub fn shipped(relative: &str) -> Result<ConnectorFile, KitError> {
        let path = repo_root().join(relative);
        let text = std::fs::read_to_string(&path).map_err(KitError::io(&path))?;
        ConnectorFile::parse(&text).map_err(|e| match e {
            KitError::Io { source, .. } => KitError::Io { path, source },
            e => e,
        })
    }

    /// A file from its text.
    pub fn parse(text: &str) -> Result<ConnectorFile, KitError> {
        let doc = text.parse::<DocumentMut>().map_err(|e| KitError::Io {
            path: PathBuf::from("(connector text)"),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(ConnectorFile { doc })
    }

    /// Sets the key at `path` to `value`, creating the tables on the way.
    pub fn set(&mut self, path: &[&str], value: impl Into<Value>) -> &mut ConnectorFile {
        if let Some((key, tables)) = path.split_last()
            && let Some(table) = table_at(self.doc.as_table_mut(), tables, true)
        {
            table.insert(key, Item::Value(value.into()));
        }
        self
    }

    /// The value at `path`, if the file has one there.
    pub fn get(&self, path: &[&str]) -> Option<&Value> {
        let (key, tables) = path.split_last()?;
        let mut table = self.doc.as_table();
        let mut segments = tables.iter();
        while let Some(segment) = segments.next() {
            table = match table.get(segment)? {
                Item::Table(t) => t,
                Item::ArrayOfTables(a) => a.get(segments.next()?.parse().ok()?)?,
                _ => return None,
            };
        }
        table.get(key)?.as_value()
    }

    /// Removes the key (or the whole table) at `path`; whether it was there.
    pub fn remove(&mut self, path: &[&str]) -> bool {
        let Some((key, tables)) = path.split_last() else {
            return false;
        };
        table_at(self.doc.as_table_mut(), tables, false)
            .and_then(|t| t.remove(key))
            .is_some()
    }

    /// The path of every key that holds a value (not a table), in file order: what an operator
    /// can leave out or mistype. A multi-line array or an inline table is one value.
    pub fn keys(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        walk(self.doc.as_table(), &mut Vec::new(), &mut out);
        out
    }

    /// The file with the value at `path` replaced by one of another TOML type (a number for a
    /// string, a string for anything else).
    pub fn mistype(&mut self, path: &[&str]) -> &mut ConnectorFile {
        let is_string = self.get(path).is_some_and(Value::is_str);
        if is_string {
            self.set(path, 42)
        } else {
            self.set(path, "wrong-type")
        }
    }

    /// The file as TOML text.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// Writes the file to `path`; returns `path`.
    pub fn write(&self, path: &Path) -> Result<PathBuf, KitError> {
        std::fs::write(path, self.text()).map_err(KitError::io(path))?;
        Ok(path.to_owned())
    }
}

/// The table at `path` under `table` (an array of tables takes the element's index as the next
/// segment); missing tables are created when `create` is set.
fn table_at<'t>(mut table: &'t mut Table, path: &[&str], create: bool) -> Option<&'t mut Table> {
    let mut segments = path.iter();
    while let Some(segment) = segments.next() {
        if create && !table.contains_key(segment) {
            table.insert(segment, Item::Table(Table::new()));
        }
        table = match table.get_mut(segment)? {
            Item::Table(t) => t,
            Item::ArrayOfTables(a) => a.get_mut(segments.next()?.parse().ok()?)?,
            _ => return None,
        };
    }
    Some(table)
}

fn walk(table: &Table, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for (key, item) in table.iter() {
        prefix.push(key.to_owned());
        match item {
            Item::Table(t) => walk(t, prefix, out),
            Item::ArrayOfTables(a) => {
                for (i, element) in a.iter().enumerate() {
                    prefix.push(i.to_string());
                    walk(element, prefix, out);
                    prefix.pop();
                }
            }
            Item::Value(_) => out.push(prefix.clone()),
            Item::None => {}
        }
        prefix.pop();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
top = 1
[kafka]
brokers = "b:1"
[kafka.properties]
"linger.ms" = "5"
[[events]]
type = "A"
columns = [
    { name = "a", type = "uuid" },
]
[[events.upcast]]
from = 1
[[events]]
type = "B"
"#;

    fn keys(file: &ConnectorFile) -> Vec<String> {
        file.keys().iter().map(|k| k.join(".")).collect()
    }

    #[test]
    fn keys_walk_tables_and_arrays_of_tables_by_index_in_file_order() {
        let file = ConnectorFile::parse(TEXT).unwrap();
        assert_eq!(
            keys(&file),
            [
                "top",
                "kafka.brokers",
                "kafka.properties.linger.ms",
                "events.0.type",
                "events.0.columns",
                "events.0.upcast.0.from",
                "events.1.type",
            ]
        );
    }

    #[test]
    fn set_get_mistype_and_remove_reach_into_tables_and_array_elements() {
        let mut file = ConnectorFile::parse(TEXT).unwrap();
        file.set(&["kafka", "topic"], "t")
            .set(&["events", "1", "type"], 42)
            .set(&["admin", "listen"], "127.0.0.1:0")
            .mistype(&["kafka", "brokers"])
            .mistype(&["top"]);
        assert_eq!(
            file.get(&["kafka", "topic"]).and_then(Value::as_str),
            Some("t")
        );
        assert_eq!(
            file.get(&["events", "1", "type"])
                .and_then(Value::as_integer),
            Some(42)
        );
        assert_eq!(
            file.get(&["kafka", "brokers"]).and_then(Value::as_integer),
            Some(42)
        );
        assert_eq!(
            file.get(&["top"]).and_then(Value::as_str),
            Some("wrong-type")
        );
        assert!(file.remove(&["kafka", "properties", "linger.ms"]));
        assert!(!file.remove(&["kafka", "nothing"]));
        let again = ConnectorFile::parse(&file.text()).unwrap();
        assert_eq!(again.text(), file.text());
        assert!(
            again.text().contains("listen = \"127.0.0.1:0\""),
            "{}",
            again.text()
        );
        assert!(!again.text().contains("linger.ms"));
    }
}
