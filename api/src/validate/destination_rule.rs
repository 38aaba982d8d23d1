//! DestinationRule rules (Istio `validateDestinationRule`).

use std::collections::HashSet;

use super::Errors;
use super::rules;
use crate::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule,
    LoadBalancerSettings, OutlierDetection, PortTrafficPolicy, TrafficPolicy,
};
use crate::path::FieldPath;

pub fn validate(dr: &DestinationRule, p: &FieldPath, errs: &mut Errors) {
    if dr.host.is_empty() {
        errs.push(&p.key("host"), "host is required");
    } else {
        errs.check(&p.key("host"), rules::wildcard_domain(&dr.host));
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(tp, &p.key("trafficPolicy"), errs);
    }
    let mut names = HashSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let sp = p.key("subsets").index(i);
        if s.name.is_empty() {
            errs.push(&sp.key("name"), "subset name cannot be empty");
        } else {
            errs.check(
                &sp.key("name"),
                rules::dns1123_label(&s.name)
                    .map_err(|_| format!("subset name {:?} is invalid", s.name)),
            );
        }
        if !names.insert(&s.name) {
            errs.push(
                &sp.key("name"),
                format!("duplicate subset names: {}", s.name),
            );
        }
        rules::labels(&s.labels, &sp.key("labels"), errs);
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(tp, &sp.key("trafficPolicy"), errs);
        }
    }
    rules::export_to(&dr.export_to, &p.key("exportTo"), errs);
    if let Some(ws) = &dr.workload_selector {
        selector_labels(&ws.labels, &p.key("workloadSelector").key("labels"), errs);
    }
}

/// Workload selectors match exact label values: no wildcards.
pub(super) fn selector_labels(
    labels: &std::collections::BTreeMap<String, String>,
    p: &FieldPath,
    errs: &mut Errors,
) {
    for (k, v) in labels {
        if k.contains('*') || v.contains('*') {
            errs.push(&p.key(k), "wildcard is not supported in selector");
        }
    }
    rules::labels(labels, p, errs);
}

fn traffic_policy(tp: &TrafficPolicy, p: &FieldPath, errs: &mut Errors) {
    let empty = tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none();
    if empty {
        errs.push(p, "traffic policy must have at least one field");
    }
    settings(
        &tp.load_balancer,
        &tp.connection_pool,
        &tp.outlier_detection,
        &tp.tls,
        p,
        errs,
    );
    let mut ports = HashSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        port_level(pl, &p.key("portLevelSettings").index(i), &mut ports, errs);
    }
}

fn port_level(pl: &PortTrafficPolicy, p: &FieldPath, seen: &mut HashSet<u32>, errs: &mut Errors) {
    let empty = pl.load_balancer.is_none()
        && pl.connection_pool.is_none()
        && pl.outlier_detection.is_none()
        && pl.tls.is_none();
    if empty {
        errs.push(p, "port traffic policy must have at least one field");
    }
    match &pl.port {
        None => errs.push(&p.key("port"), "port must be specified"),
        Some(port) => {
            errs.check(&p.key("port").key("number"), rules::port(port.number));
            if !seen.insert(port.number) {
                errs.push(
                    &p.key("port").key("number"),
                    format!("duplicate port {} in portLevelSettings", port.number),
                );
            }
        }
    }
    settings(
        &pl.load_balancer,
        &pl.connection_pool,
        &pl.outlier_detection,
        &pl.tls,
        p,
        errs,
    );
}

fn settings(
    lb: &Option<LoadBalancerSettings>,
    pool: &Option<ConnectionPoolSettings>,
    od: &Option<OutlierDetection>,
    tls: &Option<ClientTlsSettings>,
    p: &FieldPath,
    errs: &mut Errors,
) {
    if let Some(lb) = lb {
        load_balancer(lb, &p.key("loadBalancer"), errs);
    }
    if let Some(cp) = pool {
        connection_pool(cp, &p.key("connectionPool"), errs);
    }
    if let Some(od) = od {
        outlier(od, &p.key("outlierDetection"), errs);
    }
    if let Some(t) = tls {
        client_tls(t, &p.key("tls"), errs);
    }
}

fn load_balancer(lb: &LoadBalancerSettings, p: &FieldPath, errs: &mut Errors) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        errs.push(p, "only one of simple or consistentHash may be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        let cp = p.key("consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|b| **b).count() > 1 {
            errs.push(&cp, "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set");
        }
        if let Some(c) = &ch.http_cookie
            && c.name.is_empty()
        {
            errs.push(
                &cp.key("httpCookie").key("name"),
                "name required for HttpCookie",
            );
        }
        if let Some(c) = &ch.http_cookie
            && c.ttl.is_none()
        {
            errs.push(
                &cp.key("httpCookie").key("ttl"),
                "ttl required for HttpCookie",
            );
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            errs.push(&cp, "only one of ringHash or maglev may be set");
        }
        if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
            errs.push(
                &cp.key("minimumRingSize"),
                "minimumRingSize is deprecated; it cannot be combined with ringHash or maglev",
            );
        }
    }
    if let Some(w) = &lb.warmup {
        let wp = p.key("warmup");
        match &w.duration {
            None => errs.push(&wp.key("duration"), "duration is required"),
            Some(d) => errs.check(&wp.key("duration"), rules::duration(d)),
        }
        if let Some(mp) = w.minimum_percent
            && !(0.0..=100.0).contains(&mp)
        {
            errs.push(
                &wp.key("minimumPercent"),
                format!("invalid value {mp}: must be between 0 and 100"),
            );
        }
        if let Some(a) = w.aggression
            && a < 1.0
        {
            errs.push(
                &wp.key("aggression"),
                format!("invalid value {a}: must be at least 1"),
            );
        }
    }
    rules::opt_duration(&lb.warmup_duration_secs, &p.key("warmupDurationSecs"), errs);
}

fn non_negative(v: Option<i32>, p: &FieldPath, errs: &mut Errors) {
    if let Some(v) = v
        && v < 0
    {
        errs.push(p, format!("{v} must not be negative"));
    }
}

fn connection_pool(cp: &ConnectionPoolSettings, p: &FieldPath, errs: &mut Errors) {
    if cp.tcp.is_none() && cp.http.is_none() {
        errs.push(p, "must set either tcp or http settings");
    }
    if let Some(t) = &cp.tcp {
        let tp = p.key("tcp");
        non_negative(t.max_connections, &tp.key("maxConnections"), errs);
        rules::opt_duration(&t.connect_timeout, &tp.key("connectTimeout"), errs);
        rules::opt_duration(
            &t.max_connection_duration,
            &tp.key("maxConnectionDuration"),
            errs,
        );
        rules::opt_duration(&t.idle_timeout, &tp.key("idleTimeout"), errs);
        if let Some(ka) = &t.tcp_keepalive {
            rules::opt_duration(&ka.time, &tp.key("tcpKeepalive").key("time"), errs);
            rules::opt_duration(&ka.interval, &tp.key("tcpKeepalive").key("interval"), errs);
        }
    }
    if let Some(h) = &cp.http {
        let hp = p.key("http");
        non_negative(
            h.http1_max_pending_requests,
            &hp.key("http1MaxPendingRequests"),
            errs,
        );
        non_negative(h.http2_max_requests, &hp.key("http2MaxRequests"), errs);
        non_negative(
            h.max_requests_per_connection,
            &hp.key("maxRequestsPerConnection"),
            errs,
        );
        non_negative(h.max_retries, &hp.key("maxRetries"), errs);
        non_negative(
            h.max_concurrent_streams,
            &hp.key("maxConcurrentStreams"),
            errs,
        );
        rules::opt_duration(&h.idle_timeout, &hp.key("idleTimeout"), errs);
        if let Some(u) = &h.h2_upgrade_policy
            && !["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"].contains(&u.as_str())
        {
            errs.push(
                &hp.key("h2UpgradePolicy"),
                format!("unsupported value {u:?}: expected DEFAULT, DO_NOT_UPGRADE or UPGRADE"),
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            rules::opt_duration(
                &ka.interval,
                &hp.key("http2KeepAlive").key("interval"),
                errs,
            );
            rules::opt_duration(&ka.timeout, &hp.key("http2KeepAlive").key("timeout"), errs);
        }
    }
}

fn outlier(od: &OutlierDetection, p: &FieldPath, errs: &mut Errors) {
    non_negative(od.consecutive_errors, &p.key("consecutiveErrors"), errs);
    rules::opt_duration(&od.interval, &p.key("interval"), errs);
    rules::opt_duration(&od.base_ejection_time, &p.key("baseEjectionTime"), errs);
    for (name, v) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(v) = v
            && !(0..=100).contains(&v)
        {
            errs.push(&p.key(name), format!("{name} must be between 0 and 100"));
        }
    }
}

fn client_tls(t: &ClientTlsSettings, p: &FieldPath, errs: &mut Errors) {
    let has_files =
        t.client_certificate.is_some() || t.private_key.is_some() || t.ca_certificates.is_some();
    match t.mode {
        ClientTlsMode::IstioMutual => {
            if has_files || t.credential_name.is_some() {
                errs.push(p, "cannot specify client certificates, CA certificate or credentialName with ISTIO_MUTUAL");
            }
        }
        ClientTlsMode::Mutual if t.credential_name.is_none() => {
            if t.client_certificate.is_none() {
                errs.push(
                    &p.key("clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if t.private_key.is_none() {
                errs.push(&p.key("privateKey"), "private key required for mutual tls");
            }
        }
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {
            if t.credential_name.is_some() && has_files {
                errs.push(
                    p,
                    "cannot specify both credentialName and certificate files",
                );
            }
        }
        ClientTlsMode::Disable => {}
    }
    for (i, san) in t.subject_alt_names.iter().enumerate() {
        if san.is_empty() {
            errs.push(
                &p.key("subjectAltNames").index(i),
                "subject alt name cannot be empty",
            );
        }
    }
}
