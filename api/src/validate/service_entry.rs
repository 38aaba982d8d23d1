//! ServiceEntry rules (Istio `validateServiceEntry`).

use std::collections::HashSet;

use super::Errors;
use super::destination_rule::selector_labels;
use super::rules;
use super::workload_entry;
use crate::networking::{Resolution, ServiceEntry, parse_protocol};
use crate::path::FieldPath;

pub fn validate(se: &ServiceEntry, p: &FieldPath, errs: &mut Errors) {
    if se.hosts.is_empty() {
        errs.push(
            &p.key("hosts"),
            "required value: at least one host is needed",
        );
    }
    for (i, h) in se.hosts.iter().enumerate() {
        let hp = p.key("hosts").index(i);
        if h == "*" {
            errs.push(&hp, "hostname cannot be wildcard");
        } else {
            errs.check(&hp, rules::wildcard_domain(h));
            if h.starts_with('*')
                && matches!(se.resolution, Resolution::Dns | Resolution::DnsRoundRobin)
                && se.endpoints.is_empty()
            {
                errs.push(
                    &hp,
                    "hosts must be FQDN if no endpoints are provided for resolution mode DNS",
                );
            }
        }
    }
    for (i, a) in se.addresses.iter().enumerate() {
        let ap = p.key("addresses").index(i);
        errs.check(&ap, rules::ip_or_cidr(a));
        let is_cidr = a.contains('/') && !(a.ends_with("/32") || a.ends_with("/128"));
        if a.contains('/')
            && rules::cidr(a).is_ok()
            && is_cidr
            && !matches!(se.resolution, Resolution::None | Resolution::Static)
        {
            errs.push(
                &ap,
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }
    }
    let mut numbers = HashSet::new();
    let mut names = HashSet::new();
    for (i, port) in se.ports.iter().enumerate() {
        let pp = p.key("ports").index(i);
        errs.check(
            &pp.key("number"),
            rules::port(port.number).map_err(|_| "port must be between 1-65535".to_string()),
        );
        if let Some(t) = port.target_port {
            errs.check(
                &pp.key("targetPort"),
                rules::port(t).map_err(|_| "port must be between 1-65535".to_string()),
            );
        }
        if !numbers.insert(port.number) {
            errs.push(
                &pp.key("number"),
                format!("port number cannot be duplicated: {}", port.number),
            );
        }
        if port.name.is_empty() {
            errs.push(&pp.key("name"), "port name is required");
        } else if rules::dns1123_label(&port.name).is_err() {
            errs.push(&pp.key("name"), format!("invalid port name: {}", port.name));
        } else if !names.insert(&port.name) {
            errs.push(&pp.key("name"), format!("Duplicate value: {:?}", port.name));
        }
        if !port.protocol.is_empty() && parse_protocol(&port.protocol).is_none() {
            errs.push(
                &pp.key("protocol"),
                format!("unsupported protocol: {}", port.protocol),
            );
        }
    }
    if let Some(ws) = &se.workload_selector {
        if !se.endpoints.is_empty() {
            errs.push(
                &p.key("workloadSelector"),
                "only one of WorkloadSelector or Endpoints can be set",
            );
        }
        selector_labels(&ws.labels, &p.key("workloadSelector").key("labels"), errs);
    }
    match se.resolution {
        Resolution::None if !se.endpoints.is_empty() => {
            errs.push(&p.key("endpoints"), "NONE mode cannot set endpoints")
        }
        Resolution::DnsRoundRobin if se.endpoints.len() > 1 => errs.push(
            &p.key("endpoints"),
            "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        ),
        _ => {}
    }
    // Plain TCP carries no host name, so several hosts cannot be told apart.
    if se.resolution != Resolution::None && se.hosts.len() > 1 {
        let named = se.ports.iter().all(|p| {
            matches!(
                parse_protocol(&p.protocol),
                Some("HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" | "HTTP_PROXY" | "HTTPS" | "TLS")
            )
        });
        if !named {
            errs.push(
                &p.key("hosts"),
                "multiple hosts provided with non-HTTP, non-TLS ports",
            );
        }
    }
    let unix = se
        .endpoints
        .iter()
        .any(|e| e.address.starts_with("unix://"));
    if se.resolution == Resolution::Static && unix && se.ports.len() != 1 {
        errs.push(
            &p.key("ports"),
            "exactly 1 service port required for unix endpoints",
        );
    }
    for (i, ep) in se.endpoints.iter().enumerate() {
        let ep_path = p.key("endpoints").index(i);
        workload_entry::validate_entry(ep, &ep_path, true, errs);
        if se.resolution == Resolution::Static
            && !ep.address.starts_with("unix://")
            && ep.address.parse::<std::net::IpAddr>().is_err()
        {
            errs.push(
                &ep_path.key("address"),
                format!(
                    "endpoint address {:?} is not a valid IP address",
                    ep.address
                ),
            );
        }
        let dns = matches!(se.resolution, Resolution::Dns | Resolution::DnsRoundRobin);
        if dns
            && ep.address.parse::<std::net::IpAddr>().is_err()
            && rules::fqdn(&ep.address).is_err()
        {
            errs.push(
                &ep_path.key("address"),
                format!(
                    "endpoint address {:?} is not a valid FQDN or an IP address",
                    ep.address
                ),
            );
        }
        for name in ep.ports.keys() {
            if !se.ports.iter().any(|sp| &sp.name == name) {
                errs.push(
                    &ep_path.key("ports").key(name),
                    format!("endpoint port {name} is not defined by the service entry"),
                );
            }
        }
    }
    for (i, san) in se.subject_alt_names.iter().enumerate() {
        if san.is_empty() {
            errs.push(
                &p.key("subjectAltNames").index(i),
                "subject alt name cannot be empty",
            );
        }
    }
    rules::export_to(&se.export_to, &p.key("exportTo"), errs);
}
