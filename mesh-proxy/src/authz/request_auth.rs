//! The result of request authentication (a verified JWT), carried with a request so that
//! `requestPrincipals` and `request.auth.*` conditions can be evaluated.

use serde_json::{Map, Value};

/// What a verified token established about the request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestAuth {
    /// `<iss>/<sub>`, as Istio forms request principals.
    pub principal: String,
    /// The token's `aud`.
    pub audiences: Vec<String>,
    /// The token's `azp`.
    pub presenter: Option<String>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
}

impl RequestAuth {
    /// The string values of the claim at `path` (outermost name first): a string claim is one
    /// value, a list claim each of its strings, as Istio matches claims; anything else, or a
    /// missing claim, has none.
    pub fn claim_values(&self, path: &[String]) -> Vec<&str> {
        let Some((first, rest)) = path.split_first() else {
            return Vec::new();
        };
        let mut value = self.claims.get(first);
        for name in rest {
            value = value.and_then(|v| v.get(name));
        }
        match value {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_by_path() {
        let claims = serde_json::json!({
            "iss": "https://issuer",
            "groups": ["dev", "ops", 3],
            "nested": {"key": "v", "deeper": {"k": ["a"]}},
            "n": 1
        });
        let auth = RequestAuth {
            claims: claims.as_object().unwrap().clone(),
            ..Default::default()
        };
        let at = |p: &[&str]| {
            let path: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            auth.claim_values(&path)
        };
        assert_eq!(at(&["iss"]), ["https://issuer"]);
        assert_eq!(at(&["groups"]), ["dev", "ops"]);
        assert_eq!(at(&["nested", "key"]), ["v"]);
        assert_eq!(at(&["nested", "deeper", "k"]), ["a"]);
        assert!(at(&["n"]).is_empty());
        assert!(at(&["missing", "x"]).is_empty());
        assert!(at(&[]).is_empty());
    }
}
