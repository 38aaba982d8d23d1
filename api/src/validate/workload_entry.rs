//! WorkloadEntry and WorkloadGroup rules.

use super::Errors;
use super::rules;
use crate::networking::{WorkloadEntry, WorkloadGroup};
use crate::path::FieldPath;

/// `endpoint` is true for a ServiceEntry endpoint, whose address is always required.
pub fn validate_entry(we: &WorkloadEntry, p: &FieldPath, endpoint: bool, errs: &mut Errors) {
    let ap = p.key("address");
    if we.address.is_empty() {
        // A workload reached through a network gateway may omit its address.
        if endpoint || we.network.is_none() {
            errs.push(&ap, "Address is required");
        }
    } else if let Some(path) = we.address.strip_prefix("unix://") {
        if !we.ports.is_empty() {
            errs.push(&p.key("ports"), "UDS may not include ports");
        }
        if !(path.starts_with('/') || path.starts_with('@')) {
            errs.push(&ap, "UDS must be an absolute path or abstract socket");
        } else if path.ends_with('/') {
            errs.push(&ap, "UDS may not be a dir");
        }
    } else if we.address.parse::<std::net::IpAddr>().is_err() {
        errs.check(&ap, rules::fqdn(&we.address));
    }
    for (name, port) in &we.ports {
        let pp = p.key("ports").key(name);
        errs.check(
            &pp,
            rules::port(*port).map_err(|_| "port must be between 1-65535".to_string()),
        );
        errs.check(
            &pp,
            rules::dns1123_label(name)
                .map_err(|_| format!("invalid value {name:?}: port name must be a DNS-1123 label")),
        );
    }
    rules::labels(&we.labels, &p.key("labels"), errs);
    if let Some(sa) = &we.service_account {
        errs.check(&p.key("serviceAccount"), rules::dns1123_subdomain(sa));
    }
}

pub fn validate_group(wg: &WorkloadGroup, p: &FieldPath, errs: &mut Errors) {
    if let Some(m) = &wg.metadata {
        rules::labels(&m.labels, &p.key("metadata").key("labels"), errs);
    }
    if let Some(t) = &wg.template {
        let tp = p.key("template");
        if !t.address.is_empty() {
            errs.push(
                &tp.key("address"),
                "address must not be set in a WorkloadGroup template",
            );
        }
        let mut t = t.clone();
        t.address.clear();
        t.network.get_or_insert_with(String::new);
        validate_entry(&t, &tp, false, errs);
    }
    if let Some(probe) = &wg.probe {
        let pp = p.key("probe");
        let kinds = [
            probe.http_get.is_some(),
            probe.tcp_socket.is_some(),
            probe.exec.is_some(),
            probe.grpc.is_some(),
        ];
        if kinds.iter().filter(|b| **b).count() > 1 {
            errs.push(
                &pp,
                "only one of httpGet, tcpSocket, exec or grpc may be set",
            );
        }
        if let Some(h) = &probe.http_get {
            let hp = pp.key("httpGet");
            errs.check(
                &hp.key("port"),
                rules::port(h.port).map_err(|_| "port must be between 1-65535".to_string()),
            );
            for (i, hdr) in h.http_headers.iter().enumerate() {
                errs.check(
                    &hp.key("httpHeaders").index(i).key("name"),
                    rules::header_name(&hdr.name),
                );
            }
        }
        if let Some(t) = &probe.tcp_socket {
            errs.check(
                &pp.key("tcpSocket").key("port"),
                rules::port(t.port).map_err(|_| "port must be between 1-65535".to_string()),
            );
        }
        if let Some(e) = &probe.exec
            && e.command.is_empty()
        {
            errs.push(&pp.key("exec").key("command"), "command is required");
        }
    }
}
