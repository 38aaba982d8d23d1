//! Where a request carries its JWT: `fromHeaders` (with a prefix such as `Bearer `),
//! `fromParams` (query parameters) and `fromCookies`. A rule that names none uses Istio's
//! defaults: `Authorization: Bearer <token>`, then the `access_token` query parameter
//! (RFC 6750 §2.1 and §2.3).

use http::{HeaderMap, HeaderName, header};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

impl Location {
    /// Istio's locations for a rule without `fromHeaders`, `fromParams` and `fromCookies`.
    pub fn defaults() -> Vec<Location> {
        vec![
            Location::Header {
                name: header::AUTHORIZATION,
                prefix: "Bearer ".into(),
            },
            Location::Param("access_token".into()),
        ]
    }

    /// The token at this location, if the request carries one. A header whose value lacks
    /// the prefix carries none (e.g. `Authorization: Basic ...`); the prefix is compared
    /// ignoring ASCII case, as HTTP auth schemes are.
    pub fn find(&self, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        match self {
            Location::Header { name, prefix } => headers.get_all(name).iter().find_map(|v| {
                let v = v.to_str().ok()?;
                let head = v.get(..prefix.len())?;
                head.eq_ignore_ascii_case(prefix)
                    .then(|| v[prefix.len()..].trim().to_owned())
                    .filter(|t| !t.is_empty())
            }),
            Location::Param(name) => query?.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (percent_decode(k)? == *name)
                    .then(|| percent_decode(v))
                    .flatten()
                    .filter(|t| !t.is_empty())
            }),
            Location::Cookie(name) => headers.get_all(header::COOKIE).iter().find_map(|v| {
                v.to_str().ok()?.split(';').find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == name)
                        .then(|| v.trim_matches('"').to_owned())
                        .filter(|t| !t.is_empty())
                })
            }),
        }
    }

    /// `forwardOriginalToken: false`: the header that carried the token is removed before the
    /// request goes on. As in Envoy, a token in a query parameter or a cookie stays (the
    /// request's URI and cookies are the application's).
    pub fn remove(&self, headers: &mut HeaderMap) {
        if let Location::Header { name, .. } = self {
            headers.remove(name);
        }
    }
}

/// `%XX` and `+` decoding of one query component; `None` when it is not valid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
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
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_headers::header_map as headers;

    #[test]
    fn default_locations_are_bearer_then_access_token() {
        let [bearer, param] = Location::defaults().try_into().unwrap();
        let h = headers(&[("authorization", "Bearer abc.def.ghi")]);
        assert_eq!(bearer.find(&h, None).as_deref(), Some("abc.def.ghi"));
        let lower = headers(&[("authorization", "bearer x.y.z")]);
        assert_eq!(bearer.find(&lower, None).as_deref(), Some("x.y.z"));
        let basic = headers(&[("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(bearer.find(&basic, None), None);
        let empty = headers(&[("authorization", "Bearer ")]);
        assert_eq!(bearer.find(&empty, None), None);
        assert_eq!(
            param
                .find(&HeaderMap::new(), Some("a=1&access_token=t.o.k"))
                .as_deref(),
            Some("t.o.k")
        );
        assert_eq!(param.find(&HeaderMap::new(), Some("access_tokenx=1")), None);
        assert_eq!(param.find(&HeaderMap::new(), None), None);
    }

    #[test]
    fn custom_header_with_and_without_prefix() {
        let with = Location::Header {
            name: HeaderName::from_static("x-jwt-assertion"),
            prefix: "Token ".into(),
        };
        let without = Location::Header {
            name: HeaderName::from_static("x-jwt-assertion"),
            prefix: String::new(),
        };
        let h = headers(&[("x-jwt-assertion", "Token a.b.c")]);
        assert_eq!(with.find(&h, None).as_deref(), Some("a.b.c"));
        assert_eq!(without.find(&h, None).as_deref(), Some("Token a.b.c"));
        let mut h = headers(&[("x-jwt-assertion", "a.b.c"), ("other", "1")]);
        assert_eq!(with.find(&h, None), None, "prefix missing");
        without.remove(&mut h);
        assert!(!h.contains_key("x-jwt-assertion") && h.contains_key("other"));
    }

    #[test]
    fn params_are_percent_decoded_and_cookies_split() {
        let p = Location::Param("my_token".into());
        assert_eq!(
            p.find(&HeaderMap::new(), Some("x=1&my%5Ftoken=a%2Eb.c"))
                .as_deref(),
            Some("a.b.c")
        );
        let c = Location::Cookie("session".into());
        let h = headers(&[("cookie", "a=1; session=x.y.z; b=2")]);
        assert_eq!(c.find(&h, None).as_deref(), Some("x.y.z"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "session=\"q.r.s\"")]);
        assert_eq!(c.find(&h, None).as_deref(), Some("q.r.s"));
        assert_eq!(c.find(&headers(&[("cookie", "sessionx=1")]), None), None);
        let mut h = headers(&[("cookie", "session=x.y.z")]);
        c.remove(&mut h);
        assert!(
            h.contains_key("cookie"),
            "cookies are left to the application"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%ff"), None);
    }
}
