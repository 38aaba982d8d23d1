//! Gateway rules (Istio `validateGateway`).

use std::collections::HashSet;

use super::Errors;
use super::rules;
use crate::networking::{Gateway, ServerTlsMode, ServerTlsSettings, parse_protocol};
use crate::path::FieldPath;

pub fn validate(gw: &Gateway, p: &FieldPath, errs: &mut Errors) {
    if gw.servers.is_empty() {
        errs.push(&p.key("servers"), "gateway must have at least one server");
    }
    rules::labels(&gw.selector, &p.key("selector"), errs);
    let mut names = HashSet::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let sp = p.key("servers").index(i);
        let protocol = match &s.port {
            None => {
                errs.push(&sp.key("port"), "port is required");
                None
            }
            Some(port) => {
                let pp = sp.key("port");
                errs.check(&pp.key("number"), rules::port(port.number));
                if port.protocol.is_empty() {
                    errs.push(&pp.key("protocol"), "protocol is required");
                }
                if port.name.is_empty() {
                    errs.push(&pp.key("name"), "port name must be set");
                }
                let proto = parse_protocol(&port.protocol);
                if !port.protocol.is_empty() && proto.is_none() {
                    errs.push(
                        &pp.key("protocol"),
                        format!("unsupported protocol: {}", port.protocol),
                    );
                }
                if !port.name.is_empty() && !names.insert(port.name.clone()) {
                    errs.push(
                        &pp.key("name"),
                        format!(
                            "port names in servers must be unique: duplicate name {}",
                            port.name
                        ),
                    );
                }
                proto
            }
        };
        if s.hosts.is_empty() {
            errs.push(
                &sp.key("hosts"),
                "server config must contain at least one host",
            );
        }
        for (j, h) in s.hosts.iter().enumerate() {
            errs.check(&sp.key("hosts").index(j), gateway_host(h));
        }
        if let Some(b) = &s.bind
            && !b.starts_with("unix://")
            && b.parse::<std::net::IpAddr>().is_err()
        {
            errs.push(&sp.key("bind"), format!("invalid bind address {b:?}"));
        }
        let secure = matches!(protocol, Some("HTTPS" | "TLS"));
        let http = matches!(protocol, Some("HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB"));
        match &s.tls {
            None if secure => errs.push(
                &sp.key("tls"),
                "server must have TLS settings for HTTPS/TLS protocols",
            ),
            // A plain HTTP server may only carry `httpsRedirect`.
            Some(t) if http && !secure => {
                let redirect_only = t.server_certificate.is_none()
                    && t.private_key.is_none()
                    && t.ca_certificates.is_none()
                    && t.credential_name.is_none();
                if !redirect_only {
                    errs.push(
                        &sp.key("tls"),
                        "server cannot have TLS settings for plain text HTTP ports",
                    );
                }
            }
            Some(_) if protocol.is_some() && !secure => errs.push(
                &sp.key("tls"),
                "server cannot have TLS settings for non HTTPS/TLS ports",
            ),
            Some(t) => server_tls(t, &sp.key("tls"), errs),
            None => {}
        }
    }
}

/// `[namespace/]dnsName`, where the name may be a wildcard.
fn gateway_host(h: &str) -> Result<(), String> {
    let host = match h.split_once('/') {
        Some((ns, host)) => {
            if !["*", "."].contains(&ns) {
                rules::dns1123_label(ns)
                    .map_err(|_| format!("invalid namespace {ns:?} in host {h:?}"))?;
            }
            host
        }
        None => h,
    };
    // Gateways also accept an IP as host.
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    super::sidecar::hostname_part(host)
}

fn server_tls(t: &ServerTlsSettings, p: &FieldPath, errs: &mut Errors) {
    if t.https_redirect == Some(true)
        && t.server_certificate.is_none()
        && t.credential_name.is_none()
    {
        return;
    }
    let has_cred = t.credential_name.is_some() || !t.credential_names.is_empty();
    match t.mode {
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if !has_cred {
                if t.server_certificate.is_none() {
                    errs.push(
                        &p.key("serverCertificate"),
                        "SIMPLE TLS requires a server certificate or credentialName",
                    );
                }
                if t.private_key.is_none() {
                    errs.push(
                        &p.key("privateKey"),
                        "SIMPLE TLS requires a private key or credentialName",
                    );
                }
                if t.mode != ServerTlsMode::Simple && t.ca_certificates.is_none() {
                    errs.push(
                        &p.key("caCertificates"),
                        "MUTUAL TLS requires client CA bundle or credentialName",
                    );
                }
            }
        }
        ServerTlsMode::IstioMutual => {
            if has_cred
                || t.server_certificate.is_some()
                || t.private_key.is_some()
                || t.ca_certificates.is_some()
            {
                errs.push(
                    p,
                    "ISTIO_MUTUAL TLS cannot have associated certificates or credentialName",
                );
            }
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {}
    }
}
