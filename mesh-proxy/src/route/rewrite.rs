//! Upstream path rewrites: Envoy's `prefix_rewrite` and `regex_rewrite`.

use std::borrow::Cow;

use mesh_proto::config::v1 as pb;
use regex::Regex;

use super::matcher::{RouteMatcher, StringMatcher};
use crate::config::FieldError;

/// How a route rewrites the path it forwards (the query is never touched).
#[derive(Debug)]
pub enum PathRewrite {
    /// The matched part of the path replaced: the prefix of a `prefix` match, the whole path
    /// of an `exact` or `regex` match (as Envoy's `prefix_rewrite`).
    Prefix(String),
    /// Every match of the pattern replaced (Envoy's `regex_rewrite`).
    Regex(RegexRewrite),
}

impl PathRewrite {
    /// The rewrite of a route action; `None` when the path is forwarded as it is.
    pub fn compile(a: &pb::RouteAction) -> Result<Option<Self>, FieldError> {
        if let Some(r) = &a.regex_rewrite {
            return RegexRewrite::compile(r)
                .map(|r| Some(Self::Regex(r)))
                .map_err(|e| e.within("regexRewrite"));
        }
        Ok((!a.prefix_rewrite.is_empty()).then(|| Self::Prefix(a.prefix_rewrite.clone())))
    }

    /// The path sent upstream for a request to `path` (without its query) that `matcher`
    /// matched.
    pub fn apply<'p>(&self, matcher: &RouteMatcher, path: &'p str) -> Cow<'p, str> {
        match self {
            Self::Prefix(rewrite) => Cow::Owned(rewrite_path(matcher, rewrite, path)),
            Self::Regex(r) => r.apply(path),
        }
    }
}

/// A compiled `regex_rewrite`.
#[derive(Debug)]
pub struct RegexRewrite {
    pattern: Regex,
    /// The substitution in the regex crate's syntax; `None` when RE2 would refuse it, which
    /// leaves paths unchanged.
    replacement: Option<String>,
}

impl RegexRewrite {
    pub fn compile(r: &pb::RegexRewrite) -> Result<Self, FieldError> {
        if r.pattern.is_empty() {
            return Err(FieldError::new("pattern", "must not be empty"));
        }
        let pattern = Regex::new(&r.pattern)
            .map_err(|e| FieldError::new("pattern", format!("invalid regex: {e}")))?;
        let replacement = re2_substitution(&r.substitution)
            .filter(|(_, max_group)| *max_group < pattern.captures_len());
        Ok(Self {
            pattern,
            replacement: replacement.map(|(s, _)| s),
        })
    }

    /// Every non-overlapping match in `path` replaced, as RE2's `GlobalReplace`.
    pub fn apply<'p>(&self, path: &'p str) -> Cow<'p, str> {
        match &self.replacement {
            Some(replacement) => self.pattern.replace_all(path, replacement.as_str()),
            None => Cow::Borrowed(path),
        }
    }
}

/// An RE2 rewrite string (`\1`, `\0`, `\\`) in the regex crate's syntax (`${1}`, `$$` for a
/// dollar), with the highest group it names; `None` for an escape RE2 does not accept.
fn re2_substitution(s: &str) -> Option<(String, usize)> {
    let mut out = String::with_capacity(s.len() + 8);
    let mut max_group = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                d @ '0'..='9' => {
                    let n = d as usize - '0' as usize;
                    max_group = max_group.max(n);
                    out.push_str(&format!("${{{n}}}"));
                }
                _ => return None,
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    Some((out, max_group))
}

/// The upstream path after a prefix rewrite: the matched prefix (or the whole exact or regex
/// matched path) replaced.
pub fn rewrite_path(matcher: &RouteMatcher, rewrite: &str, path: &str) -> String {
    let replaced = match &matcher.path {
        Some(StringMatcher::Prefix(p)) => p.len(),
        Some(StringMatcher::Exact(_) | StringMatcher::Regex(_)) => path.len(),
        None => 0,
    };
    let rest = &path[replaced.min(path.len())..];
    if rewrite.ends_with('/') && rest.starts_with('/') {
        format!("{rewrite}{}", &rest[1..])
    } else {
        format!("{rewrite}{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(pattern: &str, substitution: &str) -> RegexRewrite {
        RegexRewrite::compile(&pb::RegexRewrite {
            pattern: pattern.into(),
            substitution: substitution.into(),
        })
        .unwrap()
    }

    #[test]
    fn groups_in_re2_syntax() {
        let r = regex("^/service/([^/]+)(/.*)$", "\\2/instance/\\1");
        assert_eq!(r.apply("/service/foo/v1/api"), "/v1/api/instance/foo");
        assert_eq!(r.apply("/other"), "/other", "no match: unchanged");
    }

    #[test]
    fn every_match_is_replaced_and_dollars_are_literal() {
        assert_eq!(regex("o", "0").apply("/foo/boo"), "/f00/b00");
        assert_eq!(regex("/a", "/$1\\\\").apply("/a/a"), "/$1\\/$1\\");
        assert_eq!(regex("^/v1", "\\0\\0").apply("/v1/x"), "/v1/v1/x");
    }

    #[test]
    fn a_substitution_re2_refuses_leaves_the_path() {
        assert_eq!(regex("^/(a)", "/\\2").apply("/a/b"), "/a/b", "no group 2");
        assert_eq!(regex("^/(a)", "/\\q").apply("/a/b"), "/a/b", "bad escape");
        assert_eq!(regex("^/(a)", "/x\\").apply("/a/b"), "/a/b", "trailing \\");
    }

    #[test]
    fn bad_pattern_names_the_field() {
        let e = RegexRewrite::compile(&pb::RegexRewrite {
            pattern: "(".into(),
            substitution: "/".into(),
        })
        .unwrap_err();
        assert_eq!(e.field, "pattern");
    }
}
