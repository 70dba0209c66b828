//! Kafka record → [`Change`], or a [`Rejection`] saying exactly what is wrong with it.

use rdkafka::Message;
use rdkafka::message::Headers;
use serde_json::{Map, Value};
use walcast_pgoutput::{Lsn, Timestamp};

use super::{Change, EventRule, Op, Position, Projections, RejectKind, Rejection, Source};
use crate::config::Action;
use crate::value::Text;
use crate::{text, value};

fn reject(kind: RejectKind, detail: impl Into<String>) -> Rejection {
    Rejection {
        kind,
        detail: detail.into(),
    }
}

/// The first value of header `name`, if present and not null.
pub(crate) fn header<'m>(msg: &'m impl Message, name: &str) -> Option<&'m [u8]> {
    let headers = msg.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value)
}

fn header_str<'m>(msg: &'m impl Message, name: &str) -> Result<Option<&'m str>, Rejection> {
    header(msg, name)
        .map(|v| {
            std::str::from_utf8(v)
                .map_err(|_| reject(RejectKind::WrongType, format!("header {name} is not UTF-8")))
        })
        .transpose()
}

impl Projections {
    /// The record's `walcast.commit_lsn`, if it has a readable one.
    pub(crate) fn commit_lsn(&self, msg: &impl Message) -> Option<Lsn> {
        header_str(msg, &self.envelope.commit_lsn_header)
            .ok()
            .flatten()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Decodes a record into the change it makes, or why it cannot be projected.
    pub(crate) fn decode(&self, msg: &impl Message) -> Result<Change, Rejection> {
        let env = &self.envelope;
        let event_type = header_str(msg, &env.event_type_header)?.ok_or_else(|| {
            reject(
                RejectKind::MissingField,
                format!("header {} is missing", env.event_type_header),
            )
        })?;
        let rule = self.events.get(event_type).ok_or_else(|| {
            reject(
                RejectKind::UnknownType,
                format!(
                    "no [[events]] mapping for event type {}",
                    text::echo(event_type)
                ),
            )
        })?;
        let id = header_str(msg, &env.event_id_header)?.ok_or_else(|| {
            reject(
                RejectKind::MissingField,
                format!("header {} is missing", env.event_id_header),
            )
        })?;
        let event_id = uuid::Uuid::parse_str(id).map_err(|_| {
            reject(
                RejectKind::WrongType,
                format!(
                    "header {} is not a UUID: {}",
                    env.event_id_header,
                    text::echo(id)
                ),
            )
        })?;
        let payload = msg
            .payload()
            .ok_or_else(|| reject(RejectKind::Undecodable, "the record has no value"))?;
        let mut payload = match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(reject(
                    RejectKind::Undecodable,
                    format!("the value is {}, not a JSON object", value::kind(&other)),
                ));
            }
            Err(e) => {
                return Err(reject(
                    RejectKind::Undecodable,
                    format!("the value is not JSON: {e}"),
                ));
            }
        };

        let schema_version = self.schema_version(msg, &payload, rule)?;
        upcast(event_type, rule, schema_version, &mut payload)?;

        let table = &self.tables[rule.table];
        let key = field(&payload, &rule.key_field)?
            .ok_or_else(|| missing(event_type, &rule.key_field))
            .and_then(|v| {
                value::to_sql_text(table.key.ty, table.key.max_chars, v)
                    .map_err(|m| wrong(event_type, &rule.key_field, m.0))
            })?;
        let version_field = &env.aggregate_version_field;
        let version = match field(&payload, version_field)? {
            None => return Err(missing(event_type, version_field)),
            Some(v) => v
                .as_i64()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| {
                    wrong(
                        event_type,
                        version_field,
                        format!("expected an integer, got {}", text::echo_json(v)),
                    )
                })?,
        };
        let occurred_at =
            match header_str(msg, &env.occurred_at_header)? {
                None => None,
                Some(s) => Some(s.parse().ok().and_then(Timestamp::unix_micros).ok_or_else(
                    || {
                        reject(
                            RejectKind::WrongType,
                            format!(
                                "header {} is not an ISO 8601 timestamp: {}",
                                env.occurred_at_header,
                                text::echo(s)
                            ),
                        )
                    },
                )?),
            };
        let op = match rule.action {
            Action::Delete => Op::Delete,
            Action::Update => Op::Update(self.columns(event_type, rule, &payload)?),
            Action::Upsert => {
                let mut row = vec![None; table.columns.len()];
                for (i, v) in self.columns(event_type, rule, &payload)? {
                    row[i] = v;
                }
                Op::Upsert(row)
            }
        };
        Ok(Change {
            event_id,
            event_type: event_type.to_owned(),
            table: rule.table,
            key,
            pos: Position {
                version,
                occurred_at,
            },
            op,
        })
    }

    fn schema_version(
        &self,
        msg: &impl Message,
        payload: &Map<String, Value>,
        rule: &EventRule,
    ) -> Result<u32, Rejection> {
        let env = &self.envelope;
        if let Some(h) = header_str(msg, &env.event_version_header)? {
            return h.trim().parse().map_err(|_| {
                reject(
                    RejectKind::WrongType,
                    format!(
                        "header {} is not a version number: {}",
                        env.event_version_header,
                        text::echo(h)
                    ),
                )
            });
        }
        match payload.get(&env.event_version_field) {
            None | Some(Value::Null) => Ok(rule.version),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    reject(
                        RejectKind::WrongType,
                        format!(
                            "field {} is not a version number: {}",
                            env.event_version_field,
                            text::echo_json(v)
                        ),
                    )
                }),
        }
    }

    fn columns(
        &self,
        event_type: &str,
        rule: &EventRule,
        payload: &Map<String, Value>,
    ) -> Result<Vec<(usize, Option<Text>)>, Rejection> {
        let table = &self.tables[rule.table];
        let mut out = Vec::with_capacity(rule.sets.len());
        for (ci, source) in &rule.sets {
            let col = &table.columns[*ci];
            let v = match source {
                Source::Const(v) => v.clone(),
                Source::Field { name, optional } => match field(payload, name)? {
                    None if *optional => None,
                    None => return Err(missing(event_type, name)),
                    Some(v) => Some(
                        value::to_text(col.ty, col.max_chars, v)
                            .map_err(|m| wrong(event_type, name, m.0))?,
                    ),
                },
            };
            out.push((*ci, v));
        }
        Ok(out)
    }
}

/// A payload field by dotted path; JSON null counts as missing.
fn field<'p>(payload: &'p Map<String, Value>, path: &str) -> Result<Option<&'p Value>, Rejection> {
    let mut parts = path.split('.');
    let mut cur = parts.next().and_then(|p| payload.get(p));
    for p in parts {
        cur = match cur {
            Some(Value::Object(m)) => m.get(p),
            None | Some(Value::Null) => None,
            Some(other) => {
                return Err(reject(
                    RejectKind::WrongType,
                    format!(
                        "field {path}: expected an object on the way, got {}",
                        value::kind(other)
                    ),
                ));
            }
        };
    }
    Ok(cur.filter(|v| !v.is_null()))
}

fn missing(event_type: &str, field: &str) -> Rejection {
    reject(
        RejectKind::MissingField,
        format!("{event_type} needs field {field:?}, which is missing or null"),
    )
}

fn wrong(event_type: &str, field: &str, why: String) -> Rejection {
    reject(
        RejectKind::WrongType,
        format!("{event_type} field {field:?}: {why}"),
    )
}

/// Lifts `payload` from schema version `from` to the rule's current version, one step at a time.
fn upcast(
    event_type: &str,
    rule: &EventRule,
    from: u32,
    payload: &mut Map<String, Value>,
) -> Result<(), Rejection> {
    if from > rule.version {
        return Err(reject(
            RejectKind::UnsupportedVersion,
            format!(
                "{event_type} version {from} is newer than the mapping (version {}); \
                 update the [[events]] mapping",
                rule.version
            ),
        ));
    }
    for v in from..rule.version {
        let step = rule.upcasts.get(&v).ok_or_else(|| {
            reject(
                RejectKind::UnsupportedVersion,
                format!(
                    "{event_type} version {v} has no upcast rule to version {}",
                    v + 1
                ),
            )
        })?;
        for (old, new) in &step.rename {
            if let Some(val) = payload.remove(old) {
                payload.insert(new.clone(), val);
            }
        }
        for (name, val) in &step.defaults {
            payload.entry(name.clone()).or_insert_with(|| val.clone());
        }
    }
    Ok(())
}
