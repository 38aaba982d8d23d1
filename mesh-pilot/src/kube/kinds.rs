//! The config kinds pilot watches: every served kind under Istio's API groups and the mesh's own.

use kube::core::ApiResource;
use mesh_api::Kind;

/// Version watched in every group: the stored version of the CRDs (Istio serves the older
/// versions from the same storage, so one version sees every object).
pub const WATCHED_VERSION: &str = "v1";

/// The lowercase plural Kubernetes derives for the kinds served here.
pub fn plural(kind: Kind) -> String {
    let lower = kind.as_str().to_ascii_lowercase();
    // A consonant before the final `y` makes `ies` (entries, policies), a vowel `ys` (gateways).
    match lower.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{stem}ies"),
        _ => format!("{lower}s"),
    }
}

/// One [`ApiResource`] per served kind and API group.
pub fn config_resources() -> Vec<ApiResource> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        for group in kind.groups() {
            out.push(ApiResource {
                group: group.to_string(),
                version: WATCHED_VERSION.to_string(),
                api_version: format!("{group}/{WATCHED_VERSION}"),
                kind: kind.as_str().to_string(),
                plural: plural(kind),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_match_the_crds() {
        assert_eq!(plural(Kind::VirtualService), "virtualservices");
        assert_eq!(plural(Kind::ServiceEntry), "serviceentries");
        assert_eq!(plural(Kind::AuthorizationPolicy), "authorizationpolicies");
        assert_eq!(plural(Kind::Gateway), "gateways");
    }

    #[test]
    fn both_groups_of_every_kind() {
        let all = config_resources();
        assert_eq!(all.len(), Kind::ALL.len() * 2);
        assert!(
            all.iter().any(
                |r| r.api_version == "networking.mesh.dev/v1" && r.plural == "destinationrules"
            )
        );
        assert!(
            all.iter()
                .any(|r| r.api_version == "security.istio.io/v1"
                    && r.plural == "peerauthentications")
        );
    }
}
