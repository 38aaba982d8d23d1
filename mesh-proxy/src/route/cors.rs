//! Cross-origin resource sharing (VirtualService `corsPolicy`), as Envoy's CORS filter does
//! it: a request from an allowed origin gets the CORS response headers, and a preflight is
//! answered by the proxy. The check is pure; the request path applies what it returns.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderMap, HeaderValue, Method};
use mesh_proto::config::v1 as pb;

use super::matcher::StringMatcher;
use super::table::FieldError;

const TRUE: HeaderValue = HeaderValue::from_static("true");

/// One route's compiled policy.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<StringMatcher>,
    allow_methods: Option<ListOrEcho>,
    allow_headers: Option<ListOrEcho>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
    forward_unmatched_preflights: bool,
}

/// A configured list, or `*`: echo what the preflight asked for.
#[derive(Debug, Clone)]
enum ListOrEcho {
    List(HeaderValue),
    Echo,
}

/// What the policy makes of one request.
#[derive(Debug, PartialEq)]
pub enum CorsCheck {
    /// Not a CORS request, or an unmatched preflight that goes upstream: nothing to do.
    Pass,
    /// A preflight the proxy answers: 200 with these headers.
    Preflight(HeaderMap),
    /// A request from an allowed origin: its response gets the CORS headers.
    Allowed(HeaderValue),
}

impl Cors {
    pub fn compile(c: &pb::CorsPolicy) -> Result<Self, FieldError> {
        let mut origins = Vec::with_capacity(c.allow_origins.len());
        for (i, m) in c.allow_origins.iter().enumerate() {
            let field = || format!("allowOrigins[{i}]");
            match StringMatcher::compile(m).map_err(|e| FieldError::new(field(), e))? {
                Some(m) => origins.push(m),
                None => {
                    return Err(FieldError::new(
                        field(),
                        "a match needs exact, prefix or regex",
                    ));
                }
            }
        }
        let value = |field: &'static str, v: &str| -> Result<Option<HeaderValue>, FieldError> {
            if v.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(v)
                .map(Some)
                .map_err(|_| FieldError::new(field, format!("{v:?} is not a header value")))
        };
        let list_or_echo = |field, v: &str| {
            Ok::<_, FieldError>(if v == "*" {
                Some(ListOrEcho::Echo)
            } else {
                value(field, v)?.map(ListOrEcho::List)
            })
        };
        if !c.max_age.is_empty() && c.max_age.parse::<u64>().is_err() {
            return Err(FieldError::new(
                "maxAge",
                format!("{:?} is not a number of seconds", c.max_age),
            ));
        }
        Ok(Self {
            origins,
            allow_methods: list_or_echo("allowMethods", &c.allow_methods)?,
            allow_headers: list_or_echo("allowHeaders", &c.allow_headers)?,
            expose_headers: value("exposeHeaders", &c.expose_headers)?,
            max_age: value("maxAge", &c.max_age)?,
            allow_credentials: c.allow_credentials,
            forward_unmatched_preflights: !c.ignore_unmatched_preflights,
        })
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|m| m.matches("*") || m.matches(origin))
    }

    /// Checks a request: its method and headers as received.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> CorsCheck {
        let Some(origin) = headers.get(ORIGIN).filter(|o| !o.is_empty()) else {
            return CorsCheck::Pass;
        };
        let allowed = origin.to_str().is_ok_and(|o| self.allows(o));
        let requested_method = headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .filter(|m| !m.is_empty());
        let Some(requested_method) = requested_method.filter(|_| method == Method::OPTIONS) else {
            return if allowed {
                CorsCheck::Allowed(origin.clone())
            } else {
                CorsCheck::Pass
            };
        };
        if !allowed && self.forward_unmatched_preflights {
            return CorsCheck::Pass;
        }
        let mut out = HeaderMap::new();
        if allowed {
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.allow_credentials {
            out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        match &self.allow_methods {
            Some(ListOrEcho::List(v)) => {
                out.insert(ACCESS_CONTROL_ALLOW_METHODS, v.clone());
            }
            Some(ListOrEcho::Echo) => {
                out.insert(ACCESS_CONTROL_ALLOW_METHODS, requested_method.clone());
            }
            None => {}
        }
        match &self.allow_headers {
            Some(ListOrEcho::List(v)) => {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            Some(ListOrEcho::Echo) => {
                if let Some(asked) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
                    out.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
                }
            }
            None => {}
        }
        if let Some(age) = &self.max_age {
            out.insert(ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        CorsCheck::Preflight(out)
    }

    /// The headers a response to an allowed origin's request gets.
    pub fn apply(&self, origin: HeaderValue, response: &mut HeaderMap) {
        response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.allow_credentials {
            response.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(expose) = &self.expose_headers {
            response.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(s: &str) -> pb::StringMatch {
        pb::StringMatch {
            kind: Some(pb::string_match::Kind::Exact(s.into())),
        }
    }

    fn policy() -> pb::CorsPolicy {
        pb::CorsPolicy {
            allow_origins: vec![
                exact("https://shop.example.com"),
                pb::StringMatch {
                    kind: Some(pb::string_match::Kind::Regex(
                        r"https://.*\.dev\.example\.com".into(),
                    )),
                },
            ],
            allow_methods: "GET,POST".into(),
            allow_headers: "x-custom,content-type".into(),
            expose_headers: "x-trace".into(),
            max_age: "86400".into(),
            allow_credentials: true,
            ignore_unmatched_preflights: false,
        }
    }

    use crate::test_headers::header_map as headers;

    fn preflight(origin: &'static str) -> HeaderMap {
        headers(&[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-custom"),
        ])
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_is_answered() {
        let cors = Cors::compile(&policy()).unwrap();
        let CorsCheck::Preflight(h) =
            cors.check(&Method::OPTIONS, &preflight("https://shop.example.com"))
        else {
            panic!("answered by the proxy");
        };
        assert_eq!(h["access-control-allow-origin"], "https://shop.example.com");
        assert_eq!(h["access-control-allow-methods"], "GET,POST");
        assert_eq!(h["access-control-allow-headers"], "x-custom,content-type");
        assert_eq!(h["access-control-max-age"], "86400");
        assert_eq!(h["access-control-allow-credentials"], "true");
        // Expose-headers belongs on actual responses only.
        assert!(!h.contains_key("access-control-expose-headers"));
    }

    #[test]
    fn origins_match_by_regex_and_star() {
        let cors = Cors::compile(&policy()).unwrap();
        let get = headers(&[("origin", "https://a.dev.example.com")]);
        assert!(matches!(
            cors.check(&Method::GET, &get),
            CorsCheck::Allowed(_)
        ));
        let evil = headers(&[("origin", "https://a.dev.example.com.evil.io")]);
        assert_eq!(cors.check(&Method::GET, &evil), CorsCheck::Pass);
        let any = Cors::compile(&pb::CorsPolicy {
            allow_origins: vec![exact("*")],
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(
            any.check(&Method::GET, &evil),
            CorsCheck::Allowed(_)
        ));
    }

    #[test]
    fn unmatched_preflights_go_upstream_unless_ignored() {
        let cors = Cors::compile(&policy()).unwrap();
        let other = preflight("https://other.example.org");
        assert_eq!(cors.check(&Method::OPTIONS, &other), CorsCheck::Pass);
        let ignoring = Cors::compile(&pb::CorsPolicy {
            ignore_unmatched_preflights: true,
            ..policy()
        })
        .unwrap();
        let CorsCheck::Preflight(h) = ignoring.check(&Method::OPTIONS, &other) else {
            panic!("answered by the proxy");
        };
        assert!(!h.contains_key("access-control-allow-origin"));
    }

    #[test]
    fn star_echoes_what_the_preflight_asked_for() {
        let cors = Cors::compile(&pb::CorsPolicy {
            allow_methods: "*".into(),
            allow_headers: "*".into(),
            ..policy()
        })
        .unwrap();
        let CorsCheck::Preflight(h) =
            cors.check(&Method::OPTIONS, &preflight("https://shop.example.com"))
        else {
            panic!("answered by the proxy");
        };
        assert_eq!(h["access-control-allow-methods"], "POST");
        assert_eq!(h["access-control-allow-headers"], "x-custom");
    }

    #[test]
    fn requests_without_origin_or_preflight_method_are_not_preflights() {
        let cors = Cors::compile(&policy()).unwrap();
        assert_eq!(cors.check(&Method::GET, &HeaderMap::new()), CorsCheck::Pass);
        // OPTIONS without access-control-request-method is an ordinary request.
        let options = headers(&[("origin", "https://shop.example.com")]);
        assert!(matches!(
            cors.check(&Method::OPTIONS, &options),
            CorsCheck::Allowed(_)
        ));
    }

    #[test]
    fn responses_get_origin_credentials_and_exposed_headers() {
        let cors = Cors::compile(&policy()).unwrap();
        let mut h = HeaderMap::new();
        cors.apply(HeaderValue::from_static("https://shop.example.com"), &mut h);
        assert_eq!(h["access-control-allow-origin"], "https://shop.example.com");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], "x-trace");
    }

    #[test]
    fn bad_values_are_refused_with_their_field() {
        let bad_age = Cors::compile(&pb::CorsPolicy {
            max_age: "1d".into(),
            ..policy()
        });
        assert_eq!(bad_age.unwrap_err().field, "maxAge");
        let bad_regex = Cors::compile(&pb::CorsPolicy {
            allow_origins: vec![pb::StringMatch {
                kind: Some(pb::string_match::Kind::Regex("(".into())),
            }],
            ..policy()
        });
        assert_eq!(bad_regex.unwrap_err().field, "allowOrigins[0]");
    }
}
