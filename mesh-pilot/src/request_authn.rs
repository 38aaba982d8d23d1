//! The RequestAuthentication rules of one workload (Istio's selection, as for
//! AuthorizationPolicy), translated into the proxy's `JwtRule`s. Pure functions of the store's
//! resources and the workload's namespace and labels.

use std::collections::BTreeMap;

use mesh_api::Resource;
use mesh_api::security::request_authentication as ra;
use mesh_proto::config::v1 as pb;
use pb::jwt_rule;

use crate::authz::{Selection, namespace_of, select};

/// The jwtRules that apply to a workload: those of its RequestAuthentications, selected as
/// AuthorizationPolicies are ([`select`]).
pub fn jwt_rules_for(
    resources: &[Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    root_namespace: &str,
) -> Vec<pb::JwtRule> {
    let selected = select(resources, namespace, labels, root_namespace, |r| match r {
        Resource::RequestAuthentication(o) => Some((
            o.as_ref(),
            Selection {
                selector: o.spec.selector.as_ref(),
                targets_ref: o.spec.target_ref.is_some() || !o.spec.target_refs.is_empty(),
            },
        )),
        _ => None,
    });
    let mut out = Vec::new();
    for o in selected {
        let name = format!("{}/{}", namespace_of(&o.metadata), o.metadata.name);
        out.extend(o.spec.jwt_rules.iter().map(|r| translate(&name, r)));
    }
    out
}

/// One line per RequestAuthentication that selection cannot honour (`targetRef`s).
pub fn warnings(resources: &[Resource]) -> Vec<String> {
    resources
        .iter()
        .filter_map(|r| match r {
            Resource::RequestAuthentication(o)
                if o.spec.target_ref.is_some() || !o.spec.target_refs.is_empty() =>
            {
                Some(format!(
                    "RequestAuthentication {}/{}: targetRef attaches it to a gateway or waypoint, which this mesh does not run; it applies to no sidecar",
                    namespace_of(&o.metadata),
                    o.metadata.name
                ))
            }
            _ => None,
        })
        .collect()
}

fn translate(name: &str, r: &ra::JwtRule) -> pb::JwtRule {
    pb::JwtRule {
        name: name.to_owned(),
        issuer: r.issuer.clone(),
        audiences: r.audiences.clone(),
        jwks: r.jwks.clone().unwrap_or_default(),
        jwks_uri: r.jwks_uri.clone().unwrap_or_default(),
        from_headers: r
            .from_headers
            .iter()
            .map(|h| jwt_rule::JwtHeader {
                name: h.name.clone(),
                prefix: h.prefix.clone().unwrap_or_default(),
            })
            .collect(),
        from_params: r.from_params.clone(),
        from_cookies: r.from_cookies.clone(),
        output_payload_to_header: r.output_payload_to_header.clone().unwrap_or_default(),
        forward_original_token: r.forward_original_token.unwrap_or(false),
        output_claim_to_headers: r
            .output_claim_to_headers
            .iter()
            .map(|c| jwt_rule::ClaimToHeader {
                header: c.header.clone(),
                claim: c.claim.clone(),
            })
            .collect(),
        space_delimited_claims: r.space_delimited_claims.clone(),
        jwks_fetch_timeout_ms: r.timeout.as_ref().map_or(0, |t| {
            u32::try_from(t.as_std().as_millis()).unwrap_or(u32::MAX)
        }),
        // The proxy's defaults (Istio's 20 min refresh).
        jwks_refresh_ms: 0,
        jwks_min_refetch_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "istio-system";

    fn load(yaml: &str) -> Vec<Resource> {
        let (res, errs) = mesh_api::load_str("test.yaml", yaml);
        assert!(errs.is_empty(), "{errs:?}");
        res
    }

    fn ra(name: &str, ns: &str, selector: Option<&str>) -> String {
        let selector = selector
            .map(|s| format!("  selector: {{matchLabels: {{app: {s}}}}}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
             metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}  jwtRules:\n  - issuer: {name}\n    jwksUri: https://example.com/{name}\n---\n"
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selection_follows_istio() {
        let yaml = [
            ra("mesh-wide", ROOT, None),
            ra("root-httpbin", ROOT, Some("httpbin")),
            ra("ns-wide", "foo", None),
            ra("httpbin-only", "foo", Some("httpbin")),
            ra("sleep-only", "foo", Some("sleep")),
            ra("other-ns", "bar", None),
        ]
        .concat();
        let res = load(&yaml);
        let rules = jwt_rules_for(&res, "foo", &labels(&[("app", "httpbin")]), ROOT);
        let names: Vec<_> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "istio-system/mesh-wide",
                "istio-system/root-httpbin",
                "foo/httpbin-only",
                "foo/ns-wide"
            ]
        );
        assert_eq!(rules[0].issuer, "mesh-wide");
        assert_eq!(rules[0].jwks_uri, "https://example.com/mesh-wide");
        let sleep = jwt_rules_for(&res, "foo", &labels(&[("app", "sleep")]), ROOT);
        assert_eq!(sleep.len(), 3);
    }

    #[test]
    fn every_field_is_carried() {
        let yaml = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - issuer: testing@secure.istio.io
    audiences: [bookstore]
    jwks: '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [tok]
    fromCookies: [session]
    outputPayloadToHeader: x-payload
    forwardOriginalToken: true
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    spaceDelimitedClaims: [roles]
    timeout: 3s
"#;
        let res = load(yaml);
        let rules = jwt_rules_for(&res, "foo", &BTreeMap::new(), ROOT);
        let r = &rules[0];
        assert_eq!(r.name, "foo/jwt");
        assert_eq!(r.audiences, ["bookstore"]);
        assert_eq!(
            r.jwks,
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#
        );
        assert_eq!(r.from_headers[0].prefix, "Bearer ");
        assert_eq!(r.from_params, ["tok"]);
        assert_eq!(r.from_cookies, ["session"]);
        assert_eq!(r.output_payload_to_header, "x-payload");
        assert!(r.forward_original_token);
        assert_eq!(r.output_claim_to_headers[0].claim, "sub");
        assert_eq!(r.space_delimited_claims, ["roles"]);
        assert_eq!(r.jwks_fetch_timeout_ms, 3000);
    }

    #[test]
    fn target_refs_apply_to_no_sidecar_and_are_reported() {
        let yaml = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: gw, namespace: foo}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]
  jwtRules: [{issuer: a, jwksUri: "https://example.com/k"}]
"#;
        let res = load(yaml);
        assert!(jwt_rules_for(&res, "foo", &BTreeMap::new(), ROOT).is_empty());
        assert_eq!(warnings(&res).len(), 1);
    }
}
