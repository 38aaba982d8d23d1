//! Sidecar rules (Istio `validateSidecar`).

use std::collections::HashSet;

use super::Errors;
use super::destination_rule::selector_labels;
use super::rules;
use super::virtual_service::destination;
use crate::networking::{OutboundMode, Port, Sidecar, parse_protocol};
use crate::path::FieldPath;

pub fn validate(sc: &Sidecar, p: &FieldPath, errs: &mut Errors) {
    if let Some(ws) = &sc.workload_selector {
        if ws.labels.is_empty() {
            errs.push(
                &p.key("workloadSelector"),
                "sidecar: workloadSelector cannot have empty labels",
            );
        }
        selector_labels(&ws.labels, &p.key("workloadSelector").key("labels"), errs);
    }
    let mut ingress_ports = HashSet::new();
    for (i, l) in sc.ingress.iter().enumerate() {
        let lp = p.key("ingress").index(i);
        match &l.port {
            None => errs.push(
                &lp.key("port"),
                "sidecar: ingress listener must have a port",
            ),
            Some(port) => {
                listener_port(port, &lp.key("port"), errs);
                if !ingress_ports.insert((port.number, l.bind.clone())) {
                    errs.push(
                        &lp.key("port"),
                        "sidecar: ports on IP bound listeners must be unique",
                    );
                }
            }
        }
        bind(&l.bind, &lp.key("bind"), errs);
        if let Some(ep) = &l.default_endpoint {
            errs.check(&lp.key("defaultEndpoint"), default_endpoint(ep));
        }
    }
    let mut egress_ports = HashSet::new();
    for (i, l) in sc.egress.iter().enumerate() {
        let lp = p.key("egress").index(i);
        match &l.port {
            // Port 0 is a unix domain socket listener named by `bind`.
            Some(port) if port.number == 0 => {
                let unix = l.bind.as_deref().is_some_and(|b| b.starts_with("unix://"));
                errs.check(
                    &lp.key("bind"),
                    unix.then_some(()).ok_or_else(|| {
                        "sidecar: ports with 0 value must have a unix domain socket bind address"
                            .to_string()
                    }),
                );
            }
            Some(port) => {
                listener_port(port, &lp.key("port"), errs);
                if !egress_ports.insert((port.number, l.bind.clone())) {
                    errs.push(&lp.key("port"), "sidecar: ports on IP bound listeners must be unique");
                }
            }
            None if i + 1 != sc.egress.len() => {
                errs.push(&lp, "sidecar: the egress listener with empty port should be the last listener in the list")
            }
            None => {}
        }
        bind(&l.bind, &lp.key("bind"), errs);
        if l.hosts.is_empty() {
            errs.push(
                &lp.key("hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        for (j, h) in l.hosts.iter().enumerate() {
            errs.check(&lp.key("hosts").index(j), namespace_host(h));
        }
    }
    if let Some(otp) = &sc.outbound_traffic_policy
        && let Some(proxy) = &otp.egress_proxy
    {
        let ep = p.key("outboundTrafficPolicy").key("egressProxy");
        if otp.mode != OutboundMode::AllowAny {
            errs.push(&ep, "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode");
        }
        destination(proxy, &ep, errs);
    }
}

fn listener_port(port: &Port, p: &FieldPath, errs: &mut Errors) {
    errs.check(&p.key("number"), rules::port(port.number));
    if !port.protocol.is_empty() && parse_protocol(&port.protocol).is_none() {
        errs.push(
            &p.key("protocol"),
            format!("unsupported protocol: {}", port.protocol),
        );
    }
}

fn bind(b: &Option<String>, p: &FieldPath, errs: &mut Errors) {
    if let Some(b) = b
        && !b.starts_with("unix://")
        && b.parse::<std::net::IpAddr>().is_err()
    {
        errs.push(
            p,
            format!("sidecar: invalid bind address {b:?}: must be an IP address or unix:// path"),
        );
    }
}

/// Where inbound traffic is forwarded: a loopback/any address with port, or a socket.
fn default_endpoint(ep: &str) -> Result<(), String> {
    if let Some(path) = ep.strip_prefix("unix://") {
        return if path.is_empty() {
            Err("sidecar: empty unix domain socket path".into())
        } else {
            Ok(())
        };
    }
    let (host, port) = ep.rsplit_once(':').ok_or_else(|| {
        format!("sidecar: defaultEndpoint {ep:?} must be IP:PORT or unix:///path")
    })?;
    if !["127.0.0.1", "0.0.0.0", "[::1]", "[::]"].contains(&host) {
        return Err(format!(
            "sidecar: defaultEndpoint {ep:?} must use 127.0.0.1, 0.0.0.0, [::1] or [::]"
        ));
    }
    let n: u32 = port
        .parse()
        .map_err(|_| format!("sidecar: defaultEndpoint {ep:?} has an invalid port"))?;
    rules::port(n)
}

/// `namespace/dnsName` where namespace is `*`, `.`, `~` or a name.
pub(super) fn namespace_host(h: &str) -> Result<(), String> {
    let Some((ns, host)) = h.split_once('/') else {
        return Err(format!(
            "sidecar: host {h:?} must be of form namespace/dnsName"
        ));
    };
    if !["*", ".", "~"].contains(&ns) {
        rules::dns1123_label(ns)
            .map_err(|_| format!("sidecar: invalid namespace {ns:?} in host {h:?}"))?;
    }
    hostname_part(host)
}

/// The dnsName of a `namespace/dnsName` host: `*` or a wildcard FQDN, never a short name.
pub(super) fn hostname_part(host: &str) -> Result<(), String> {
    if host == "*" {
        return Ok(());
    }
    if !host.contains('.') {
        return Err(format!("short names (non FQDN) are not allowed: {host:?}"));
    }
    rules::wildcard_domain(host)
}
