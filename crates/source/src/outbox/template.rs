//! Topic names: fixed (`catalog.events`) or a template over outbox columns
//! (`outbox.event.{event_type}`, like Debezium's `route.topic.replacement`).

/// A parsed `[kafka] topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Column(String),
}

/// Kafka's limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;

impl TopicTemplate {
    /// Parses a topic name or template; the error says what is wrong.
    pub(crate) fn parse(s: &str) -> Result<TopicTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("'{s}' has a '{{' without a matching '}}'"));
            };
            let column = &rest[open + 1..open + close];
            if column.is_empty() || column.contains('{') {
                return Err(format!(
                    "'{s}' has an empty or nested placeholder; write {{column}}"
                ));
            }
            parts.push(Part::Column(column.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("'{s}' has a '}}' without a matching '{{'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        let template = TopicTemplate { parts };
        for part in &template.parts {
            if let Part::Literal(l) = part
                && let Some(c) = l.chars().find(|c| !valid_topic_char(*c))
            {
                return Err(format!(
                    "'{s}' contains '{c}'; topic names may only contain letters, digits, '.', '_' and '-'"
                ));
            }
        }
        if template.is_fixed() {
            check_topic_name(s)?;
        }
        Ok(template)
    }

    /// No placeholders: every event goes to the same topic.
    pub(crate) fn is_fixed(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The columns the template reads.
    pub(crate) fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Whether `name` is a topic this template can render (each placeholder matching any
    /// non-empty run).
    pub(crate) fn matches(&self, name: &str) -> bool {
        let pattern: String = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_str(),
                Part::Column(_) => "*",
            })
            .collect();
        glob_match(&pattern, name)
    }

    /// The topic for a row; `value` gives a column's text (`None`: null). The error names the
    /// problem (a null column, or a value that makes an invalid topic name).
    pub(crate) fn render<'a>(
        &self,
        mut value: impl FnMut(&str) -> Option<&'a str>,
    ) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Column(c) => match value(c) {
                    Some(v) => out.push_str(v),
                    None => return Err(format!("topic template column \"{c}\" is null")),
                },
            }
        }
        check_topic_name(&out).map(|()| out)
    }
}

/// Kafka's rules for a topic name.
pub(crate) fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("'{name}' is not a valid topic name"));
    }
    if name.len() > MAX_TOPIC_LEN {
        // The name comes from a row: quote a bounded part of it, cut at a character boundary.
        return Err(format!(
            "topic name '{}' is longer than {MAX_TOPIC_LEN} characters",
            walcast_config::text::excerpt(name, 64)
        ));
    }
    if let Some(c) = name.chars().find(|c| !valid_topic_char(*c)) {
        return Err(format!(
            "topic name '{name}' contains '{}'; topic names may only contain letters, digits, '.', '_' and '-'",
            c.escape_debug()
        ));
    }
    Ok(())
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (possibly
/// none) and everything else matches itself. Works on bytes: nothing is sliced.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    // Where the last `*` was, and where in `name` its match currently ends.
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            // Let the last `*` swallow one more byte and try again.
            star = Some((si, sj + 1));
            i = si + 1;
            j = sj + 1;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

fn valid_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn fixed_topic() {
        let t = TopicTemplate::parse("catalog.events").unwrap_or_else(|e| panic!("{e}"));
        assert!(t.is_fixed());
        assert_eq!(t.render(|_| None), Ok("catalog.events".to_owned()));
    }

    #[test]
    fn template_over_columns() {
        let t = TopicTemplate::parse("outbox.event.{event_type}").unwrap_or_else(|e| panic!("{e}"));
        assert!(!t.is_fixed());
        assert_eq!(t.columns().collect::<Vec<_>>(), ["event_type"]);
        assert_eq!(
            t.render(|c| (c == "event_type").then_some("ProductCreated")),
            Ok("outbox.event.ProductCreated".to_owned())
        );
        assert!(t.render(|_| None).unwrap_err().contains("is null"));
        assert!(
            t.render(|_| Some("bad type!"))
                .unwrap_err()
                .contains("contains ' '")
        );
    }

    #[test]
    fn bad_templates() {
        for bad in ["a.{b", "a}", "a.{}", "a b", "", "..", "x/{y}"] {
            assert!(TopicTemplate::parse(bad).is_err(), "{bad}");
        }
        assert!(check_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn globs_and_template_matches() {
        for (pattern, name, hit) in [
            ("a.*", "a.b", true),
            ("a.*", "a.", true),
            ("a.*", "b.a", false),
            ("*.dlq", "x.y.dlq", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "", true),
        ] {
            assert_eq!(glob_match(pattern, name), hit, "{pattern} {name}");
        }
        let t = TopicTemplate::parse("outbox.event.{event_type}").unwrap_or_else(|e| panic!("{e}"));
        assert!(t.matches("outbox.event.ProductCreated"));
        assert!(!t.matches("outbox.other.ProductCreated"));
    }

    #[test]
    fn long_non_ascii_names_are_refused_without_panicking() {
        for pad in 0..4 {
            let name = format!("{}{}", "x".repeat(pad), "€😀".repeat(60));
            let e = check_topic_name(&name).unwrap_err();
            assert!(e.contains("longer than 249") && e.len() < 200, "{e}");
        }
        let e = check_topic_name("a\u{1}b").unwrap_err();
        assert!(e.contains("'\\u{1}'"), "{e}");
    }
}
