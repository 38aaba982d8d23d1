//! The LocalRateLimits of one workload (selected as AuthorizationPolicies are: the root
//! namespace's apply mesh-wide, the workload namespace's to its workloads, a
//! `workloadSelector` narrows either), translated into the proxy's token buckets for its
//! inbound listener. Every one selected applies. Pure functions of the store's resources and
//! the workload's namespace and labels.

use std::collections::BTreeMap;

use mesh_api::Resource;
use mesh_api::networking::{LocalRateLimit, RateLimitMatch, RateLimitUnit};
use mesh_proto::config::v1 as pb;

use crate::authz::{Selection, namespace_of, select};
use crate::translate::string_match;

/// The LocalRateLimits that apply to a workload, in the proxy's model: the root namespace's
/// first, then the workload namespace's, each by name.
pub fn limits_for(
    resources: &[Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    root_namespace: &str,
) -> Vec<pb::LocalRateLimit> {
    select(resources, namespace, labels, root_namespace, |r| match r {
        Resource::LocalRateLimit(o) => Some((
            o.as_ref(),
            Selection {
                selector: o.spec.workload_selector.as_ref(),
                targets_ref: false,
            },
        )),
        _ => None,
    })
    .into_iter()
    .map(|o| {
        let name = format!("{}/{}", namespace_of(&o.metadata), o.metadata.name);
        translate(&name, &o.spec)
    })
    .collect()
}

/// One LocalRateLimit as token buckets: `requestsPerUnit` tokens per fill, a fill per
/// `unit`, `burst` tokens at most.
pub fn translate(name: &str, l: &LocalRateLimit) -> pb::LocalRateLimit {
    // Validation requires a unit; SECOND is only what an unvalidated object would get.
    let unit = l.unit.unwrap_or(RateLimitUnit::Second);
    pb::LocalRateLimit {
        name: name.to_string(),
        bucket: Some(bucket(l.requests_per_unit, l.effective_burst(), unit)),
        routes: l
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| pb::RateLimitRoute {
                name: r.name.clone().unwrap_or_else(|| format!("route-{i}")),
                matches: r.match_.iter().map(request_match).collect(),
                bucket: Some(bucket(
                    r.requests_per_unit,
                    r.effective_burst(),
                    r.unit.unwrap_or(unit),
                )),
            })
            .collect(),
    }
}

fn bucket(requests_per_unit: u32, burst: u32, unit: RateLimitUnit) -> pb::TokenBucket {
    pb::TokenBucket {
        max_tokens: burst,
        tokens_per_fill: requests_per_unit,
        fill_interval_ms: unit.millis(),
    }
}

fn request_match(m: &RateLimitMatch) -> pb::RouteMatch {
    pb::RouteMatch {
        path: m.uri.as_ref().and_then(string_match),
        method: m.method.as_ref().and_then(string_match),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::load_str;

    fn load(yaml: &str) -> Vec<Resource> {
        let (ok, errs) = load_str("rl.yaml", yaml);
        assert!(errs.is_empty(), "{errs:?}");
        ok
    }

    const LIMITS: &str = "\
apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: mesh-wide, namespace: istio-system}
spec: {requestsPerUnit: 1000, unit: SECOND}
---
apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: reviews, namespace: shop}
spec:
  workloadSelector: {matchLabels: {app: reviews}}
  requestsPerUnit: 10
  unit: MINUTE
  burst: 15
  routes:
  - match:
    - uri: {prefix: /login}
      method: {exact: POST}
    requestsPerUnit: 2
---
apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: other, namespace: other}
spec: {requestsPerUnit: 1, unit: HOUR}
";

    fn labels(app: &str) -> BTreeMap<String, String> {
        [("app".to_string(), app.to_string())].into()
    }

    #[test]
    fn selected_by_namespace_and_labels_the_root_namespace_mesh_wide() {
        let all = load(LIMITS);
        let names = |ns: &str, app: &str| -> Vec<String> {
            limits_for(&all, ns, &labels(app), "istio-system")
                .into_iter()
                .map(|l| l.name)
                .collect()
        };
        assert_eq!(
            names("shop", "reviews"),
            ["istio-system/mesh-wide", "shop/reviews"]
        );
        assert_eq!(names("shop", "ratings"), ["istio-system/mesh-wide"]);
        assert_eq!(
            names("other", "reviews"),
            ["istio-system/mesh-wide", "other/other"]
        );
    }

    #[test]
    fn requests_per_unit_burst_and_unit_become_a_token_bucket() {
        let all = load(LIMITS);
        let l = &limits_for(&all, "shop", &labels("reviews"), "istio-system")[1];
        assert_eq!(
            l.bucket,
            Some(pb::TokenBucket {
                max_tokens: 15,
                tokens_per_fill: 10,
                fill_interval_ms: 60_000
            })
        );
        let route = &l.routes[0];
        assert_eq!(route.name, "route-0");
        // The route's own rate, the limit's unit, a burst of its rate.
        assert_eq!(
            route.bucket,
            Some(pb::TokenBucket {
                max_tokens: 2,
                tokens_per_fill: 2,
                fill_interval_ms: 60_000
            })
        );
        let m = &route.matches[0];
        assert_eq!(
            m.path.as_ref().unwrap().kind,
            Some(pb::string_match::Kind::Prefix("/login".into()))
        );
        assert_eq!(
            m.method.as_ref().unwrap().kind,
            Some(pb::string_match::Kind::Exact("POST".into()))
        );
    }
}
