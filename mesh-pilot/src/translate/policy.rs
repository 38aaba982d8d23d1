//! DestinationRule traffic policy: Istio's merge (top level, port level, subset, subset port
//! level) and its mapping onto a cluster's load balancing and connection settings.

use mesh_api::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings,
    OutlierDetection, SimpleLb, TrafficPolicy,
};
use mesh_proto::config::v1::{
    Cluster, HashPolicy, LbPolicy, UpstreamProtocol, UpstreamTls, hash_policy, upstream_tls,
};

use super::resilience;
use crate::registry::Protocol;

/// The policy fields that apply to one cluster after merging.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effective {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<mesh_api::networking::ClientTlsSettings>,
}

/// A policy with its `portLevelSettings` for `port` applied. As Istio documents, a port-level
/// entry does not inherit: it replaces all four fields, unset ones falling back to defaults.
fn at_port(policy: &TrafficPolicy, port: u32) -> Effective {
    let level = policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().is_some_and(|s| s.number == port));
    match level {
        Some(p) => Effective {
            load_balancer: p.load_balancer.clone(),
            connection_pool: p.connection_pool.clone(),
            outlier_detection: p.outlier_detection.clone(),
            tls: p.tls.clone(),
        },
        None => Effective {
            load_balancer: policy.load_balancer.clone(),
            connection_pool: policy.connection_pool.clone(),
            outlier_detection: policy.outlier_detection.clone(),
            tls: policy.tls.clone(),
        },
    }
}

/// Istio's `MergeTrafficPolicy`: the top-level policy at `port`, then each field the subset
/// sets replaces the whole field, then the subset's own port-level entry replaces all four.
pub fn merge(top: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>, port: u32) -> Effective {
    let mut out = top.map(|t| at_port(t, port)).unwrap_or_default();
    let Some(sub) = subset else {
        return out;
    };
    if sub.load_balancer.is_some() {
        out.load_balancer = sub.load_balancer.clone();
    }
    if sub.connection_pool.is_some() {
        out.connection_pool = sub.connection_pool.clone();
    }
    if sub.outlier_detection.is_some() {
        out.outlier_detection = sub.outlier_detection.clone();
    }
    if sub.tls.is_some() {
        out.tls = sub.tls.clone();
    }
    if sub
        .port_level_settings
        .iter()
        .any(|p| p.port.as_ref().is_some_and(|s| s.number == port))
    {
        out = at_port(sub, port);
    }
    out
}

fn ms(d: &mesh_api::Duration) -> u64 {
    u64::try_from(d.as_std().as_millis()).unwrap_or(u64::MAX)
}

/// Fills the policy fields of `cluster` for a port of `protocol`; what the proxy cannot do
/// yet goes to `warnings`, prefixed with `what` (the cluster name).
pub fn apply(
    cluster: &mut Cluster,
    policy: &Effective,
    protocol: Protocol,
    what: &str,
    warnings: &mut Vec<String>,
) {
    // Istio's default balancer is LEAST_REQUEST.
    cluster.lb_policy = LbPolicy::LeastRequest as i32;
    if let Some(lb) = &policy.load_balancer {
        if let Some(ch) = &lb.consistent_hash {
            cluster.lb_policy = if ch.maglev.is_some() {
                LbPolicy::Maglev
            } else {
                LbPolicy::RingHash
            } as i32;
            let key = if let Some(h) = &ch.http_header_name {
                Some(hash_policy::Key::Header(h.clone()))
            } else if let Some(c) = &ch.http_cookie {
                if c.ttl.is_some() || c.path.is_some() {
                    warnings.push(format!(
                        "{what}: consistentHash.httpCookie ttl/path are not supported; the cookie is only read"
                    ));
                }
                Some(hash_policy::Key::Cookie(c.name.clone()))
            } else if let Some(q) = &ch.http_query_parameter_name {
                Some(hash_policy::Key::QueryParameter(q.clone()))
            } else {
                ch.use_source_ip
                    .filter(|b| *b)
                    .map(hash_policy::Key::SourceIp)
            };
            cluster.hash_policy = key.map(|k| HashPolicy { key: Some(k) });
        } else {
            match lb.simple.unwrap_or_default() {
                SimpleLb::RoundRobin => cluster.lb_policy = LbPolicy::RoundRobin as i32,
                SimpleLb::Random => cluster.lb_policy = LbPolicy::Random as i32,
                SimpleLb::LeastRequest | SimpleLb::LeastConn | SimpleLb::Unspecified => {}
                SimpleLb::Passthrough => warnings.push(format!(
                    "{what}: loadBalancer PASSTHROUGH is not supported; using LEAST_REQUEST"
                )),
            }
        }
        if lb.locality_lb_setting.is_some()
            || lb.warmup.is_some()
            || lb.warmup_duration_secs.is_some()
        {
            warnings.push(format!(
                "{what}: localityLbSetting and warmup are not supported yet; ignored"
            ));
        }
    }

    let http = policy
        .connection_pool
        .as_ref()
        .and_then(|c| c.http.as_ref());
    if let Some(tcp) = policy.connection_pool.as_ref().and_then(|c| c.tcp.as_ref()) {
        cluster.connect_timeout_ms = tcp.connect_timeout.as_ref().map(ms).unwrap_or(0);
    }
    if let Some(h) = http {
        cluster.idle_timeout_ms = h.idle_timeout.as_ref().map(ms).unwrap_or(0);
    }
    if let Some(pool) = &policy.connection_pool {
        resilience::connection_pool(cluster, pool, what, warnings);
    }
    cluster.protocol = upstream_protocol(protocol, http) as i32;
    cluster.outlier_detection = policy
        .outlier_detection
        .as_ref()
        .map(resilience::outlier_detection);
    cluster.tls = policy
        .tls
        .as_ref()
        .map(|tls| upstream_tls(tls, what, warnings));
}

/// Istio's automatic SNI for TLS origination (`SIMPLE` / `MUTUAL`) whose DestinationRule
/// names no `sni`: each HTTP request's host is sent (Envoy's `auto_sni`), and the service's
/// host on connections without a request (TCP).
pub fn auto_sni(cluster: &mut Cluster, host: &str) {
    use upstream_tls::Mode;
    let Some(tls) = cluster.tls.as_mut() else {
        return;
    };
    if !matches!(tls.mode(), Mode::Simple | Mode::Mutual) || !tls.sni.is_empty() {
        return;
    }
    tls.auto_sni = true;
    if !host.starts_with('*') {
        tls.sni = host.to_string();
    }
}

/// DestinationRule `tls` (already merged for this cluster) in the proxy's model. No `tls` at
/// any level leaves the cluster on auto mTLS. Fields a mode does not use are dropped with a
/// warning, as Istio ignores them: ISTIO_MUTUAL uses the proxy's own certificate, so file paths
/// do not apply; SIMPLE presents no client certificate.
pub fn upstream_tls(
    tls: &ClientTlsSettings,
    what: &str,
    warnings: &mut Vec<String>,
) -> UpstreamTls {
    use upstream_tls::Mode;
    let mode = match tls.mode {
        ClientTlsMode::Disable => Mode::Disable,
        ClientTlsMode::Simple => Mode::Simple,
        ClientTlsMode::Mutual => Mode::Mutual,
        ClientTlsMode::IstioMutual => Mode::IstioMutual,
    };
    let file = |f: &Option<String>| f.clone().unwrap_or_default();
    let mut out = UpstreamTls {
        mode: mode as i32,
        sni: file(&tls.sni),
        subject_alt_names: tls.subject_alt_names.clone(),
        ca_certificates: file(&tls.ca_certificates),
        client_certificate: file(&tls.client_certificate),
        private_key: file(&tls.private_key),
        insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
        auto_sni: false,
    };
    if tls.credential_name.is_some() {
        // Istio reads credentialName at sidecars only for a DestinationRule with a
        // workloadSelector, through its secret discovery; elsewhere sidecars use the paths.
        // This mesh's proxies load TLS material from files only.
        warnings.push(format!(
            "{what}: tls.credentialName (a Kubernetes Secret) is not supported for sidecars; the proxy uses clientCertificate, privateKey and caCertificates files"
        ));
    }
    if tls.ca_crl.is_some() {
        warnings.push(format!(
            "{what}: tls.caCrl is not supported; revoked server certificates are not detected"
        ));
    }
    match mode {
        Mode::Disable => {
            out = UpstreamTls {
                mode: mode as i32,
                ..Default::default()
            }
        }
        Mode::IstioMutual => {
            out.ca_certificates.clear();
            out.client_certificate.clear();
            out.private_key.clear();
            if out.insecure_skip_verify {
                // The peer's identity is the point of mesh mTLS; never skip its check.
                warnings.push(format!(
                    "{what}: tls.insecureSkipVerify does not apply to ISTIO_MUTUAL; the peer identity is verified"
                ));
                out.insecure_skip_verify = false;
            }
        }
        Mode::Simple => {
            if !out.client_certificate.is_empty() || !out.private_key.is_empty() {
                warnings.push(format!(
                    "{what}: tls mode SIMPLE presents no client certificate; clientCertificate and privateKey are ignored"
                ));
            }
            out.client_certificate.clear();
            out.private_key.clear();
        }
        Mode::Mutual | Mode::Auto => {}
    }
    out
}

/// The upstream protocol: `useClientProtocol` keeps the caller's; `h2UpgradePolicy: UPGRADE`
/// turns HTTP/1.1 into HTTP/2 (Istio's rule); otherwise the port's protocol decides (HTTP2,
/// GRPC, GRPC-WEB: HTTP/2; HTTP: HTTP/1.1; unknown: the caller's).
pub fn upstream_protocol(
    protocol: Protocol,
    http: Option<&mesh_api::networking::HttpSettings>,
) -> UpstreamProtocol {
    if http.and_then(|h| h.use_client_protocol) == Some(true) {
        return UpstreamProtocol::SameAsDownstream;
    }
    let by_port = match protocol {
        Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb => UpstreamProtocol::Http2,
        Protocol::Http | Protocol::HttpProxy => UpstreamProtocol::Http1,
        _ => UpstreamProtocol::SameAsDownstream,
    };
    let upgrade = http
        .and_then(|h| h.h2_upgrade_policy.as_deref())
        .is_some_and(|p| p.eq_ignore_ascii_case("UPGRADE"));
    if upgrade && by_port == UpstreamProtocol::Http1 {
        UpstreamProtocol::Http2
    } else {
        by_port
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::networking::{
        ConsistentHashLb, HttpSettings, Maglev, PortSelector, PortTrafficPolicy, TcpSettings,
    };

    fn lb(simple: SimpleLb) -> Option<LoadBalancerSettings> {
        Some(LoadBalancerSettings {
            simple: Some(simple),
            ..Default::default()
        })
    }

    fn pool(connect_ms: u64) -> Option<ConnectionPoolSettings> {
        Some(ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                connect_timeout: Some(std::time::Duration::from_millis(connect_ms).into()),
                ..Default::default()
            }),
            http: None,
        })
    }

    fn port_level(port: u32, lb_: Option<LoadBalancerSettings>) -> PortTrafficPolicy {
        PortTrafficPolicy {
            port: Some(PortSelector { number: port }),
            load_balancer: lb_,
            ..Default::default()
        }
    }

    #[test]
    fn port_level_replaces_every_field_of_the_top_level() {
        let top = TrafficPolicy {
            load_balancer: lb(SimpleLb::Random),
            connection_pool: pool(100),
            port_level_settings: vec![port_level(9080, lb(SimpleLb::RoundRobin))],
            ..Default::default()
        };
        let at_9080 = merge(Some(&top), None, 9080);
        assert_eq!(at_9080.load_balancer, lb(SimpleLb::RoundRobin));
        assert_eq!(at_9080.connection_pool, None, "port level does not inherit");
        let at_80 = merge(Some(&top), None, 80);
        assert_eq!(at_80.load_balancer, lb(SimpleLb::Random));
        assert_eq!(at_80.connection_pool, pool(100));
    }

    #[test]
    fn subset_fields_override_and_subset_port_level_wins() {
        let top = TrafficPolicy {
            load_balancer: lb(SimpleLb::Random),
            connection_pool: pool(100),
            ..Default::default()
        };
        let sub = TrafficPolicy {
            load_balancer: lb(SimpleLb::RoundRobin),
            ..Default::default()
        };
        let m = merge(Some(&top), Some(&sub), 9080);
        assert_eq!(m.load_balancer, lb(SimpleLb::RoundRobin));
        assert_eq!(m.connection_pool, pool(100), "unset subset fields inherit");

        let sub_port = TrafficPolicy {
            port_level_settings: vec![port_level(9080, lb(SimpleLb::LeastRequest))],
            ..sub.clone()
        };
        let m = merge(Some(&top), Some(&sub_port), 9080);
        assert_eq!(m.load_balancer, lb(SimpleLb::LeastRequest));
        assert_eq!(m.connection_pool, None);
        assert_eq!(
            merge(Some(&top), Some(&sub_port), 80).connection_pool,
            pool(100)
        );
    }

    fn cluster_for(policy: &Effective, protocol: Protocol) -> (Cluster, Vec<String>) {
        let mut c = Cluster::default();
        let mut w = Vec::new();
        apply(&mut c, policy, protocol, "c", &mut w);
        (c, w)
    }

    #[test]
    fn load_balancers() {
        let (c, _) = cluster_for(&Effective::default(), Protocol::Http);
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
        for (simple, want) in [
            (SimpleLb::RoundRobin, LbPolicy::RoundRobin),
            (SimpleLb::Random, LbPolicy::Random),
            (SimpleLb::LeastConn, LbPolicy::LeastRequest),
        ] {
            let p = Effective {
                load_balancer: lb(simple),
                ..Default::default()
            };
            assert_eq!(cluster_for(&p, Protocol::Http).0.lb_policy, want as i32);
        }
        let p = Effective {
            load_balancer: lb(SimpleLb::Passthrough),
            ..Default::default()
        };
        let (c, w) = cluster_for(&p, Protocol::Http);
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn consistent_hash() {
        let hash = |ch: ConsistentHashLb| {
            let p = Effective {
                load_balancer: Some(LoadBalancerSettings {
                    consistent_hash: Some(ch),
                    ..Default::default()
                }),
                ..Default::default()
            };
            cluster_for(&p, Protocol::Http).0
        };
        let c = hash(ConsistentHashLb {
            http_header_name: Some("x-user".into()),
            ..Default::default()
        });
        assert_eq!(c.lb_policy, LbPolicy::RingHash as i32);
        assert_eq!(
            c.hash_policy.unwrap().key,
            Some(hash_policy::Key::Header("x-user".into()))
        );
        let c = hash(ConsistentHashLb {
            use_source_ip: Some(true),
            maglev: Some(Maglev::default()),
            ..Default::default()
        });
        assert_eq!(c.lb_policy, LbPolicy::Maglev as i32);
        assert_eq!(
            c.hash_policy.unwrap().key,
            Some(hash_policy::Key::SourceIp(true))
        );
        let c = hash(ConsistentHashLb {
            http_query_parameter_name: Some("u".into()),
            ..Default::default()
        });
        assert_eq!(
            c.hash_policy.unwrap().key,
            Some(hash_policy::Key::QueryParameter("u".into()))
        );
    }

    fn tls(mode: ClientTlsMode) -> Option<ClientTlsSettings> {
        Some(ClientTlsSettings {
            mode,
            ..Default::default()
        })
    }

    fn mode_of(e: &Effective) -> Option<upstream_tls::Mode> {
        cluster_for(e, Protocol::Http).0.tls.map(|t| t.mode())
    }

    #[test]
    fn tls_merge_follows_istio() {
        use upstream_tls::Mode;
        let top = TrafficPolicy {
            tls: tls(ClientTlsMode::IstioMutual),
            port_level_settings: vec![
                // A port-level entry without tls replaces it with none: auto mTLS there.
                port_level(9000, lb(SimpleLb::Random)),
                PortTrafficPolicy {
                    port: Some(PortSelector { number: 9443 }),
                    tls: tls(ClientTlsMode::Simple),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(mode_of(&merge(None, None, 80)), None, "no tls: auto mTLS");
        assert_eq!(
            mode_of(&merge(Some(&top), None, 80)),
            Some(Mode::IstioMutual)
        );
        assert_eq!(mode_of(&merge(Some(&top), None, 9000)), None);
        assert_eq!(mode_of(&merge(Some(&top), None, 9443)), Some(Mode::Simple));

        let subset = TrafficPolicy {
            tls: tls(ClientTlsMode::Disable),
            port_level_settings: vec![PortTrafficPolicy {
                port: Some(PortSelector { number: 8443 }),
                tls: tls(ClientTlsMode::Mutual),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            mode_of(&merge(Some(&top), Some(&subset), 80)),
            Some(Mode::Disable),
            "subset tls overrides the top level"
        );
        assert_eq!(
            mode_of(&merge(Some(&top), Some(&subset), 8443)),
            Some(Mode::Mutual),
            "subset port level wins"
        );
        // A subset without tls inherits the top level (at this port).
        let plain_subset = TrafficPolicy {
            load_balancer: lb(SimpleLb::RoundRobin),
            ..Default::default()
        };
        assert_eq!(
            mode_of(&merge(Some(&top), Some(&plain_subset), 80)),
            Some(Mode::IstioMutual)
        );
        assert_eq!(
            mode_of(&merge(Some(&top), Some(&plain_subset), 9443)),
            Some(Mode::Simple)
        );
    }

    #[test]
    fn tls_fields_per_mode() {
        use upstream_tls::Mode;
        let full = ClientTlsSettings {
            mode: ClientTlsMode::Mutual,
            client_certificate: Some("/certs/client.pem".into()),
            private_key: Some("/certs/key.pem".into()),
            ca_certificates: Some("/certs/ca.pem".into()),
            subject_alt_names: vec!["db.example.com".into()],
            sni: Some("db.example.com".into()),
            insecure_skip_verify: Some(true),
            ..Default::default()
        };
        let mut w = Vec::new();
        let m = upstream_tls(&full, "c", &mut w);
        assert_eq!(m.mode(), Mode::Mutual);
        assert_eq!(m.client_certificate, "/certs/client.pem");
        assert_eq!(m.private_key, "/certs/key.pem");
        assert_eq!(m.ca_certificates, "/certs/ca.pem");
        assert_eq!(m.subject_alt_names, ["db.example.com"]);
        assert_eq!(m.sni, "db.example.com");
        assert!(m.insecure_skip_verify);
        assert!(w.is_empty(), "{w:?}");

        let simple = upstream_tls(
            &ClientTlsSettings {
                mode: ClientTlsMode::Simple,
                ..full.clone()
            },
            "c",
            &mut w,
        );
        assert_eq!(simple.mode(), Mode::Simple);
        assert_eq!(simple.ca_certificates, "/certs/ca.pem");
        assert!(simple.client_certificate.is_empty() && simple.private_key.is_empty());
        assert_eq!(w.len(), 1, "{w:?}");

        let mut w = Vec::new();
        let istio = upstream_tls(
            &ClientTlsSettings {
                mode: ClientTlsMode::IstioMutual,
                subject_alt_names: vec!["spiffe://cluster.local/ns/db/sa/pg".into()],
                sni: Some("outbound_.5432_._.db".into()),
                insecure_skip_verify: Some(true),
                ..Default::default()
            },
            "c",
            &mut w,
        );
        assert_eq!(istio.mode(), Mode::IstioMutual);
        assert_eq!(
            istio.subject_alt_names,
            ["spiffe://cluster.local/ns/db/sa/pg"]
        );
        assert_eq!(istio.sni, "outbound_.5432_._.db");
        assert!(
            !istio.insecure_skip_verify,
            "mesh identity is always checked"
        );
        assert_eq!(w.len(), 1);

        let off = upstream_tls(
            &ClientTlsSettings {
                mode: ClientTlsMode::Disable,
                ..full
            },
            "c",
            &mut Vec::new(),
        );
        assert_eq!(
            off,
            UpstreamTls {
                mode: Mode::Disable as i32,
                ..Default::default()
            }
        );
    }

    #[test]
    fn tls_unsupported_fields_are_reported() {
        let mut w = Vec::new();
        let m = upstream_tls(
            &ClientTlsSettings {
                mode: ClientTlsMode::Mutual,
                credential_name: Some("client-credential".into()),
                ca_crl: Some("/certs/crl.pem".into()),
                ..Default::default()
            },
            "outbound|443||db",
            &mut w,
        );
        assert_eq!(m.mode(), upstream_tls::Mode::Mutual);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("credentialName") && w[0].starts_with("outbound|443||db"));
        assert!(w[1].contains("caCrl"));
    }

    #[test]
    fn timeouts_and_protocols() {
        let p = Effective {
            connection_pool: Some(ConnectionPoolSettings {
                tcp: Some(TcpSettings {
                    connect_timeout: Some(std::time::Duration::from_millis(250).into()),
                    ..Default::default()
                }),
                http: Some(HttpSettings {
                    idle_timeout: Some(std::time::Duration::from_secs(30).into()),
                    h2_upgrade_policy: Some("UPGRADE".into()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let (c, _) = cluster_for(&p, Protocol::Http);
        assert_eq!(c.connect_timeout_ms, 250);
        assert_eq!(c.idle_timeout_ms, 30_000);
        assert_eq!(c.protocol, UpstreamProtocol::Http2 as i32);

        let proto = |p| upstream_protocol(p, None);
        assert_eq!(proto(Protocol::Grpc), UpstreamProtocol::Http2);
        assert_eq!(proto(Protocol::Http2), UpstreamProtocol::Http2);
        assert_eq!(proto(Protocol::Http), UpstreamProtocol::Http1);
        assert_eq!(proto(Protocol::Unknown), UpstreamProtocol::SameAsDownstream);
        let client = HttpSettings {
            use_client_protocol: Some(true),
            ..Default::default()
        };
        assert_eq!(
            upstream_protocol(Protocol::Grpc, Some(&client)),
            UpstreamProtocol::SameAsDownstream
        );
    }
}
