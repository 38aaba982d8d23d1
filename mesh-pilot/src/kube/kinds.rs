//! The config kinds pilot watches: every served kind under Istio's API groups and the mesh's own.

use kube::core::ApiResource;
use mesh_api::Kind;

/// Version watched in every group: the stored version of the CRDs (Istio serves the older
/// versions from the same storage, so one version sees every object).
pub const WATCHED_VERSION: &str = "v1";

/// The version watched for `kind`: [`WATCHED_VERSION`], or the stored version of a kind not
/// served as v1 (the mesh's own LocalRateLimit is v1alpha1).
pub fn watched_version(kind: Kind) -> &'static str {
    if kind.versions().contains(&WATCHED_VERSION) {
        WATCHED_VERSION
    } else {
        kind.versions()[0]
    }
}

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
        let version = watched_version(kind);
        for group in kind.groups() {
            out.push(ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                api_version: format!("{group}/{version}"),
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
        let groups: usize = Kind::ALL.iter().map(|k| k.groups().len()).sum();
        assert_eq!(all.len(), groups);
        // Istio's kinds in both groups, the mesh's own LocalRateLimit in its group only.
        assert_eq!(groups, (Kind::ALL.len() - 1) * 2 + 1);
        assert!(
            all.iter()
                .any(|r| r.api_version == "networking.mesh.dev/v1alpha1"
                    && r.plural == "localratelimits")
        );
        assert!(
            !all.iter()
                .any(|r| r.group == "networking.istio.io" && r.kind == "LocalRateLimit")
        );
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
