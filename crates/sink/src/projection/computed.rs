//! Computed columns: an SQL expression with `{column}` placeholders that stand for the
//! column's *new* value in the statement that writes the row.

use super::Table;

/// A column a placeholder refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColRef {
    Key,
    Data(usize),
    Version,
    OccurredAt,
}

#[derive(Debug, Clone)]
enum Segment {
    Sql(String),
    Col(ColRef),
}

#[derive(Debug, Clone)]
pub(crate) struct Template(Vec<Segment>);

impl Template {
    pub(crate) fn parse(expr: &str, table: &Table) -> Result<Template, String> {
        let mut out = Vec::new();
        let mut rest = expr;
        while let Some(open) = rest.find('{') {
            out.push(Segment::Sql(rest[..open].to_owned()));
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or("unclosed '{'")?;
            let name = &after[..close];
            let col = if name == table.key.name {
                ColRef::Key
            } else if name == table.version_column {
                ColRef::Version
            } else if name == table.occurred_at_column {
                ColRef::OccurredAt
            } else {
                ColRef::Data(
                    table
                        .columns
                        .iter()
                        .position(|c| c.name == name)
                        .ok_or_else(|| format!("{{{name}}} is not a column of {}", table.name))?,
                )
            };
            out.push(Segment::Col(col));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err("unmatched '}'".into());
        }
        out.push(Segment::Sql(rest.to_owned()));
        Ok(Template(out))
    }

    /// The expression with each placeholder replaced by `value_of(column)`.
    pub(crate) fn render(&self, value_of: impl Fn(ColRef) -> String) -> String {
        let mut s = String::new();
        for seg in &self.0 {
            match seg {
                Segment::Sql(sql) => s.push_str(sql),
                Segment::Col(c) => s.push_str(&value_of(*c)),
            }
        }
        s
    }
}
