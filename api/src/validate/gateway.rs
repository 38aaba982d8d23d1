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

/// What the mesh's gateway does not implement in a valid Gateway: each field is named with
/// what happens instead (the server is skipped, or the field has no effect). Istio accepts
/// these, so they are warnings, not errors; pilot reports the same at translation.
pub fn unsupported(gw: &Gateway, p: &FieldPath, out: &mut Errors) {
    for (i, s) in gw.servers.iter().enumerate() {
        let sp = p.key("servers").index(i);
        let protocol = s
            .port
            .as_ref()
            .and_then(|port| parse_protocol(&port.protocol));
        if let Some(proto) = protocol
            && !matches!(proto, "HTTP" | "HTTP2" | "GRPC" | "HTTPS" | "TLS")
        {
            out.push(
                &sp.key("port").key("protocol"),
                format!(
                    "{proto} servers are not supported by the gateway (HTTP, HTTP2, GRPC, HTTPS and TLS are); the server is skipped"
                ),
            );
        }
        if s.port
            .as_ref()
            .is_some_and(|port| port.target_port.is_some())
        {
            out.push(
                &sp.key("port").key("targetPort"),
                "ignored: the gateway listens on the server port, mapped to a local port by its deployment (mesh-proxy --gateway-port)",
            );
        }
        if s.default_endpoint.is_some() {
            out.push(
                &sp.key("defaultEndpoint"),
                "not supported by the gateway (it proxies, it does not forward to a local endpoint); ignored",
            );
        }
        if s.bind.as_deref().is_some_and(|b| b.starts_with("unix://")) {
            out.push(
                &sp.key("bind"),
                "unix domain socket binds are not supported; the server is skipped",
            );
        }
        let Some(t) = &s.tls else { continue };
        let tp = sp.key("tls");
        let secure = matches!(protocol, Some("HTTPS" | "TLS"));
        if !secure {
            continue;
        }
        match t.mode {
            ServerTlsMode::AutoPassthrough => out.push(
                &tp.key("mode"),
                format!(
                    "{} is not supported by the gateway (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL and PASSTHROUGH are); the server is skipped",
                    mode_name(t.mode)
                ),
            ),
            // Mesh mTLS terminated for HTTP routes only (an egress gateway's HTTPS server).
            ServerTlsMode::IstioMutual if protocol == Some("TLS") => out.push(
                &tp.key("mode"),
                "ISTIO_MUTUAL on a TLS server (TCP routes after mesh mTLS) is not supported; use protocol HTTPS; the server is skipped",
            ),
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
                if protocol == Some("TLS") =>
            {
                out.push(
                    &tp.key("mode"),
                    "TLS termination for TCP routes (protocol TLS with a terminating mode) is not supported; the server is skipped",
                )
            }
            _ => {}
        }
        let terminating = matches!(
            t.mode,
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
        );
        let files = t.server_certificate.is_some() && t.private_key.is_some();
        match (terminating, t.credential(), t.credential_secret()) {
            (_, None, _) => {}
            (false, Some(_), _) => out.push(
                &tp.key("credentialName"),
                "ignored: the server does not terminate TLS",
            ),
            (true, Some(raw), None) => out.push(
                &tp.key("credentialName"),
                if files {
                    format!(
                        "{raw:?} does not name a Secret (a DNS-1123 name, optionally kubernetes://NAME); ignored, the certificate comes from serverCertificate and privateKey"
                    )
                } else {
                    format!(
                        "{raw:?} does not name a Secret (a DNS-1123 name, optionally kubernetes://NAME); the server is skipped"
                    )
                },
            ),
            (true, Some(_), Some(secret)) => {
                if t.server_certificate.is_some()
                    || t.private_key.is_some()
                    || t.ca_certificates.is_some()
                {
                    out.push(
                        &tp.key("serverCertificate"),
                        format!(
                            "ignored with credentialName: the certificate comes from {secret}/tls.crt and {secret}/tls.key in the gateway's --credential-dir"
                        ),
                    );
                }
                let extra = if t.credential_name.is_some() {
                    t.credential_names.len()
                } else {
                    t.credential_names.len().saturating_sub(1)
                };
                if extra > 0 {
                    out.push(
                        &tp.key("credentialNames"),
                        format!(
                            "one certificate per server: only {secret:?} is served, {extra} more ignored"
                        ),
                    );
                }
            }
        }
        let ignored = [
            ("caCrl", t.ca_crl.is_some()),
            ("subjectAltNames", !t.subject_alt_names.is_empty()),
            (
                "verifyCertificateSpki",
                !t.verify_certificate_spki.is_empty(),
            ),
            (
                "verifyCertificateHash",
                !t.verify_certificate_hash.is_empty(),
            ),
            ("minProtocolVersion", t.min_protocol_version.is_some()),
            ("maxProtocolVersion", t.max_protocol_version.is_some()),
            ("cipherSuites", !t.cipher_suites.is_empty()),
        ];
        for (field, set) in ignored {
            if set {
                out.push(
                    &tp.key(field),
                    "not supported by the gateway; ignored (TLS 1.2 and 1.3 with rustls' default suites, client certificates checked against caCertificates only)",
                );
            }
        }
    }
}

fn mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(yaml: &str) -> Vec<(String, String)> {
        let gw: Gateway = serde_saphyr::from_str(yaml).unwrap();
        crate::validate::gateway_warnings(&gw)
    }

    #[test]
    fn implemented_servers_have_no_warning() {
        let w = warnings(
            "
selector: {istio: ingressgateway}
servers:
- port: {number: 80, name: http, protocol: HTTP}
  hosts: ['*']
  tls: {httpsRedirect: true}
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: [a.example.com]
  tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}
- port: {number: 8443, name: tls, protocol: TLS}
  hosts: [db.example.com]
  tls: {mode: PASSTHROUGH}
",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn unimplemented_fields_are_named() {
        let w = warnings(
            "
servers:
- port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  hosts: ['*']
  defaultEndpoint: 127.0.0.1:8080
- port: {number: 81, name: tcp, protocol: TCP}
  hosts: ['*']
  bind: unix:///var/run/gw.sock
- port: {number: 443, name: tls-mesh, protocol: TLS}
  hosts: ['*']
  tls: {mode: ISTIO_MUTUAL}
- port: {number: 444, name: tls, protocol: TLS}
  hosts: ['*']
  tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384]}
",
        );
        let fields: Vec<&str> = w.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.servers[0].port.targetPort",
                "spec.servers[0].defaultEndpoint",
                "spec.servers[1].port.protocol",
                "spec.servers[1].bind",
                "spec.servers[2].tls.mode",
                "spec.servers[3].tls.mode",
                "spec.servers[3].tls.cipherSuites",
            ]
        );
    }
}
