//! The metric tag values (`tagOverrides[].value`) the mesh evaluates: the part of CEL that
//! Istio's examples use for bounded labels. Validation warns about any other expression,
//! pilot drops its override, and the proxy evaluates exactly these.
//!
//! ```text
//! value := STRING | "request.host" | "request.method" | "request.headers[" STRING "]"
//! STRING := "'" chars "'" | '"' chars '"'        (no escapes)
//! ```

/// A tag value the mesh can compute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TagValue {
    /// A string literal.
    Literal(String),
    /// The request's Host (its authority, as sent).
    RequestHost,
    /// The request's method.
    RequestMethod,
    /// A request header, by its lowercase name.
    RequestHeader(String),
}

/// Why an expression is not one the mesh evaluates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagValueError {
    #[error(
        "only a string literal ('value'), request.host, request.method and request.headers['name'] are evaluated"
    )]
    Unsupported,
    #[error("{0:?} is not a valid header name")]
    HeaderName(String),
}

impl TagValue {
    pub fn parse(expr: &str) -> Result<Self, TagValueError> {
        let e = expr.trim();
        match e {
            "request.host" => return Ok(Self::RequestHost),
            "request.method" => return Ok(Self::RequestMethod),
            _ => {}
        }
        if let Some(s) = string_literal(e) {
            return Ok(Self::Literal(s.to_owned()));
        }
        let inner = e
            .strip_prefix("request.headers[")
            .and_then(|r| r.strip_suffix(']'))
            .ok_or(TagValueError::Unsupported)?;
        let name = string_literal(inner.trim()).ok_or(TagValueError::Unsupported)?;
        let lower = name.to_ascii_lowercase();
        if http_header_name(&lower) {
            Ok(Self::RequestHeader(lower))
        } else {
            Err(TagValueError::HeaderName(name.to_owned()))
        }
    }
}

/// The contents of `'...'` or `"..."` without escapes or the other quote's kind inside.
fn string_literal(s: &str) -> Option<&str> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = s.get(1..s.len().checked_sub(1)?)?;
    (s.len() >= 2 && s.ends_with(quote) && !inner.contains([quote, '\\'])).then_some(inner)
}

/// An HTTP token (RFC 9110), as header names are.
fn http_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `name` can be a Prometheus label: `[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-prefixed
/// (reserved for Prometheus).
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_evaluated_forms() {
        assert_eq!(
            TagValue::parse("'books'"),
            Ok(TagValue::Literal("books".into()))
        );
        assert_eq!(
            TagValue::parse("\"\""),
            Ok(TagValue::Literal(String::new()))
        );
        assert_eq!(TagValue::parse(" request.host "), Ok(TagValue::RequestHost));
        assert_eq!(
            TagValue::parse("request.method"),
            Ok(TagValue::RequestMethod)
        );
        assert_eq!(
            TagValue::parse("request.headers['X-Tenant']"),
            Ok(TagValue::RequestHeader("x-tenant".into()))
        );
        assert_eq!(
            TagValue::parse("request.headers[\"x-b\"]"),
            Ok(TagValue::RequestHeader("x-b".into()))
        );
    }

    #[test]
    fn refuses_everything_else() {
        for e in [
            "",
            "'",
            "'a\"",
            "'a'b'",
            "'a\\'",
            "books",
            "string(destination.port)",
            "request.path",
            "request.headers[x]",
            "request.headers['x']['y']",
            "upstream_peer.labels['app'].value",
        ] {
            assert!(TagValue::parse(e).is_err(), "{e:?}");
        }
        assert_eq!(
            TagValue::parse("request.headers['a b']"),
            Err(TagValueError::HeaderName("a b".into()))
        );
    }

    #[test]
    fn label_names() {
        assert!(is_label_name("team"));
        assert!(is_label_name("_x1"));
        assert!(!is_label_name(""));
        assert!(!is_label_name("1x"));
        assert!(!is_label_name("a-b"));
        assert!(!is_label_name("__name__"));
    }
}
