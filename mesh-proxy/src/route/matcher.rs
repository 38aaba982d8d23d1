//! Compiled request matchers: path, headers, query parameters, method.

use http::HeaderMap;
use mesh_proto::config::v1 as pb;

use crate::config::FieldError;
use regex::Regex;

/// A string condition, compiled once per config (regexes are anchored: a full match, as Envoy).
#[derive(Debug, Clone)]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl StringMatcher {
    pub fn compile(m: &pb::StringMatch) -> Result<Option<Self>, String> {
        use pb::string_match::Kind;
        Ok(match &m.kind {
            None => None,
            Some(Kind::Exact(s)) => Some(Self::Exact(s.clone())),
            Some(Kind::Prefix(s)) => Some(Self::Prefix(s.clone())),
            Some(Kind::Regex(r)) => Some(Self::Regex(
                Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("invalid regex: {e}"))?,
            )),
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Regex(r) => r.is_match(value),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    name: http::HeaderName,
    value: Option<StringMatcher>,
    invert: bool,
}

impl HeaderMatcher {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter().peekable();
        let hit = match (&self.value, values.peek().is_some()) {
            (_, false) => false,
            (None, true) => true,
            (Some(m), true) => {
                // Several values of one header are matched as Envoy does: joined by ",".
                let joined = values
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(",");
                m.matches(&joined)
            }
        };
        hit != self.invert
    }
}

#[derive(Debug, Clone)]
pub struct QueryMatcher {
    name: String,
    value: Option<StringMatcher>,
}

impl QueryMatcher {
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else { return false };
        let Some(value) = query_param(query, &self.name) else {
            return false;
        };
        self.value.as_ref().is_none_or(|m| m.matches(&value))
    }
}

/// First value of a query parameter, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parts of a request a route may look at.
pub struct RequestView<'a> {
    pub method: &'a http::Method,
    /// `:authority` (HTTP/1 `Host`), as the client sent it.
    pub authority: &'a str,
    /// `https` when the proxy terminated the client's TLS, else `http`.
    pub scheme: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

#[derive(Debug, Clone, Default)]
pub struct RouteMatcher {
    pub path: Option<StringMatcher>,
    /// An exact or prefix path compared ignoring ASCII case (Envoy's `case_sensitive: false`).
    path_ignore_case: bool,
    headers: Vec<HeaderMatcher>,
    query: Vec<QueryMatcher>,
    method: Option<StringMatcher>,
    authority: Option<StringMatcher>,
    scheme: Option<StringMatcher>,
}

impl RouteMatcher {
    pub fn compile(m: &pb::RouteMatch) -> Result<Self, FieldError> {
        let opt = |sm: &Option<pb::StringMatch>, field: &str| {
            sm.as_ref()
                .map(StringMatcher::compile)
                .transpose()
                .map(Option::flatten)
                .map_err(|e| FieldError::new(field, e))
        };
        let path = opt(&m.path, "path")?;
        let method = opt(&m.method, "method")?;
        let authority = opt(&m.authority, "authority")?;
        let scheme = opt(&m.scheme, "scheme")?;
        let mut headers = Vec::with_capacity(m.headers.len());
        for (i, h) in m.headers.iter().enumerate() {
            let field = format!("headers[{i}]");
            let name = http::HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
                .map_err(|_| {
                    FieldError::new(
                        format!("{field}.name"),
                        format!("invalid header name {:?}", h.name),
                    )
                })?;
            let value = opt(&h.value, &format!("{field}.value"))?;
            headers.push(HeaderMatcher {
                name,
                value,
                invert: h.invert,
            });
        }
        let mut query = Vec::with_capacity(m.query_parameters.len());
        for (i, q) in m.query_parameters.iter().enumerate() {
            if q.name.is_empty() {
                return Err(FieldError::new(
                    format!("queryParameters[{i}].name"),
                    "must not be empty",
                ));
            }
            let value = opt(&q.value, &format!("queryParameters[{i}].value"))?;
            query.push(QueryMatcher {
                name: q.name.clone(),
                value,
            });
        }
        Ok(Self {
            path,
            path_ignore_case: m.path_ignore_case,
            headers,
            query,
            method,
            authority,
            scheme,
        })
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path_matches(req.path)
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(req.method.as_str()))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(req.authority))
            && self.scheme.as_ref().is_none_or(|m| m.matches(req.scheme))
            && self.headers.iter().all(|h| h.matches(req.headers))
            && self.query.iter().all(|q| q.matches(req.query))
    }
}

impl RouteMatcher {
    fn path_matches(&self, path: &str) -> bool {
        match (&self.path, self.path_ignore_case) {
            (None, _) => true,
            (Some(StringMatcher::Exact(e)), true) => path.eq_ignore_ascii_case(e),
            (Some(StringMatcher::Prefix(p)), true) => path
                .as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            // Envoy ignores `case_sensitive` for a regex.
            (Some(m), _) => m.matches(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::string_match::Kind;

    fn sm(kind: Kind) -> Option<pb::StringMatch> {
        Some(pb::StringMatch { kind: Some(kind) })
    }

    fn view<'a>(
        method: &'a http::Method,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            method,
            authority: "svc",
            scheme: "http",
            path,
            query,
            headers,
        }
    }

    #[test]
    fn path_exact_prefix_regex() {
        let h = HeaderMap::new();
        let get = http::Method::GET;
        let exact = RouteMatcher::compile(&pb::RouteMatch {
            path: sm(Kind::Exact("/a".into())),
            ..Default::default()
        })
        .unwrap();
        assert!(exact.matches(&view(&get, "/a", None, &h)));
        assert!(!exact.matches(&view(&get, "/ab", None, &h)));
        let prefix = RouteMatcher::compile(&pb::RouteMatch {
            path: sm(Kind::Prefix("/a".into())),
            ..Default::default()
        })
        .unwrap();
        assert!(prefix.matches(&view(&get, "/ab", None, &h)));
        assert!(!prefix.matches(&view(&get, "/b", None, &h)));
        let regex = RouteMatcher::compile(&pb::RouteMatch {
            path: sm(Kind::Regex("/v[0-9]+/.*".into())),
            ..Default::default()
        })
        .unwrap();
        assert!(regex.matches(&view(&get, "/v2/x", None, &h)));
        // Anchored: a partial match is not a match.
        assert!(!regex.matches(&view(&get, "/api/v2/x", None, &h)));
    }

    #[test]
    fn bad_regex_names_the_field() {
        let err = RouteMatcher::compile(&pb::RouteMatch {
            headers: vec![pb::HeaderMatch {
                name: "x".into(),
                value: sm(Kind::Regex("(".into())),
                invert: false,
            }],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.field, "headers[0].value");
        assert!(err.reason.contains("invalid regex"), "{}", err.reason);
    }

    #[test]
    fn headers_exact_prefix_regex_present_absent() {
        let get = http::Method::GET;
        let mut h = HeaderMap::new();
        h.insert("end-user", "jason".parse().unwrap());
        let m = |name: &str, value: Option<Kind>, invert: bool| {
            RouteMatcher::compile(&pb::RouteMatch {
                headers: vec![pb::HeaderMatch {
                    name: name.into(),
                    value: value.map(|k| pb::StringMatch { kind: Some(k) }),
                    invert,
                }],
                ..Default::default()
            })
            .unwrap()
            .matches(&view(&get, "/", None, &h))
        };
        assert!(m("end-user", Some(Kind::Exact("jason".into())), false));
        assert!(!m("end-user", Some(Kind::Exact("json".into())), false));
        assert!(m("End-User", Some(Kind::Prefix("ja".into())), false));
        assert!(m("end-user", Some(Kind::Regex("j.*n".into())), false));
        assert!(m("end-user", None, false), "present");
        assert!(!m("x-other", None, false), "present but missing");
        assert!(m("x-other", None, true), "absent");
        assert!(!m("end-user", None, true), "absent but there");
        assert!(
            m("end-user", Some(Kind::Exact("bob".into())), true),
            "not equal"
        );
    }

    #[test]
    fn method_and_query_parameters() {
        let h = HeaderMap::new();
        let post = http::Method::POST;
        let get = http::Method::GET;
        let m = RouteMatcher::compile(&pb::RouteMatch {
            method: sm(Kind::Exact("POST".into())),
            query_parameters: vec![
                pb::QueryParameterMatch {
                    name: "user".into(),
                    value: sm(Kind::Exact("a b".into())),
                },
                pb::QueryParameterMatch {
                    name: "debug".into(),
                    value: None,
                },
            ],
            ..Default::default()
        })
        .unwrap();
        assert!(m.matches(&view(&post, "/", Some("debug&user=a%20b"), &h)));
        assert!(!m.matches(&view(&get, "/", Some("debug&user=a%20b"), &h)));
        assert!(
            !m.matches(&view(&post, "/", Some("user=a+b"), &h)),
            "debug missing"
        );
        assert!(!m.matches(&view(&post, "/", None, &h)));
    }

    #[test]
    fn exact_and_prefix_paths_ignoring_case() {
        let h = HeaderMap::new();
        let get = http::Method::GET;
        let m = |kind: Kind, path: &str| {
            RouteMatcher::compile(&pb::RouteMatch {
                path: sm(kind),
                path_ignore_case: true,
                ..Default::default()
            })
            .unwrap()
            .matches(&view(&get, path, None, &h))
        };
        assert!(m(Kind::Exact("/Login".into()), "/LOGIN"));
        assert!(!m(Kind::Exact("/Login".into()), "/LOGIN/x"));
        assert!(m(Kind::Prefix("/Api/".into()), "/api/users"));
        assert!(!m(Kind::Prefix("/Api/".into()), "/ap"));
        assert!(!m(Kind::Regex("/api".into()), "/API"), "regex: case kept");
    }

    #[test]
    fn authority_as_sent_and_scheme_of_the_connection() {
        let h = HeaderMap::new();
        let get = http::Method::GET;
        let m = RouteMatcher::compile(&pb::RouteMatch {
            authority: sm(Kind::Regex("shop(:[0-9]+)?".into())),
            scheme: sm(Kind::Exact("https".into())),
            ..Default::default()
        })
        .unwrap();
        let req = |authority, scheme| RequestView {
            authority,
            scheme,
            ..view(&get, "/", None, &h)
        };
        assert!(m.matches(&req("shop:8443", "https")));
        assert!(m.matches(&req("shop", "https")));
        assert!(!m.matches(&req("shop", "http")), "plaintext");
        assert!(
            !m.matches(&req("shop.example:8443", "https")),
            "another host"
        );
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(query_param("a=%zz&b=1", "a").unwrap(), "%zz");
        assert_eq!(query_param("a=100%", "a").unwrap(), "100%");
        assert_eq!(query_param("a=%41", "a").unwrap(), "A");
    }
}
