//! DestinationRule TLS against the workloads it reaches: mesh mTLS (ISTIO_MUTUAL) to a
//! workload without a proxy fails, and TLS DISABLE to a workload whose PeerAuthentication is
//! STRICT is refused (Istio's MTLSPolicyConflict).

use std::collections::BTreeSet;

use super::inventory::{Inventory, WorkloadInfo, selects};
use super::message::{Code, Message};
use super::{hosts, mtls, namespace_of};
use crate::networking::{ClientTlsMode, DestinationRule};
use crate::path::FieldPath;
use crate::resource::{Object, Resource};

/// A TLS setting of a DestinationRule: its mode, the field that sets it, and the subset
/// labels that narrow it (none for the top-level policy).
struct Setting<'a> {
    mode: ClientTlsMode,
    field: FieldPath,
    subset: Option<&'a std::collections::BTreeMap<String, String>>,
}

fn settings(dr: &Object<DestinationRule>) -> Vec<Setting<'_>> {
    let spec = FieldPath::root().key("spec");
    let mut out = Vec::new();
    if let Some(tls) = dr.spec.traffic_policy.as_ref().and_then(|p| p.tls.as_ref()) {
        out.push(Setting {
            mode: tls.mode,
            field: spec.key("trafficPolicy").key("tls").key("mode"),
            subset: None,
        });
    }
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        if let Some(tls) = s.traffic_policy.as_ref().and_then(|p| p.tls.as_ref()) {
            out.push(Setting {
                mode: tls.mode,
                field: spec
                    .key("subsets")
                    .index(i)
                    .key("trafficPolicy")
                    .key("tls")
                    .key("mode"),
                subset: Some(&s.labels),
            });
        }
    }
    out
}

/// The workloads behind `host` (instances of a service it covers).
fn instances<'a>(
    inventory: &'a Inventory,
    host: &'a str,
) -> impl Iterator<Item = &'a WorkloadInfo> {
    inventory
        .workloads
        .iter()
        .filter(move |w| w.services.iter().any(|s| hosts::covers(host, s)))
}

pub fn destination_rule_tls(resources: &[Resource], inventory: &Inventory) -> Vec<Message> {
    let mut out = Vec::new();
    for r in resources {
        let Resource::DestinationRule(dr) = r else {
            continue;
        };
        let host = hosts::resolve(&dr.spec.host, namespace_of(r));
        for setting in settings(dr) {
            let reached: Vec<&WorkloadInfo> = instances(inventory, &host)
                .filter(|w| setting.subset.is_none_or(|l| selects(l, &w.labels)))
                .collect();
            match setting.mode {
                ClientTlsMode::IstioMutual => {
                    for w in reached.iter().filter(|w| !w.sidecar) {
                        out.push(Message::at(
                            Code::PodMissingProxy,
                            r,
                            &setting.field,
                            format!(
                                "The pod {}.{} is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload. This DestinationRule sends it mesh mTLS (ISTIO_MUTUAL), which only a proxy can accept: connections to it fail.",
                                w.name, w.namespace
                            ),
                        ));
                    }
                }
                ClientTlsMode::Disable => {
                    // One message per STRICT policy, however many workloads it covers.
                    let mut strict = BTreeSet::new();
                    for w in reached.iter().filter(|w| w.sidecar) {
                        let e = mtls::effective(resources, &w.namespace, &w.labels);
                        if e.workload.mode == mtls::Mode::Strict
                            && let Some(i) = e.workload.policy
                        {
                            strict.insert(i);
                        }
                    }
                    for i in strict {
                        let policy = &resources[i];
                        out.push(Message::at(
                            Code::MtlsPolicyConflict,
                            r,
                            &setting.field,
                            format!(
                                "A DestinationRule and Policy are in conflict with regards to mTLS for host {host}. The DestinationRule \"{}/{}\" specifies that mTLS must be false but the Policy object \"{}/{}\" specifies STRICT.",
                                namespace_of(r),
                                r.name(),
                                namespace_of(policy),
                                policy.name()
                            ),
                        ));
                    }
                }
                ClientTlsMode::Simple | ClientTlsMode::Mutual => {}
            }
        }
    }
    out
}
