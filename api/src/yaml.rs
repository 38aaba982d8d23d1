//! YAML documents to JSON values, remembering the line of every field.
//!
//! The typed decode and the validators work on `serde_json::Value`; the line
//! map lets any error found there point back at the source line.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, StructureStyle};

use crate::path::FieldPath;

/// Lines (1-based) of the fields of one document, keyed by field path.
pub type LineMap = BTreeMap<String, usize>;

/// One document of a YAML stream.
#[derive(Debug, Clone)]
pub struct Document {
    /// Line of the document's first node (1-based).
    pub line: usize,
    pub value: Value,
    pub lines: LineMap,
    /// Field paths of keys given twice in one mapping (Kubernetes rejects them).
    pub duplicate_keys: Vec<String>,
}

/// A YAML syntax error with its line.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

enum Frame {
    Seq(Vec<Value>, FieldPath),
    /// The flag marks an implicit single-pair mapping inside a flow sequence.
    Map(Map<String, Value>, FieldPath, Option<String>, bool),
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    pending: Vec<usize>,
    lines: LineMap,
    duplicates: Vec<String>,
    root: Option<Value>,
    first_line: Option<usize>,
}

impl Builder {
    fn new() -> Self {
        Self {
            stack: Vec::new(),
            anchors: HashMap::new(),
            pending: Vec::new(),
            lines: LineMap::new(),
            duplicates: Vec::new(),
            root: None,
            first_line: None,
        }
    }

    /// Path of the node about to be added, recording its line.
    fn child_path(&mut self, line: usize) -> FieldPath {
        let path = match self.stack.last() {
            None => FieldPath::root(),
            Some(Frame::Seq(items, p)) => p.index(items.len()),
            Some(Frame::Map(_, p, Some(k), _)) => p.key(k),
            // A key is being read: its line is the field's line.
            Some(Frame::Map(_, p, None, _)) => p.clone(),
        };
        if let Some(Frame::Seq(..)) = self.stack.last() {
            self.lines.entry(path.as_str().to_string()).or_insert(line);
        }
        path
    }

    fn push_value(&mut self, v: Value, anchor: usize, line: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, v.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(v),
            Some(Frame::Seq(items, _)) => items.push(v),
            Some(Frame::Map(map, path, key, _)) => match key.take() {
                None => {
                    let k = match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    let p = path.key(&k);
                    if map.contains_key(&k) {
                        self.duplicates.push(p.as_str().to_string());
                    }
                    self.lines.insert(p.as_str().to_string(), line);
                    *key = Some(k);
                }
                Some(k) => {
                    map.insert(k, v);
                }
            },
        }
    }
}

/// Resolves a plain scalar the way Kubernetes' YAML reader does for the
/// common cases (null, booleans, integers, floats); everything else is a string.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Ok(u) = s.trim_start_matches('+').parse::<u64>() {
            return Value::Number(u.into());
        }
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(i.into());
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Number(i.into());
    }
    let looks_float = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
        && digits
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.');
    if looks_float
        && let Ok(f) = s.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(s.to_string())
}

/// Splits a YAML stream into documents. Empty documents (a stray `---`, a file
/// of comments) are skipped. A syntax error ends the stream.
pub fn parse_documents(text: &str) -> (Vec<Document>, Option<SyntaxError>) {
    let mut docs = Vec::new();
    let mut b = Builder::new();
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(x) => x,
            Err(e) => {
                let message = e.info().to_string();
                return (
                    docs,
                    Some(SyntaxError {
                        line: e.marker().line(),
                        message,
                    }),
                );
            }
        };
        let line = span.start.line();
        match event {
            Event::DocumentStart(..) => b = Builder::new(),
            Event::DocumentEnd => {
                let done = std::mem::replace(&mut b, Builder::new());
                if let Some(value) = done.root
                    && !value.is_null()
                {
                    docs.push(Document {
                        line: done.first_line.unwrap_or(line),
                        value,
                        lines: done.lines,
                        duplicate_keys: done.duplicates,
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                b.first_line.get_or_insert(line);
                b.child_path(line);
                let explicit_str = tag.as_ref().is_some_and(|t| t.suffix() == "str");
                let v = if style == ScalarStyle::Plain && !explicit_str {
                    resolve_plain(&text)
                } else {
                    Value::String(text.into_owned())
                };
                b.push_value(v, anchor, line);
            }
            Event::SequenceStart(_, anchor, _) => {
                b.first_line.get_or_insert(line);
                let p = b.child_path(line);
                b.stack.push(Frame::Seq(Vec::new(), p));
                // Anchors on collections are recorded when the collection ends.
                b.pending.push(anchor);
            }
            Event::MappingStart(style, anchor, _) => {
                b.first_line.get_or_insert(line);
                let p = b.child_path(line);
                let in_flow_seq =
                    matches!(b.stack.last(), Some(Frame::Seq(..))) && style == StructureStyle::Flow;
                let offset = span
                    .start
                    .byte_offset()
                    .or_else(|| text.char_indices().nth(span.start.index()).map(|(i, _)| i));
                let implicit = in_flow_seq && offset.is_some_and(|o| !text[o..].starts_with('{'));
                b.stack.push(Frame::Map(Map::new(), p, None, implicit));
                b.pending.push(anchor);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let anchor = b.pending.pop().unwrap_or(0);
                let v = match b.stack.pop() {
                    Some(Frame::Seq(items, _)) => Value::Array(items),
                    // Go's YAML reads `[1.2.3.4, 2001:db8::]` as two strings, where YAML 1.2
                    // sees `2001:db8:` as a key; Istio's files rely on the Go reading.
                    Some(Frame::Map(map, _, _, true))
                        if map.len() == 1 && map.values().all(Value::is_null) =>
                    {
                        Value::String(format!(
                            "{}:",
                            map.keys().next().map(String::as_str).unwrap_or_default()
                        ))
                    }
                    Some(Frame::Map(map, _, _, _)) => Value::Object(map),
                    None => Value::Null,
                };
                b.push_value(v, anchor, line);
            }
            Event::Alias(id) => {
                let v = b.anchors.get(&id).cloned().unwrap_or(Value::Null);
                b.child_path(line);
                b.push_value(v, 0, line);
            }
            _ => {}
        }
    }
    (docs, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lines_and_scalars() {
        let text = "# c\napiVersion: v1\nspec:\n  http:\n  - route:\n    - weight: 80\n      q: \"80\"\n---\n---\nkind: X\nn: ~\nf: 1.5\nb: true\nip: 1.2.3.4\n";
        let (docs, err) = parse_documents(text);
        assert!(err.is_none());
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 2);
        assert_eq!(docs[0].lines["spec.http[0].route[0].weight"], 6);
        assert_eq!(docs[0].lines["spec.http[0]"], 5);
        assert_eq!(docs[0].value["spec"]["http"][0]["route"][0]["weight"], 80);
        assert_eq!(docs[0].value["spec"]["http"][0]["route"][0]["q"], "80");
        assert_eq!(docs[1].line, 10);
        assert!(docs[1].value["n"].is_null());
        assert_eq!(docs[1].value["f"], 1.5);
        assert_eq!(docs[1].value["b"], true);
        assert_eq!(docs[1].value["ip"], "1.2.3.4");
    }

    #[test]
    fn anchors_and_syntax_errors() {
        let (docs, _) = parse_documents("a: &x {k: 1}\nb: *x\nc: [1.2.3.4, 001:db8::, {k: }]\n");
        assert_eq!(docs[0].value["c"][1], "001:db8::");
        assert!(docs[0].value["c"][2]["k"].is_null());
        assert_eq!(docs[0].value["b"]["k"], 1);
        let (docs, _) = parse_documents("a: 1\nb:\n  c: 1\n  c: 2\n");
        assert_eq!(docs[0].duplicate_keys, vec!["b.c".to_string()]);
        assert_eq!(docs[0].lines["b.c"], 4);
        let (_, err) = parse_documents("a: [1, 2\nb: 3\n");
        assert!(err.is_some());
    }
}
