//! What a verified token tells the rest of the proxy: the [`RequestAuth`] that authorization
//! evaluates (`requestPrincipals`, `request.auth.*`), and claim values for request headers.

use serde_json::{Map, Value};

use crate::authz::RequestAuth;

/// Claims Istio always treats as space-separated lists (OAuth 2.0 `scope`, and `permission`).
const SPACE_DELIMITED_BY_DEFAULT: [&str; 2] = ["scope", "permission"];

/// The identity of a verified token: principal `<iss>/<sub>`, `aud`, `azp` and its claims.
/// Space-delimited claims (the defaults and the rule's `spaceDelimitedClaims`, dotted for
/// nested ones) become lists of their words, as Envoy normalizes them for Istio, so
/// `request.auth.claims[scope]` matches one scope.
pub fn request_auth(claims: &Map<String, Value>, space_delimited: &[String]) -> RequestAuth {
    let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or_default();
    let audiences = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let mut normalized = claims.clone();
    let paths = SPACE_DELIMITED_BY_DEFAULT
        .iter()
        .map(|s| s.to_string())
        .chain(space_delimited.iter().cloned());
    for path in paths {
        split_words(&mut normalized, &path);
    }
    RequestAuth {
        principal: format!("{}/{}", text("iss"), text("sub")),
        audiences,
        presenter: claims.get("azp").and_then(Value::as_str).map(str::to_owned),
        claims: normalized,
    }
}

/// Replaces the string claim at `dotted` with the list of its space-separated words.
fn split_words(claims: &mut Map<String, Value>, dotted: &str) {
    let mut parts = dotted.split('.').peekable();
    let mut object = claims;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            if let Some(Value::String(s)) = object.get(part) {
                let words = s
                    .split(' ')
                    .filter(|w| !w.is_empty())
                    .map(|w| Value::String(w.into()));
                let list = Value::Array(words.collect());
                object.insert(part.to_owned(), list);
            }
            return;
        }
        match object.get_mut(part) {
            Some(Value::Object(o)) => object = o,
            _ => return,
        }
    }
}

/// A claim as a header value (`outputClaimToHeaders`): strings as they are, numbers and
/// booleans printed; `a.b` reaches into objects. `None` for other types or no claim.
pub fn claim_text(claims: &Map<String, Value>, dotted: &str) -> Option<String> {
    let mut value: Option<&Value> = None;
    let mut object = claims;
    for (i, part) in dotted.split('.').enumerate() {
        if i > 0 {
            object = value?.as_object()?;
        }
        value = object.get(part);
    }
    match value? {
        Value::String(s) => Some(s.clone()),
        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        let Value::Object(m) = v else { panic!() };
        m
    }

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn principal_audiences_and_presenter() {
        let a = request_auth(
            &map(
                json!({"iss": "testing@secure.istio.io", "sub": "alice", "azp": "web", "aud": ["a", "b"]}),
            ),
            &[],
        );
        assert_eq!(a.principal, "testing@secure.istio.io/alice");
        assert_eq!(a.presenter.as_deref(), Some("web"));
        assert_eq!(a.audiences, ["a", "b"]);
        let single = request_auth(&map(json!({"aud": "a"})), &[]);
        assert_eq!(single.audiences, ["a"]);
        assert_eq!(single.principal, "/");
    }

    #[test]
    fn space_delimited_claims_become_lists() {
        let claims = map(json!({
            "scope": "read write", "permission": "p", "roles": "x  y", "other": "p q",
            "provider": {"login": {"scope": "a b"}, "scope": "c d"}, "n": 1
        }));
        let a = request_auth(
            &claims,
            &["roles".into(), "provider.login.scope".into(), "n".into()],
        );
        assert_eq!(a.claim_values(&path(&["scope"])), ["read", "write"]);
        assert_eq!(a.claim_values(&path(&["permission"])), ["p"]);
        assert_eq!(a.claim_values(&path(&["roles"])), ["x", "y"]);
        assert_eq!(
            a.claim_values(&path(&["other"])),
            ["p q"],
            "not space-delimited"
        );
        assert_eq!(
            a.claim_values(&path(&["provider", "login", "scope"])),
            ["a", "b"]
        );
        assert_eq!(
            a.claim_values(&path(&["provider", "scope"])),
            ["c d"],
            "only top-level scope by default"
        );
        assert_eq!(a.claims["n"], 1, "non-strings are left alone");
    }

    #[test]
    fn claim_text_for_headers() {
        let c = map(json!({"sub": "alice", "n": 7, "ok": true, "o": {"v": "x"}, "l": ["a"]}));
        assert_eq!(claim_text(&c, "sub").as_deref(), Some("alice"));
        assert_eq!(claim_text(&c, "n").as_deref(), Some("7"));
        assert_eq!(claim_text(&c, "ok").as_deref(), Some("true"));
        assert_eq!(claim_text(&c, "o.v").as_deref(), Some("x"));
        assert_eq!(claim_text(&c, "o"), None);
        assert_eq!(claim_text(&c, "l"), None);
        assert_eq!(claim_text(&c, "sub.x"), None);
        assert_eq!(claim_text(&c, "missing"), None);
    }
}
