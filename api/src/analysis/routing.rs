//! Routing references: VirtualService subsets against DestinationRules, DestinationRule hosts
//! against the registry, and VirtualServices that claim the same host.

use std::collections::BTreeMap;

use super::hosts;
use super::inventory::Inventory;
use super::message::{Code, Message};
use super::namespace_of;
use crate::networking::{Destination, VirtualService};
use crate::path::FieldPath;
use crate::resource::{Object, Resource};

/// Every destination of a VirtualService with the path of its `destination` field.
fn destinations(vs: &VirtualService) -> Vec<(FieldPath, &Destination)> {
    let spec = FieldPath::root().key("spec");
    let mut out = Vec::new();
    for (i, http) in vs.http.iter().enumerate() {
        for (j, d) in http.route.iter().enumerate() {
            let p = spec.key("http").index(i).key("route").index(j);
            out.push((p.key("destination"), &d.destination));
        }
    }
    for (i, tcp) in vs.tcp.iter().enumerate() {
        for (j, d) in tcp.route.iter().enumerate() {
            let p = spec.key("tcp").index(i).key("route").index(j);
            out.push((p.key("destination"), &d.destination));
        }
    }
    for (i, tls) in vs.tls.iter().enumerate() {
        for (j, d) in tls.route.iter().enumerate() {
            let p = spec.key("tls").index(i).key("route").index(j);
            out.push((p.key("destination"), &d.destination));
        }
    }
    out
}

/// A VirtualService destination naming a subset that no DestinationRule for its host
/// defines (Istio's destinationrule analyzer: IST0101 "host+subset in destinationrule").
pub fn missing_subsets(resources: &[Resource]) -> Vec<Message> {
    // (resolved host, subset names) of every DestinationRule.
    let defined: Vec<(String, Vec<&str>)> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::DestinationRule(dr) => Some((
                hosts::resolve(&dr.spec.host, namespace_of(r)),
                dr.spec.subsets.iter().map(|s| s.name.as_str()).collect(),
            )),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for r in resources {
        let Resource::VirtualService(vs) = r else {
            continue;
        };
        for (path, d) in destinations(&vs.spec) {
            let Some(subset) = d.subset.as_deref() else {
                continue;
            };
            let host = hosts::resolve(&d.host, namespace_of(r));
            let found = defined
                .iter()
                .any(|(h, subsets)| hosts::covers(h, &host) && subsets.contains(&subset));
            if !found {
                out.push(Message::at(
                    Code::ReferencedResourceNotFound,
                    r,
                    &path.key("subset"),
                    format!(
                        "Referenced host+subset in destinationrule not found: \"{}+{subset}\"",
                        d.host
                    ),
                ));
            }
        }
    }
    out
}

/// A DestinationRule whose host is no service of the registry (IST0101 "host").
pub fn unknown_destination_rule_hosts(
    resources: &[Resource],
    inventory: &Inventory,
) -> Vec<Message> {
    resources
        .iter()
        .filter_map(|r| match r {
            Resource::DestinationRule(dr) => Some((r, dr)),
            _ => None,
        })
        .filter(|(r, dr)| !inventory.knows_host(&hosts::resolve(&dr.spec.host, namespace_of(r))))
        .map(|(r, dr)| {
            Message::at(
                Code::ReferencedResourceNotFound,
                r,
                &FieldPath::root().key("spec").key("host"),
                format!("Referenced host not found: \"{}\"", dr.spec.host),
            )
        })
        .collect()
}

/// Bound to the sidecars: no `gateways`, or `mesh` among them.
fn applies_to_mesh(vs: &Object<VirtualService>) -> bool {
    vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh")
}

/// Two or more mesh VirtualServices defining the same host: the sidecars use one of them
/// and the others are silently ignored (IST0109), reported on each of them.
pub fn conflicting_hosts(resources: &[Resource]) -> Vec<Message> {
    // host -> (resource, index of the host in spec.hosts)
    let mut by_host: BTreeMap<String, Vec<(&Resource, usize)>> = BTreeMap::new();
    for r in resources {
        let Resource::VirtualService(vs) = r else {
            continue;
        };
        if !applies_to_mesh(vs) {
            continue;
        }
        for (i, h) in vs.spec.hosts.iter().enumerate() {
            by_host
                .entry(hosts::resolve(h, namespace_of(r)))
                .or_default()
                .push((r, i));
        }
    }
    let mut out = Vec::new();
    for (host, claims) in by_host.into_iter().filter(|(_, c)| c.len() > 1) {
        let names: Vec<String> = claims
            .iter()
            .map(|(r, _)| format!("{}/{}", namespace_of(r), r.name()))
            .collect();
        for (r, i) in &claims {
            out.push(Message::at(
                Code::ConflictingMeshGatewayVirtualServiceHosts,
                r,
                &FieldPath::root().key("spec").key("hosts").index(*i),
                format!(
                    "The VirtualServices {} associated with mesh gateway define the same host {host} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                    names.join(",")
                ),
            ));
        }
    }
    out
}
