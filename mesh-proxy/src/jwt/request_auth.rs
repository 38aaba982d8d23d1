//! What a verified token tells the rest of the proxy: Istio's `request.auth.*` attributes,
//! carried with the request to authorization.

use serde_json::{Map, Value};

/// Claims Istio always treats as space-separated lists (OAuth 2.0 `scope`, and `permission`).
const SPACE_DELIMITED_BY_DEFAULT: [&str; 2] = ["scope", "permission"];

#[derive(Debug, Clone, PartialEq)]
pub struct RequestAuth {
    /// `<iss>/<sub>`: what `requestPrincipals` and `request.auth.principal` match.
    pub principal: String,
    /// `aud`, a string or a list in the token.
    pub audiences: Vec<String>,
    /// `azp`: the party the token was issued to.
    pub presenter: Option<String>,
    pub claims: Map<String, Value>,
    /// The rule's `spaceDelimitedClaims`, besides the defaults.
    pub space_delimited: Vec<String>,
}

impl RequestAuth {
    pub fn new(
        claims: Map<String, Value>,
        audiences: Vec<String>,
        space_delimited: Vec<String>,
    ) -> Self {
        let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or_default();
        Self {
            principal: format!("{}/{}", text("iss"), text("sub")),
            audiences,
            presenter: claims.get("azp").and_then(Value::as_str).map(str::to_owned),
            claims,
            space_delimited,
        }
    }

    /// The values of `request.auth.claims[a][b]...` (`path` = `["a", "b"]`): a string claim
    /// is one value, a list of strings is its elements; a space-delimited claim also gives
    /// each word (`scope`, `permission` and the rule's `spaceDelimitedClaims`, dotted for
    /// nested claims). Other types (numbers, objects) give none, as in Istio.
    pub fn claim_values(&self, path: &[String]) -> Vec<&str> {
        let Some((last, parents)) = path.split_last() else {
            return Vec::new();
        };
        let mut object = &self.claims;
        for p in parents {
            match object.get(p) {
                Some(Value::Object(o)) => object = o,
                _ => return Vec::new(),
            }
        }
        let dotted = path.join(".");
        let split = SPACE_DELIMITED_BY_DEFAULT.contains(&dotted.as_str())
            || self.space_delimited.contains(&dotted);
        match object.get(last) {
            Some(Value::String(s)) => {
                let mut out = vec![s.as_str()];
                if split && s.contains(' ') {
                    out.extend(s.split(' ').filter(|w| !w.is_empty()));
                }
                out
            }
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// A claim as a header value (`outputClaimToHeaders`): strings as they are, numbers and
    /// booleans printed; `a.b` reaches into objects. `None` for other types or no claim.
    pub fn claim_text(&self, dotted: &str) -> Option<String> {
        let mut value: Option<&Value> = None;
        let mut object = &self.claims;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth(claims: Value) -> RequestAuth {
        let Value::Object(m) = claims else { panic!() };
        RequestAuth::new(
            m,
            Vec::new(),
            vec!["roles".into(), "provider.login.scope".into()],
        )
    }

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn principal_and_presenter() {
        let a = auth(json!({"iss": "testing@secure.istio.io", "sub": "alice", "azp": "web"}));
        assert_eq!(a.principal, "testing@secure.istio.io/alice");
        assert_eq!(a.presenter.as_deref(), Some("web"));
        assert_eq!(auth(json!({})).principal, "/");
    }

    #[test]
    fn claim_values_by_type_and_nesting() {
        let a = auth(json!({
            "group": "admin", "groups": ["a", "b", 3], "n": 1,
            "scope": "read write", "roles": "x y", "other": "p q",
            "nested": {"key1": ["v1", "v2"], "deep": {"k": "v"}}
        }));
        assert_eq!(a.claim_values(&path(&["group"])), ["admin"]);
        assert_eq!(a.claim_values(&path(&["groups"])), ["a", "b"]);
        assert!(a.claim_values(&path(&["n"])).is_empty());
        assert_eq!(
            a.claim_values(&path(&["scope"])),
            ["read write", "read", "write"]
        );
        assert_eq!(a.claim_values(&path(&["roles"])), ["x y", "x", "y"]);
        assert_eq!(a.claim_values(&path(&["other"])), ["p q"]);
        assert_eq!(a.claim_values(&path(&["nested", "key1"])), ["v1", "v2"]);
        let p = auth(json!({"provider": {"login": {"scope": "a b"}, "scope": "c d"}}));
        assert_eq!(
            p.claim_values(&path(&["provider", "login", "scope"])),
            ["a b", "a", "b"]
        );
        assert_eq!(
            p.claim_values(&path(&["provider", "scope"])),
            ["c d"],
            "only top-level scope by default"
        );
        assert_eq!(a.claim_values(&path(&["nested", "deep", "k"])), ["v"]);
        assert!(a.claim_values(&path(&["group", "x"])).is_empty());
        assert!(a.claim_values(&path(&["missing"])).is_empty());
    }

    #[test]
    fn claim_text_for_headers() {
        let a = auth(json!({"sub": "alice", "n": 7, "ok": true, "o": {"v": "x"}, "l": ["a"]}));
        assert_eq!(a.claim_text("sub").as_deref(), Some("alice"));
        assert_eq!(a.claim_text("n").as_deref(), Some("7"));
        assert_eq!(a.claim_text("ok").as_deref(), Some("true"));
        assert_eq!(a.claim_text("o.v").as_deref(), Some("x"));
        assert_eq!(a.claim_text("o"), None);
        assert_eq!(a.claim_text("l"), None);
        assert_eq!(a.claim_text("sub.x"), None);
        assert_eq!(a.claim_text("missing"), None);
    }
}
