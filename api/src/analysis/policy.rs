//! Policies that select workloads: Gateways, AuthorizationPolicies and PeerAuthentications
//! whose selectors or references reach nothing, and STRICT mTLS where no proxy can serve it.

use std::collections::BTreeMap;

use super::inventory::Inventory;
use super::message::{Code, Message};
use super::mtls::{self, Mode};
use super::{ROOT_NAMESPACE, namespace_of};
use crate::path::FieldPath;
use crate::resource::Resource;

/// Kubernetes' `labels.SelectorFromSet(...).String()`: `k=v` pairs, sorted, comma separated.
pub fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A Gateway whose selector matches no workload in any namespace: no proxy serves it
/// (Istio's gateway analyzer, IST0101 "selector").
pub fn gateway_selectors(resources: &[Resource], inventory: &Inventory) -> Vec<Message> {
    resources
        .iter()
        .filter_map(|r| match r {
            Resource::Gateway(gw) => Some((r, &gw.spec.selector)),
            _ => None,
        })
        .filter(|(_, sel)| inventory.matching(None, sel).next().is_none())
        .map(|(r, sel)| {
            Message::at(
                Code::ReferencedResourceNotFound,
                r,
                &FieldPath::root().key("spec").key("selector"),
                format!("Referenced selector not found: \"{}\"", selector_text(sel)),
            )
        })
        .collect()
}

/// AuthorizationPolicies that can never match, as Istio's authz analyzer finds them: a
/// selector (or a namespace-wide policy) with no workload to apply to (IST0127), and a source
/// namespace that does not exist (IST0101 "namespace").
pub fn authorization_policies(resources: &[Resource], inventory: &Inventory) -> Vec<Message> {
    let mut namespaces = inventory.namespaces();
    namespaces.extend(resources.iter().map(namespace_of));
    let mut out = Vec::new();
    for r in resources {
        let Resource::AuthorizationPolicy(ap) = r else {
            continue;
        };
        // Policies attached by targetRef apply to gateways and waypoints, not selected pods.
        if ap.spec.target_ref.is_some() || !ap.spec.target_refs.is_empty() {
            continue;
        }
        let ns = namespace_of(r);
        let selector = ap
            .spec
            .selector
            .as_ref()
            .map(|s| &s.match_labels)
            .filter(|l| !l.is_empty());
        let selector_path = FieldPath::root().key("spec").key("selector");
        match selector {
            Some(sel) => {
                let scope = (ns != ROOT_NAMESPACE).then_some(ns);
                if inventory.matching(scope, sel).next().is_none() {
                    out.push(Message::at(
                        Code::NoMatchingWorkloadsFound,
                        r,
                        &selector_path,
                        format!(
                            "No matching workloads for this resource with the following labels: {}",
                            selector_text(sel)
                        ),
                    ));
                }
            }
            None if ns != ROOT_NAMESPACE
                && !inventory.workloads.iter().any(|w| w.namespace == ns) =>
            {
                out.push(Message::at(
                    Code::NoMatchingWorkloadsFound,
                    r,
                    &FieldPath::root().key("metadata"),
                    "No matching workloads for this resource with the following labels: "
                        .to_owned(),
                ));
            }
            None => {}
        }
        for (i, rule) in ap.spec.rules.iter().enumerate() {
            for (j, from) in rule.from.iter().enumerate() {
                let Some(source) = &from.source else {
                    continue;
                };
                let source_path = FieldPath::root()
                    .key("spec")
                    .key("rules")
                    .index(i)
                    .key("from")
                    .index(j)
                    .key("source");
                for (field, list) in [
                    ("namespaces", &source.namespaces),
                    ("notNamespaces", &source.not_namespaces),
                ] {
                    for (k, pattern) in list.iter().enumerate() {
                        if !namespaces.iter().any(|n| namespace_match(n, pattern)) {
                            out.push(Message::at(
                                Code::ReferencedResourceNotFound,
                                r,
                                &source_path.key(field).index(k),
                                format!("Referenced namespace not found: \"{pattern}\""),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Istio's namespace patterns: `*`, `prefix*`, `*suffix` or an exact name (case-insensitive).
fn namespace_match(ns: &str, pattern: &str) -> bool {
    let (ns, pattern) = (ns.to_ascii_lowercase(), pattern.to_ascii_lowercase());
    if pattern == "*" {
        true
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        ns.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        ns.starts_with(prefix)
    } else {
        ns == pattern
    }
}

/// STRICT mTLS in force for a workload without a proxy: nothing terminates mTLS there, so
/// the policy is not enforced and its traffic stays plaintext. Reported on the
/// PeerAuthentication that decides the mode, naming the workload (IST0103, Istio's code for a
/// workload missing its proxy).
pub fn strict_without_sidecar(resources: &[Resource], inventory: &Inventory) -> Vec<Message> {
    let mut out = Vec::new();
    for w in inventory.workloads.iter().filter(|w| !w.sidecar) {
        let effective = mtls::effective(resources, &w.namespace, &w.labels);
        let strict = std::iter::once(&effective.workload)
            .chain(effective.ports.values())
            .find(|d| d.mode == Mode::Strict);
        let Some(decided) = strict else {
            continue;
        };
        let Some(policy) = decided.policy.and_then(|i| resources.get(i)) else {
            continue;
        };
        out.push(Message::at(
            Code::PodMissingProxy,
            policy,
            &decided.field,
            format!(
                "The pod {}.{} is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload. This PeerAuthentication requires STRICT mTLS for it, which only a proxy can enforce: its traffic stays plaintext.",
                w.name, w.namespace
            ),
        ));
    }
    out
}
