//! Istio's string forms: exact, `prefix*`, `*suffix` and `*` (present with any value), plus the
//! path templates `{*}` (one segment) and `{**}` (one or more segments).

use mesh_api::security::path_template;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Present,
}

impl Pattern {
    /// The same precedence as Istio's matcher: a lone `*` is presence, a leading `*` a suffix,
    /// a trailing `*` a prefix; anything else is literal.
    pub(super) fn parse(s: &str) -> Pattern {
        if s == "*" {
            Pattern::Present
        } else if let Some(rest) = s.strip_prefix('*') {
            Pattern::Suffix(rest.to_string())
        } else if let Some(rest) = s.strip_suffix('*') {
            Pattern::Prefix(rest.to_string())
        } else {
            Pattern::Exact(s.to_string())
        }
    }

    pub(super) fn matches(&self, value: Option<&str>) -> bool {
        let Some(v) = value else { return false };
        match self {
            Pattern::Exact(e) => v == e,
            Pattern::Prefix(p) => v.starts_with(p.as_str()),
            Pattern::Suffix(s) => v.ends_with(s.as_str()),
            Pattern::Present => true,
        }
    }

    /// ASCII case-insensitive, for hosts (DNS names are case-insensitive).
    pub(super) fn matches_ignore_case(&self, value: Option<&str>) -> bool {
        let Some(v) = value else { return false };
        let v = v.as_bytes();
        match self {
            Pattern::Exact(e) => v.eq_ignore_ascii_case(e.as_bytes()),
            Pattern::Prefix(p) => {
                v.len() >= p.len() && v[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            Pattern::Suffix(s) => {
                v.len() >= s.len() && v[v.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
            Pattern::Present => true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PathPattern {
    Plain(Pattern),
    Template(Vec<Segment>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Segment {
    Literal(String),
    One,
    OneOrMore,
}

impl PathPattern {
    /// The template grammar is validation's ([`path_template::check`]), so a path that
    /// validates always compiles.
    pub(super) fn parse(s: &str) -> Result<PathPattern, String> {
        if !path_template::is_template(s) {
            return Ok(PathPattern::Plain(Pattern::parse(s)));
        }
        path_template::check(s)?;
        let segments = s
            .split('/')
            .map(|seg| match seg {
                "{*}" => Segment::One,
                "{**}" => Segment::OneOrMore,
                _ => Segment::Literal(seg.to_string()),
            })
            .collect();
        Ok(PathPattern::Template(segments))
    }

    pub(super) fn matches(&self, path: Option<&str>) -> bool {
        match self {
            PathPattern::Plain(p) => p.matches(path),
            PathPattern::Template(t) => path.is_some_and(|p| {
                let parts: Vec<&str> = p.split('/').collect();
                template_matches(t, &parts)
            }),
        }
    }
}

/// Backtracking over segments; templates are short, so the cost is bounded in practice.
fn template_matches(t: &[Segment], parts: &[&str]) -> bool {
    match t.split_first() {
        None => parts.is_empty(),
        Some((Segment::Literal(l), rest)) => {
            parts.first() == Some(&l.as_str()) && template_matches(rest, &parts[1..])
        }
        Some((Segment::One, rest)) => {
            parts.first().is_some_and(|p| !p.is_empty()) && template_matches(rest, &parts[1..])
        }
        Some((Segment::OneOrMore, rest)) => (1..=parts.len())
            .take_while(|&n| !parts[n - 1].is_empty())
            .any(|n| template_matches(rest, &parts[n..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, v: &str) -> bool {
        Pattern::parse(p).matches(Some(v))
    }

    #[test]
    fn forms() {
        assert!(m("abc", "abc") && !m("abc", "abcd") && !m("abc", "ABC"));
        assert!(m("abc*", "abcd") && m("abc*", "abc") && !m("abc*", "xabc"));
        assert!(m("*abc", "xabc") && !m("*abc", "abcx"));
        assert!(m("*", "") && m("*", "anything"));
        assert!(!Pattern::parse("*").matches(None));
        assert!(!Pattern::parse("abc*").matches(None));
    }

    #[test]
    fn ignore_case() {
        let p = Pattern::parse("*.Example.COM");
        assert!(p.matches_ignore_case(Some("www.example.com")));
        assert!(!p.matches(Some("www.example.com")));
        assert!(Pattern::parse("API.*").matches_ignore_case(Some("api.example")));
        assert!(Pattern::parse("Exact.com").matches_ignore_case(Some("EXACT.COM")));
        assert!(!Pattern::parse("exact.com").matches_ignore_case(Some("exact.com:80")));
    }

    #[test]
    fn templates() {
        let t = |p: &str, v: &str| PathPattern::parse(p).unwrap().matches(Some(v));
        assert!(t("/foo/{*}", "/foo/bar"));
        assert!(!t("/foo/{*}", "/foo/bar/baz"));
        assert!(!t("/foo/{*}", "/foo/"));
        assert!(t("/foo/{*}/baz", "/foo/x/baz"));
        assert!(t("/foo/{**}", "/foo/a/b/c"));
        assert!(!t("/foo/{**}", "/foo"));
        assert!(t("/{**}/path/template", "/a/b/path/template"));
        assert!(!t("/{**}/path/template", "/path/template"));
        assert!(PathPattern::parse("/foo/x{*}").is_err());
        assert!(t("/plain*", "/plain/more"));
    }
}
