//! The vocabulary of AuthorizationPolicy `when` keys (Istio's "Authorization Policy
//! Conditions"). Validation accepts a key when [`ConditionKey::parse`] does, and the proxy
//! compiles each parsed key with an exhaustive match, so no key is accepted by one and
//! refused by the other.

/// A parsed `when` key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConditionKey {
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    /// `ns/sa` or `sa` (the policy's namespace).
    SourceServiceAccount,
    /// `request.headers[<name>]`, the name as written.
    RequestHeader(String),
    RequestAuthPrincipal,
    RequestAuthAudiences,
    RequestAuthPresenter,
    /// `request.auth.claims[a][b]`: the path into the JWT claims, outermost first.
    RequestAuthClaim(Vec<String>),
    DestinationIp,
    DestinationPort,
    ConnectionSni,
    /// `experimental.envoy.filters.*`: metadata of an Envoy filter, the rest of the key kept.
    ExperimentalEnvoyFilter(String),
}

impl ConditionKey {
    /// Istio's accepted keys; `Err` carries the reason for anything else.
    pub fn parse(key: &str) -> Result<ConditionKey, String> {
        let plain = match key {
            "source.ip" => Some(Self::SourceIp),
            "remote.ip" => Some(Self::RemoteIp),
            "source.namespace" => Some(Self::SourceNamespace),
            "source.principal" => Some(Self::SourcePrincipal),
            "source.serviceAccount" => Some(Self::SourceServiceAccount),
            "request.auth.principal" => Some(Self::RequestAuthPrincipal),
            "request.auth.audiences" => Some(Self::RequestAuthAudiences),
            "request.auth.presenter" => Some(Self::RequestAuthPresenter),
            "destination.ip" => Some(Self::DestinationIp),
            "destination.port" => Some(Self::DestinationPort),
            "connection.sni" => Some(Self::ConnectionSni),
            _ => None,
        };
        if let Some(k) = plain {
            return Ok(k);
        }
        if let Some(rest) = key.strip_prefix("experimental.envoy.filters.") {
            return Ok(Self::ExperimentalEnvoyFilter(rest.to_string()));
        }
        if let Some(rest) = key.strip_prefix("request.headers[") {
            return match rest.strip_suffix(']') {
                Some(name) if !name.is_empty() => Ok(Self::RequestHeader(name.to_string())),
                _ => Err(format!("{key:?}: expected request.headers[<name>]")),
            };
        }
        if let Some(rest) = key.strip_prefix("request.auth.claims[") {
            // Istio splits nested claims on "][": `claims[a][b]` is claim b inside claim a.
            return match rest.strip_suffix(']') {
                Some(path) if !path.is_empty() => {
                    let parts: Vec<String> = path.split("][").map(str::to_string).collect();
                    if parts.iter().any(String::is_empty) {
                        Err(format!("{key:?}: empty claim name"))
                    } else {
                        Ok(Self::RequestAuthClaim(parts))
                    }
                }
                _ => Err(format!("{key:?}: expected request.auth.claims[<name>]")),
            };
        }
        Err(format!("unknown attribute ({key})"))
    }

    /// Why a sidecar cannot evaluate this key, when it cannot. A rule using it then takes
    /// Istio's fallback: it never grants access (ALLOW matches nothing, DENY and AUDIT match
    /// everything). `meshctl validate` warns with this and the proxy compiles with it.
    pub fn sidecar_fallback(&self) -> Option<String> {
        match self {
            Self::ExperimentalEnvoyFilter(rest) => Some(format!(
                "\"experimental.envoy.filters.{rest}\" reads metadata of an Envoy filter, which this proxy does not run"
            )),
            _ => None,
        }
    }

    /// Keys whose values are IP addresses or CIDR blocks.
    pub fn takes_ip(&self) -> bool {
        matches!(self, Self::SourceIp | Self::RemoteIp | Self::DestinationIp)
    }

    /// Keys whose values are port numbers.
    pub fn takes_port(&self) -> bool {
        matches!(self, Self::DestinationPort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_keys_parse() {
        for (key, want) in [
            ("source.serviceAccount", ConditionKey::SourceServiceAccount),
            ("connection.sni", ConditionKey::ConnectionSni),
            (
                "request.headers[X-Token]",
                ConditionKey::RequestHeader("X-Token".into()),
            ),
            (
                "request.auth.claims[iss]",
                ConditionKey::RequestAuthClaim(vec!["iss".into()]),
            ),
            (
                "request.auth.claims[nested1][nested2]",
                ConditionKey::RequestAuthClaim(vec!["nested1".into(), "nested2".into()]),
            ),
            (
                "experimental.envoy.filters.a.b[c]",
                ConditionKey::ExperimentalEnvoyFilter("a.b[c]".into()),
            ),
        ] {
            assert_eq!(ConditionKey::parse(key), Ok(want), "{key}");
        }
    }

    #[test]
    fn only_envoy_filter_metadata_falls_back() {
        let key = ConditionKey::parse("experimental.envoy.filters.a.b[c]").unwrap();
        assert!(key.sidecar_fallback().unwrap().contains("a.b[c]"));
        for k in ["source.ip", "request.auth.claims[iss]", "connection.sni"] {
            assert_eq!(
                ConditionKey::parse(k).unwrap().sidecar_fallback(),
                None,
                "{k}"
            );
        }
    }

    #[test]
    fn other_keys_are_refused() {
        for key in [
            "source.user",
            "request.headers[]",
            "request.headers[x",
            "request.auth.claims[]",
            "request.auth.claims[a][]",
            "request.auth.issuer",
        ] {
            assert!(ConditionKey::parse(key).is_err(), "{key}");
        }
    }
}
