//! `meshctl describe WORKLOAD`: what applies to a workload and why, as `istioctl x describe`
//! shows it: its services, the VirtualServices and DestinationRules of those services, the
//! PeerAuthentications and AuthorizationPolicies that select it, the mTLS mode in force, and
//! the Telemetries (access logs, tracing) and the LocalRateLimits that apply to it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::inventory::{Inventory, WorkloadInfo, selects};
use super::mtls::{self, Mode};
use super::policy::selector_text;
use super::{ROOT_NAMESPACE, hosts, namespace_of};
use crate::resource::Resource;

/// One object that applies, with where it is and why it applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub why: String,
}

impl Applied {
    fn of(r: &Resource, why: String) -> Self {
        Self {
            kind: r.kind().to_string(),
            namespace: namespace_of(r).to_owned(),
            name: r.name().to_owned(),
            file: r.source().file.clone(),
            line: r.source().line,
            why,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Description {
    pub workload: WorkloadInfo,
    /// The SPIFFE identity its proxy presents, when it has a service account.
    pub identity: Option<String>,
    pub virtual_services: Vec<Applied>,
    pub destination_rules: Vec<Applied>,
    pub peer_authentications: Vec<Applied>,
    pub authorization_policies: Vec<Applied>,
    /// Mesh-wide, namespace-wide and selecting Telemetries, least specific first.
    pub telemetries: Vec<Applied>,
    /// The LocalRateLimits on its inbound side (every one applies), as pilot selects them.
    pub local_rate_limits: Vec<Applied>,
    pub mtls_mode: Mode,
    /// `namespace/name` of the PeerAuthentication that sets the mode; None: the default.
    pub mtls_from: Option<String>,
    /// Port-level overrides.
    pub port_mtls: Vec<(u32, Mode)>,
}

/// Describes workload `namespace/name`; None when the inventory has no such workload.
pub fn describe(
    resources: &[Resource],
    inventory: &Inventory,
    namespace: &str,
    name: &str,
) -> Option<Description> {
    let w = inventory.workload(namespace, name)?;
    let effective = mtls::effective(resources, &w.namespace, &w.labels);
    let mut d = Description {
        workload: w.clone(),
        identity: (!w.service_account.is_empty()).then(|| {
            format!(
                "spiffe://cluster.local/ns/{}/sa/{}",
                w.namespace, w.service_account
            )
        }),
        virtual_services: Vec::new(),
        destination_rules: Vec::new(),
        peer_authentications: Vec::new(),
        authorization_policies: Vec::new(),
        telemetries: Vec::new(),
        local_rate_limits: Vec::new(),
        mtls_mode: effective.workload.mode,
        mtls_from: effective
            .workload
            .policy
            .map(|i| format!("{}/{}", namespace_of(&resources[i]), resources[i].name())),
        port_mtls: effective
            .ports
            .iter()
            .map(|(p, decision)| (*p, decision.mode))
            .collect(),
    };
    let subsets = own_subsets(resources, w);
    for r in resources {
        match r {
            Resource::VirtualService(vs) => {
                let routed: Vec<&String> = w
                    .services
                    .iter()
                    .filter(|svc| {
                        vs.spec
                            .hosts
                            .iter()
                            .any(|h| hosts::covers(&hosts::resolve(h, namespace_of(r)), svc))
                    })
                    .collect();
                if routed.is_empty() {
                    continue;
                }
                let mut why = format!("routes {}", join(&routed));
                let used: Vec<&String> = subsets
                    .iter()
                    .filter(|(host, subset)| {
                        vs.spec.http.iter().flat_map(|h| &h.route).any(|d| {
                            d.destination.subset.as_ref() == Some(subset)
                                && hosts::resolve(&d.destination.host, namespace_of(r)) == *host
                        })
                    })
                    .map(|(_, s)| s)
                    .collect();
                if !used.is_empty() {
                    why.push_str(&format!(" to this workload's subset {}", join(&used)));
                }
                d.virtual_services.push(Applied::of(r, why));
            }
            Resource::DestinationRule(dr) => {
                let host = hosts::resolve(&dr.spec.host, namespace_of(r));
                if !w.services.iter().any(|s| hosts::covers(&host, s)) {
                    continue;
                }
                let mine: Vec<&String> = subsets
                    .iter()
                    .filter(|(h, _)| *h == host)
                    .map(|(_, s)| s)
                    .collect();
                let why = if mine.is_empty() {
                    format!("host {host}")
                } else {
                    format!("host {host}; this workload is subset {}", join(&mine))
                };
                d.destination_rules.push(Applied::of(r, why));
            }
            Resource::PeerAuthentication(pa) => {
                let selector = pa.spec.selector.as_ref().map(|s| &s.match_labels);
                let ns = namespace_of(r);
                let scope = match selector.filter(|s| !s.is_empty()) {
                    None if ns == ROOT_NAMESPACE => "mesh-wide".to_owned(),
                    None if ns == w.namespace => "namespace-wide".to_owned(),
                    Some(sel) if ns == w.namespace && selects(sel, &w.labels) => {
                        format!("selector {}", selector_text(sel))
                    }
                    _ => continue,
                };
                let mode = pa
                    .spec
                    .mtls
                    .as_ref()
                    .map(|m| format!("{:?}", m.mode).to_uppercase())
                    .unwrap_or_else(|| "UNSET".to_owned());
                d.peer_authentications
                    .push(Applied::of(r, format!("{scope}: {mode}")));
            }
            Resource::AuthorizationPolicy(ap) => {
                let ns = namespace_of(r);
                if ap.spec.target_ref.is_some() || !ap.spec.target_refs.is_empty() {
                    continue;
                }
                let selector = ap
                    .spec
                    .selector
                    .as_ref()
                    .map(|s| &s.match_labels)
                    .filter(|s| !s.is_empty());
                let Some(scope) = policy_scope(ns, selector, w) else {
                    continue;
                };
                let action = format!("{:?}", ap.spec.action).to_uppercase();
                let rules = ap.spec.rules.len();
                d.authorization_policies.push(Applied::of(
                    r,
                    format!("{action}, {scope}, {rules} rule(s)"),
                ));
            }
            Resource::Telemetry(t) => {
                let ns = namespace_of(r);
                if t.spec.target_ref.is_some() || !t.spec.target_refs.is_empty() {
                    continue;
                }
                let selector = t
                    .spec
                    .selector
                    .as_ref()
                    .map(|s| &s.match_labels)
                    .filter(|s| !s.is_empty());
                // Istio's places: the root namespace without selector (mesh-wide), the
                // workload's namespace without selector, and a selector in its namespace.
                let (rank, scope) = match selector {
                    None if ns == ROOT_NAMESPACE => (0, "mesh-wide".to_owned()),
                    None if ns == w.namespace => (1, "namespace-wide".to_owned()),
                    Some(sel) if ns == w.namespace && selects(sel, &w.labels) => {
                        (2, format!("selector {}", selector_text(sel)))
                    }
                    _ => continue,
                };
                let mut parts = Vec::new();
                for (n, what) in [
                    (t.spec.access_logging.len(), "accessLogging"),
                    (t.spec.tracing.len(), "tracing"),
                    (t.spec.metrics.len(), "metrics"),
                ] {
                    if n > 0 {
                        parts.push(format!("{n} {what}"));
                    }
                }
                let why = format!("{scope}: {}", join(&parts));
                let at = d
                    .telemetries
                    .iter()
                    .position(|a| telemetry_rank(&a.why) > rank)
                    .unwrap_or(d.telemetries.len());
                d.telemetries.insert(at, Applied::of(r, why));
            }
            Resource::LocalRateLimit(l) => {
                let ns = namespace_of(r);
                let selector = l
                    .spec
                    .workload_selector
                    .as_ref()
                    .map(|s| &s.match_labels)
                    .filter(|s| !s.is_empty());
                // Selected as AuthorizationPolicies are.
                let Some(scope) = policy_scope(ns, selector, w) else {
                    continue;
                };
                let unit = l
                    .spec
                    .unit
                    .map(|u| format!("{u:?}").to_uppercase())
                    .unwrap_or_default();
                let mut why = format!(
                    "{scope}: {} per {unit}, burst {}",
                    l.spec.requests_per_unit,
                    l.spec.effective_burst()
                );
                if !l.spec.routes.is_empty() {
                    why.push_str(&format!(", {} route(s)", l.spec.routes.len()));
                }
                d.local_rate_limits.push(Applied::of(r, why));
            }
            _ => {}
        }
    }
    Some(d)
}

/// Where a policy selected as AuthorizationPolicies are applies to workload `w`: the root
/// namespace's without selector mesh-wide, the workload namespace's without selector to all
/// of it, and a selector in either to the workloads it matches; `None` when it does not.
fn policy_scope(
    ns: &str,
    selector: Option<&BTreeMap<String, String>>,
    w: &WorkloadInfo,
) -> Option<String> {
    match selector {
        None if ns == ROOT_NAMESPACE => Some("mesh-wide".to_owned()),
        None if ns == w.namespace => Some("namespace-wide".to_owned()),
        Some(sel) if (ns == w.namespace || ns == ROOT_NAMESPACE) && selects(sel, &w.labels) => {
            Some(format!("selector {}", selector_text(sel)))
        }
        _ => None,
    }
}

/// The precedence of a Telemetry by the scope its reason starts with.
fn telemetry_rank(why: &str) -> u8 {
    if why.starts_with("mesh-wide") {
        0
    } else if why.starts_with("namespace-wide") {
        1
    } else {
        2
    }
}

/// (service host, subset name) of every DestinationRule subset that selects the workload.
fn own_subsets(resources: &[Resource], w: &WorkloadInfo) -> Vec<(String, String)> {
    resources
        .iter()
        .filter_map(|r| match r {
            Resource::DestinationRule(dr) => Some((r, dr)),
            _ => None,
        })
        .flat_map(|(r, dr)| {
            let host = hosts::resolve(&dr.spec.host, namespace_of(r));
            dr.spec
                .subsets
                .iter()
                .filter(|s| selects(&s.labels, &w.labels))
                .map(move |s| (host.clone(), s.name.clone()))
        })
        .filter(|(host, _)| w.services.iter().any(|s| hosts::covers(host, s)))
        .collect()
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn section(f: &mut fmt::Formatter<'_>, title: &str, items: &[Applied]) -> fmt::Result {
    writeln!(f, "{title}:")?;
    if items.is_empty() {
        return writeln!(f, "  (none)");
    }
    for a in items {
        let place = match (&a.file, a.line) {
            (Some(file), Some(line)) => format!("  {}:{line}", file.display()),
            (Some(file), None) => format!("  {}", file.display()),
            _ => String::new(),
        };
        writeln!(f, "  {}/{}{place}  {}", a.namespace, a.name, a.why)?;
    }
    Ok(())
}

impl fmt::Display for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.workload;
        writeln!(f, "Workload:       {}.{}", w.name, w.namespace)?;
        writeln!(f, "Labels:         {}", selector_text(&w.labels))?;
        if let Some(id) = &self.identity {
            writeln!(f, "Identity:       {id}")?;
        }
        writeln!(
            f,
            "Sidecar:        {}",
            if w.sidecar { "yes" } else { "no" }
        )?;
        let services = if w.services.is_empty() {
            "(none)".to_owned()
        } else {
            join(&w.services)
        };
        writeln!(f, "Services:       {services}")?;
        section(f, "VirtualServices", &self.virtual_services)?;
        section(f, "DestinationRules", &self.destination_rules)?;
        section(f, "PeerAuthentications", &self.peer_authentications)?;
        section(f, "AuthorizationPolicies", &self.authorization_policies)?;
        section(f, "Telemetries", &self.telemetries)?;
        section(f, "LocalRateLimits", &self.local_rate_limits)?;
        let from = match &self.mtls_from {
            Some(p) => format!("PeerAuthentication {p}"),
            None => "default: no PeerAuthentication sets a mode".to_owned(),
        };
        writeln!(f, "Effective mTLS: {} ({from})", self.mtls_mode)?;
        for (port, mode) in &self.port_mtls {
            writeln!(f, "  port {port}: {mode}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MESH: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec: {address: 127.0.0.1, labels: {app: reviews, version: v2}, serviceAccount: bookinfo-reviews}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route:
    - {destination: {host: ratings}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {'9080': {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{source: {namespaces: [default]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
";

    #[test]
    fn lists_what_selects_the_workload_and_the_mode_in_force() {
        let (resources, errors) = crate::load_str("bookinfo.yaml", MESH);
        assert!(errors.is_empty(), "{errors:?}");
        let inventory = Inventory::from_resources(&resources);
        let d = describe(&resources, &inventory, "default", "reviews-v2").unwrap();
        assert_eq!(
            d.identity.as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
        );
        let names = |a: &[Applied]| a.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&d.virtual_services), ["reviews"], "not ratings");
        assert_eq!(
            d.virtual_services[0].why,
            "routes reviews.default.svc.cluster.local to this workload's subset v2"
        );
        assert_eq!(
            d.destination_rules[0].why,
            "host reviews.default.svc.cluster.local; this workload is subset v2"
        );
        assert_eq!(names(&d.peer_authentications), ["default", "reviews"]);
        assert_eq!(names(&d.authorization_policies), ["reviews-viewer"]);
        assert_eq!(
            d.authorization_policies[0].why,
            "ALLOW, selector app=reviews, 1 rule(s)"
        );
        assert_eq!(
            d.mtls_mode,
            Mode::Strict,
            "the workload policy's mode is UNSET"
        );
        assert_eq!(d.mtls_from.as_deref(), Some("istio-system/default"));
        assert_eq!(d.port_mtls, [(9080, Mode::Permissive)]);
        let text = d.to_string();
        assert!(
            text.contains("Effective mTLS: STRICT (PeerAuthentication istio-system/default)"),
            "{text}"
        );
        assert!(text.contains("  port 9080: PERMISSIVE"), "{text}");
        assert!(text.contains("default/reviews  bookinfo.yaml:"), "{text}");
        assert!(describe(&resources, &inventory, "default", "nope").is_none());
    }
}

#[cfg(test)]
mod telemetry_tests {
    use super::*;

    #[test]
    fn telemetries_are_listed_mesh_then_namespace_then_workload() {
        let yaml = format!(
            "{}---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: reviews-logs, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  accessLogging: [{{filter: {{expression: 'response.code >= 400'}}}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: ratings-logs, namespace: default}}
spec:
  selector: {{matchLabels: {{app: ratings}}}}
  accessLogging: [{{}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  accessLogging: [{{providers: [{{name: envoy}}]}}]
  tracing: [{{randomSamplingPercentage: 1}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: other-ns, namespace: shop}}
spec:
  accessLogging: [{{}}]
",
            super::tests::MESH
        );
        let (resources, errors) = crate::load_str("bookinfo.yaml", &yaml);
        assert!(errors.is_empty(), "{errors:?}");
        let inventory = Inventory::from_resources(&resources);
        let d = describe(&resources, &inventory, "default", "reviews-v2").unwrap();
        let listed: Vec<(String, String)> = d
            .telemetries
            .iter()
            .map(|a| (a.name.clone(), a.why.clone()))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "mesh-default".to_owned(),
                    "mesh-wide: 1 accessLogging, 1 tracing".to_owned()
                ),
                (
                    "reviews-logs".to_owned(),
                    "selector app=reviews: 1 accessLogging".to_owned()
                ),
            ]
        );
        assert!(d.to_string().contains("Telemetries"), "{d}");
    }
}

#[cfg(test)]
mod rate_limit_tests {
    use super::*;

    #[test]
    fn local_rate_limits_that_select_the_workload_are_listed() {
        let yaml = format!(
            "{}---
apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {{name: reviews, namespace: default}}
spec:
  workloadSelector: {{matchLabels: {{app: reviews}}}}
  requestsPerUnit: 10
  unit: MINUTE
  routes: [{{match: [{{uri: {{prefix: /login}}}}], requestsPerUnit: 1}}]
---
apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {{name: ratings, namespace: default}}
spec:
  workloadSelector: {{matchLabels: {{app: ratings}}}}
  requestsPerUnit: 1
  unit: SECOND
---
apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {{name: mesh-wide, namespace: istio-system}}
spec: {{requestsPerUnit: 1000, unit: SECOND, burst: 2000}}
",
            super::tests::MESH
        );
        let (resources, errors) = crate::load_str("bookinfo.yaml", &yaml);
        assert!(errors.is_empty(), "{errors:?}");
        let inventory = Inventory::from_resources(&resources);
        let d = describe(&resources, &inventory, "default", "reviews-v2").unwrap();
        let listed: Vec<(String, String)> = d
            .local_rate_limits
            .iter()
            .map(|a| (a.name.clone(), a.why.clone()))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "reviews".to_owned(),
                    "selector app=reviews: 10 per MINUTE, burst 10, 1 route(s)".to_owned()
                ),
                (
                    "mesh-wide".to_owned(),
                    "mesh-wide: 1000 per SECOND, burst 2000".to_owned()
                ),
            ]
        );
        assert!(d.to_string().contains("LocalRateLimits"), "{d}");
    }
}
