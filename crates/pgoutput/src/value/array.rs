//! Postgres array literals: `{1,2,NULL,"a b"}`, `{{1,2},{3,4}}`,
//! `[0:1]={a,b}`.

use crate::error::DecodeError;

const CONTEXT: &str = "array literal";
/// Postgres' `MAXDIM`; also bounds recursion on hostile input.
const MAX_DEPTH: usize = 6;

/// One element of a parsed array literal, still in text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayElement {
    /// An unquoted `NULL`.
    Null,
    /// A scalar, unquoted and unescaped (a quoted `"NULL"` is this).
    Value(String),
    /// A nested dimension.
    Array(Vec<ArrayElement>),
}

/// Parses Postgres' array text output (with `,` as delimiter, as for every
/// built-in type except `box`) into its outermost dimension's elements.
///
/// Any dimension decoration (`[0:1]=`) is skipped: the result is positional.
pub fn parse_array_literal(text: &str) -> Result<Vec<ArrayElement>, DecodeError> {
    let mut p = Parser {
        b: text.as_bytes(),
        pos: 0,
    };
    p.skip_ws();
    if p.peek() == Some(b'[') {
        while p.peek().is_some_and(|c| c != b'=') {
            p.pos += 1;
        }
        p.expect(b'=', "'=' after the dimension decoration")?;
        p.skip_ws();
    }
    let elems = p.array(1)?;
    p.skip_ws();
    if p.pos != p.b.len() {
        return Err(p.err("end of input after the closing '}'"));
    }
    Ok(elems)
}

/// `array_isspace`: ASCII space, `\t`, `\n`, `\r`, `\v` and `\f`.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn err(&self, expected: &str) -> DecodeError {
        DecodeError::invalid(CONTEXT, self.pos, expected)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8, expected: &str) -> Result<(), DecodeError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(expected))
        }
    }

    fn array(&mut self, depth: usize) -> Result<Vec<ArrayElement>, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(self.err("at most 6 array dimensions"));
        }
        self.expect(b'{', "'{'")?;
        let mut out = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            self.skip_ws();
            let elem = match self.peek() {
                Some(b'{') => ArrayElement::Array(self.array(depth + 1)?),
                Some(b'"') => ArrayElement::Value(self.quoted()?),
                _ => self.unquoted()?,
            };
            out.push(elem);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => return Err(self.err("',' or '}' after an array element")),
            }
        }
    }

    fn string(&self, bytes: Vec<u8>, start: usize) -> Result<String, DecodeError> {
        String::from_utf8(bytes).map_err(|_| DecodeError::invalid(CONTEXT, start, "UTF-8 text"))
    }

    fn quoted(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        self.pos += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("a closing '\"'")),
                Some(b'"') => {
                    self.pos += 1;
                    return self.string(out, start);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self
                        .peek()
                        .ok_or_else(|| self.err("a character after '\\'"))?;
                    out.push(c);
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn unquoted(&mut self) -> Result<ArrayElement, DecodeError> {
        let start = self.pos;
        let mut out = Vec::new();
        // Length of `out` up to its last escaped or non-blank byte: trailing
        // unescaped whitespace is not part of the element.
        let mut keep = 0;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err(self.err("',' or '}' after an array element")),
                Some(b',' | b'}') => break,
                Some(b'{' | b'"') => return Err(self.err("'{' or '\"' only at an element's start")),
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self
                        .peek()
                        .ok_or_else(|| self.err("a character after '\\'"))?;
                    out.push(c);
                    self.pos += 1;
                    keep = out.len();
                    escaped = true;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                    if !is_space(c) {
                        keep = out.len();
                    }
                }
            }
        }
        out.truncate(keep);
        if out.is_empty() {
            return Err(DecodeError::invalid(
                CONTEXT,
                start,
                "an array element, not nothing",
            ));
        }
        if !escaped && out.eq_ignore_ascii_case(b"NULL") {
            return Ok(ArrayElement::Null);
        }
        self.string(out, start).map(ArrayElement::Value)
    }
}

#[cfg(test)]
mod tests {
    use super::ArrayElement::{Array, Null, Value};
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> ArrayElement {
        Value(s.into())
    }

    #[test]
    fn parses_postgres_output() {
        assert_eq!(parse_array_literal("{}"), Ok(vec![]));
        assert_eq!(
            parse_array_literal(r#"{1,2,NULL,"a b","NULL","q\"uote","back\\slash",""}"#),
            Ok(vec![
                v("1"),
                v("2"),
                Null,
                v("a b"),
                v("NULL"),
                v("q\"uote"),
                v("back\\slash"),
                v("")
            ])
        );
        assert_eq!(
            parse_array_literal("{{1,2},{3,4}}"),
            Ok(vec![
                Array(vec![v("1"), v("2")]),
                Array(vec![v("3"), v("4")])
            ])
        );
        assert_eq!(parse_array_literal("[0:1]={a,b}"), Ok(vec![v("a"), v("b")]));
        assert_eq!(
            parse_array_literal(" { a b , null ,\\ } "),
            Ok(vec![v("a b"), Null, v(" ")])
        );
        assert_eq!(parse_array_literal("{é,\"ü\"}"), Ok(vec![v("é"), v("ü")]));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "{",
            "}",
            "{a",
            "{a,}",
            "{,a}",
            "{\"a}",
            "{a}x",
            "{a\"b}",
            "{a{b}}",
            "[1:2]",
            "{a\\",
            "{{{{{{{1}}}}}}}",
        ] {
            assert!(parse_array_literal(bad).is_err(), "{bad:?} should fail");
        }
        assert!(
            parse_array_literal("{{{{{{1}}}}}}").is_ok(),
            "6 dimensions are allowed"
        );
    }

    /// Writes an array the way Postgres' `array_out` does.
    fn format(elems: &[ArrayElement]) -> String {
        let mut s = String::from("{");
        for (i, e) in elems.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            match e {
                Null => s.push_str("NULL"),
                Array(inner) => s.push_str(&format(inner)),
                Value(x) => {
                    let quote = x.is_empty()
                        || x.eq_ignore_ascii_case("NULL")
                        || x.bytes().any(|c| b"{}\",\\".contains(&c) || is_space(c));
                    if quote {
                        s.push('"');
                        for c in x.chars() {
                            if c == '"' || c == '\\' {
                                s.push('\\');
                            }
                            s.push(c);
                        }
                        s.push('"');
                    } else {
                        s.push_str(x);
                    }
                }
            }
        }
        s.push('}');
        s
    }

    fn element() -> impl Strategy<Value = ArrayElement> {
        let leaf = prop_oneof![
            1 => Just(Null),
            6 => any::<String>().prop_map(Value),
            3 => "[a-zA-Z0-9 ,{}\"\\\\]{0,6}".prop_map(Value),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            proptest::collection::vec(inner, 0..5).prop_map(Array)
        })
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(elems in proptest::collection::vec(element(), 0..6)) {
            let text = format(&elems);
            prop_assert_eq!(parse_array_literal(&text), Ok(elems), "{}", text);
        }

        #[test]
        fn never_panics(s in "[{}\",\\\\a N\\[\\]:=0-9]{0,40}") {
            let _ = parse_array_literal(&s);
        }
    }
}
