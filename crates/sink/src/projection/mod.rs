//! The declarative projection: event types mapped onto read tables, compiled from the
//! connector file once and checked before anything runs.
//!
//! ```text
//!  Kafka record ──decode──▶ Change { table, key, position, op }      (or a Rejection → DLQ)
//!    headers: id, event_type, occurred_at, event_version, walcast.commit_lsn
//!    value:   payload JSON ──upcast v1→v2→…──▶ columns by [[events]] mapping
//! ```
//!
//! A change's [`Position`] (aggregate version, then `occurred_at`) is the version guard: a
//! change applies to a row only if it is newer than what the row (or its tombstone) holds.

mod computed;
mod decode;

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

pub(crate) use computed::{ColRef, Template};

use crate::config::{Action, ColumnType, EnvelopeConfig, FieldSource, SinkConfig};
use crate::error::{Error, Result};
use crate::value::{self, Text};

/// The compiled mapping of a connector file.
#[derive(Debug)]
pub struct Projections {
    pub(crate) tables: Vec<Table>,
    events: HashMap<String, EventRule>,
    envelope: EnvelopeConfig,
}

#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) name: String,
    pub(crate) key: Column,
    /// Data columns (not the key, not the guard columns, not computed).
    pub(crate) columns: Vec<Column>,
    pub(crate) version_column: String,
    pub(crate) occurred_at_column: String,
    pub(crate) computed: Vec<(String, Template)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) ty: ColumnType,
    pub(crate) nullable: bool,
    pub(crate) max_chars: Option<usize>,
}

#[derive(Debug)]
struct EventRule {
    table: usize,
    action: Action,
    key_field: String,
    version: u32,
    /// Data column index → where its value comes from.
    sets: Vec<(usize, Source)>,
    /// `from` version → rule lifting it by one.
    upcasts: BTreeMap<u32, Upcast>,
}

#[derive(Debug)]
enum Source {
    Field { name: String, optional: bool },
    Const(Option<Text>),
}

#[derive(Debug)]
struct Upcast {
    rename: Vec<(String, String)>,
    defaults: Vec<(String, Value)>,
}

/// Version guard of a change: aggregate version, then `occurred_at` (µs since the Unix epoch,
/// [`walcast_pgoutput::Timestamp::unix_micros`], the form the bookkeeping tables compare in
/// SQL; an unknown time sorts first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub(crate) version: i64,
    pub(crate) occurred_at: Option<i64>,
}

/// One decoded event: what it does to which row.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) event_id: uuid::Uuid,
    pub(crate) event_type: String,
    pub(crate) table: usize,
    /// Canonical text of the key (as Postgres prints it).
    pub(crate) key: String,
    pub(crate) pos: Position,
    pub(crate) op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Every data column, in table order.
    Upsert(Vec<Option<Text>>),
    /// Some data columns, ascending by index.
    Update(Vec<(usize, Option<Text>)>),
    Delete,
}

/// Why an event cannot be projected; it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectKind,
    pub detail: String,
}

/// The class of a poison event (the `walcast.error.kind` DLQ header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectKind {
    /// The value is not a JSON object (or empty).
    Undecodable,
    /// No `[[events]]` mapping for this event type.
    UnknownType,
    /// A required header or payload field is missing or null.
    MissingField,
    /// A field holds a value of the wrong type.
    WrongType,
    /// The event's schema version is newer than the mapping, or has no upcast rule.
    UnsupportedVersion,
    /// The target database refused the event's values.
    Database,
    /// A held update waited longer than the tombstone window for a row that never came.
    NoBaseRow,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Undecodable => "undecodable",
            RejectKind::UnknownType => "unknown_type",
            RejectKind::MissingField => "missing_field",
            RejectKind::WrongType => "wrong_type",
            RejectKind::UnsupportedVersion => "unsupported_version",
            RejectKind::Database => "database",
            RejectKind::NoBaseRow => "no_base_row",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl Projections {
    /// Compiles and cross-checks the `[[tables]]` and `[[events]]` of a connector file.
    pub fn compile(config: &SinkConfig) -> Result<Projections> {
        let mut tables = Vec::new();
        for t in &config.tables {
            if tables.iter().any(|x: &Table| x.name == t.name) {
                return Err(Error::Config(format!(
                    "table {} is listed twice under [[tables]]",
                    t.name
                )));
            }
            tables.push(compile_table(t)?);
        }
        let mut events = HashMap::new();
        for e in &config.events {
            let ctx = format!("[[events]] type = {:?}", e.event_type);
            let table = tables
                .iter()
                .position(|t| t.name == e.table)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{ctx}: table {:?} is not under [[tables]]",
                        e.table
                    ))
                })?;
            let rule = compile_event(&ctx, e, &tables[table], table)?;
            if events.insert(e.event_type.clone(), rule).is_some() {
                return Err(Error::Config(format!(
                    "{ctx} is listed twice; keep one mapping per type"
                )));
            }
        }
        Ok(Projections {
            tables,
            events,
            envelope: config.envelope.clone(),
        })
    }
}

fn compile_table(t: &crate::config::TableConfig) -> Result<Table> {
    let ctx = format!("[[tables]] name = {:?}", t.name);
    let fail = |m: String| Error::Config(format!("{ctx}: {m}"));
    for name in [&t.name, &t.version_column, &t.occurred_at_column]
        .into_iter()
        .chain(t.columns.iter().map(|c| &c.name))
        .chain(t.computed.keys())
    {
        check_ident(name).map_err(&fail)?;
    }
    let mut key = None;
    let mut columns = Vec::new();
    for c in &t.columns {
        let col = Column {
            name: c.name.clone(),
            ty: c.ty,
            nullable: c.nullable,
            max_chars: c.max_chars,
        };
        if [&t.version_column, &t.occurred_at_column].contains(&&c.name)
            || t.computed.contains_key(&c.name)
        {
            return Err(fail(format!(
                "column {} is a guard or computed column; list only data columns under columns",
                c.name
            )));
        }
        if columns.iter().any(|x: &Column| x.name == c.name) {
            return Err(fail(format!("column {} is listed twice", c.name)));
        }
        if c.name == t.key {
            key = Some(col);
        } else {
            columns.push(col);
        }
    }
    let key = key.ok_or_else(|| fail(format!("key {:?} is not one of its columns", t.key)))?;
    let mut table = Table {
        name: t.name.clone(),
        key,
        columns,
        version_column: t.version_column.clone(),
        occurred_at_column: t.occurred_at_column.clone(),
        computed: Vec::new(),
    };
    for (name, expr) in &t.computed {
        let tpl =
            Template::parse(expr, &table).map_err(|m| fail(format!("computed {name}: {m}")))?;
        table.computed.push((name.clone(), tpl));
    }
    Ok(table)
}

fn compile_event(
    ctx: &str,
    e: &crate::config::EventConfig,
    table: &Table,
    idx: usize,
) -> Result<EventRule> {
    let fail = |m: String| Error::Config(format!("{ctx}: {m}"));
    let mut sets = Vec::new();
    for (column, source) in &e.columns {
        let Some(ci) = table.columns.iter().position(|c| &c.name == column) else {
            return Err(fail(format!(
                "column {column} is not a data column of {} (the key comes from `key`)",
                table.name
            )));
        };
        let col = &table.columns[ci];
        let source = match source {
            FieldSource::Field(name) => Source::Field {
                name: name.clone(),
                optional: false,
            },
            FieldSource::Spec(spec) => match (&spec.field, &spec.value) {
                (Some(name), None) => Source::Field {
                    name: name.clone(),
                    optional: spec.optional,
                },
                (None, Some(Value::Null)) if col.nullable => Source::Const(None),
                (None, Some(v)) => Source::Const(Some(
                    value::to_text(col.ty, col.max_chars, v)
                        .map_err(|m| fail(format!("column {column}: constant {v}: {}", m.0)))?,
                )),
                _ => return Err(fail(format!("column {column}: give either field or value"))),
            },
        };
        if matches!(source, Source::Field { optional: true, .. }) && !col.nullable {
            return Err(fail(format!(
                "column {column} is optional here but not nullable in the table; \
                 set nullable = true on the column or drop optional"
            )));
        }
        sets.push((ci, source));
    }
    match e.action {
        Action::Upsert => {
            if let Some(c) = table
                .columns
                .iter()
                .enumerate()
                .find(|(i, c)| !c.nullable && !sets.iter().any(|(s, _)| s == i))
            {
                return Err(fail(format!(
                    "an upsert writes the whole row, but non-nullable column {} has no mapping",
                    c.1.name
                )));
            }
        }
        Action::Update if sets.is_empty() => {
            return Err(fail("an update must set at least one column".into()));
        }
        Action::Delete if !sets.is_empty() => {
            return Err(fail("a delete takes only a key; remove columns".into()));
        }
        _ => {}
    }
    let mut upcasts = BTreeMap::new();
    for u in &e.upcast {
        if u.from >= e.version {
            return Err(fail(format!(
                "upcast from = {} must be older than the current version = {}",
                u.from, e.version
            )));
        }
        let rule = Upcast {
            rename: u
                .rename
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            defaults: u
                .defaults
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
        };
        if upcasts.insert(u.from, rule).is_some() {
            return Err(fail(format!("two upcast rules from version {}", u.from)));
        }
    }
    sets.sort_by_key(|(i, _)| *i);
    Ok(EventRule {
        table: idx,
        action: e.action,
        key_field: e.key.clone(),
        version: e.version,
        sets,
        upcasts,
    })
}

/// Table and column names are written into SQL (quoted); keep them plain.
fn check_ident(name: &str) -> std::result::Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a plain SQL name (a-z, 0-9, _; at most 63)"
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests;
