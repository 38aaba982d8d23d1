//! VirtualService rules (Istio `validateVirtualService`).

use std::collections::BTreeMap;

use super::Errors;
use super::rules;
use crate::networking::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpFaultInjection, HttpMatchRequest,
    HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, L4MatchAttributes, RetryOnEntry,
    RouteDestination, StringMatch, TcpRoute, TlsRoute, VirtualService,
};
use crate::path::FieldPath;

pub fn validate(vs: &VirtualService, p: &FieldPath, errs: &mut Errors) {
    let delegate = vs.hosts.is_empty();
    let bound_to_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    if delegate {
        if !vs.gateways.is_empty() {
            errs.push(
                &p.key("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if !vs.tls.is_empty() {
            errs.push(
                &p.key("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if !vs.tcp.is_empty() {
            errs.push(
                &p.key("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    let bound_to_gateway = vs.gateways.iter().any(|g| g != "mesh");
    for (i, host) in vs.hosts.iter().enumerate() {
        let hp = p.key("hosts").index(i);
        if host == "*" && bound_to_mesh {
            errs.push(
                &hp,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
        } else if host.parse::<std::net::IpAddr>().is_err() {
            errs.check(&hp, rules::wildcard_domain(host));
        }
    }
    for (i, g) in vs.gateways.iter().enumerate() {
        errs.check(&p.key("gateways").index(i), rules::gateway_name(g));
    }
    // `*.foo.com` and `a.foo.com` overlap just like two equal hosts.
    for (i, a) in vs.hosts.iter().enumerate() {
        for b in &vs.hosts[i + 1..] {
            if host_covers(a, b) || host_covers(b, a) {
                errs.push(
                    &p.key("hosts"),
                    format!("duplicate hosts in virtual service: {a} & {b}"),
                );
            }
        }
    }
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        errs.push(p, "http, tcp or tls must be provided in virtual service");
    }
    for (i, r) in vs.http.iter().enumerate() {
        if r.delegate.is_some() && !bound_to_gateway {
            errs.push(
                &p.key("http").index(i).key("delegate"),
                "http delegate only applies to gateway",
            );
        }
        http_route(r, delegate, &p.key("http").index(i), errs);
    }
    for (i, r) in vs.tls.iter().enumerate() {
        tls_route(r, &vs.hosts, &p.key("tls").index(i), errs);
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        tcp_route(r, &p.key("tcp").index(i), errs);
    }
    rules::export_to(&vs.export_to, &p.key("exportTo"), errs);
}

fn http_route(r: &HttpRoute, in_delegate: bool, p: &FieldPath, errs: &mut Errors) {
    let has_route = !r.route.is_empty();
    if !has_route && r.redirect.is_none() && r.direct_response.is_none() && r.delegate.is_none() {
        errs.push(
            p,
            "HTTP route, redirect, direct response or delegate is required",
        );
    }
    if has_route && r.redirect.is_some() {
        errs.push(p, "HTTP route cannot contain both route and redirect");
    }
    if r.direct_response.is_some() && (has_route || r.redirect.is_some()) {
        errs.push(
            &p.key("directResponse"),
            "directResponse cannot be combined with route or redirect",
        );
    }
    if r.rewrite.is_some() && r.redirect.is_some() {
        errs.push(
            p,
            "HTTP route rule cannot contain both rewrite and redirect",
        );
    }
    if r.fault.is_some() && r.redirect.is_some() {
        errs.push(p, "HTTP route cannot contain both fault and redirect");
    }
    if let Some(d) = &r.delegate {
        if in_delegate {
            errs.push(
                &p.key("delegate"),
                "delegate virtual service cannot have delegate",
            );
        }
        if has_route || r.redirect.is_some() {
            errs.push(
                &p.key("delegate"),
                "HTTP route cannot contain both delegate and route or redirect",
            );
        }
        if d.name.is_empty() {
            errs.push(&p.key("delegate").key("name"), "delegate name is required");
        }
    }
    for (i, m) in r.matches.iter().enumerate() {
        http_match(m, &p.key("match").index(i), errs);
    }
    weights(r.route.iter().map(|d| d.weight), &p.key("route"), errs);
    for (i, d) in r.route.iter().enumerate() {
        let dp = p.key("route").index(i);
        destination(&d.destination, &dp.key("destination"), errs);
        if let Some(h) = &d.headers {
            headers(h, &dp.key("headers"), errs);
        }
    }
    if let Some(rd) = &r.redirect {
        redirect(rd, &p.key("redirect"), errs);
    }
    if let Some(dr) = &r.direct_response {
        if !(200..=599).contains(&dr.status) {
            errs.push(
                &p.key("directResponse").key("status"),
                format!("invalid status {}: must be between 200 and 599", dr.status),
            );
        }
        if let Some(b) = &dr.body
            && b.string.is_some()
            && b.bytes.is_some()
        {
            errs.push(
                &p.key("directResponse").key("body"),
                "only one of string or bytes may be set",
            );
        }
        if let Some(bytes) = dr.body.as_ref().and_then(|b| b.bytes.as_deref())
            && !rules::is_base64(bytes)
        {
            errs.push(
                &p.key("directResponse").key("body").key("bytes"),
                "not base64 (the standard or URL-safe alphabet, padding optional)",
            );
        }
    }
    if let Some(rw) = &r.rewrite {
        rewrite(rw, &p.key("rewrite"), errs);
    }
    rules::opt_duration(&r.timeout, &p.key("timeout"), errs);
    if let Some(rt) = &r.retries {
        retries(rt, &p.key("retries"), errs);
    }
    if let Some(f) = &r.fault {
        fault(f, &p.key("fault"), errs);
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        errs.push(&p.key("mirrors"), "cannot specify both mirror and mirrors");
    }
    if let Some(m) = &r.mirror {
        destination(m, &p.key("mirror"), errs);
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let mp = p.key("mirrors").index(i);
        destination(&m.destination, &mp.key("destination"), errs);
        if let Some(pc) = &m.percentage {
            errs.check(
                &mp.key("percentage").key("value"),
                rules::percentage(pc.value),
            );
        }
    }
    if let Some(pc) = r.mirror_percent
        && pc > 100
    {
        errs.push(
            &p.key("mirrorPercent"),
            format!("mirror percent {pc} must be between 0 and 100"),
        );
    }
    if let Some(pc) = &r.mirror_percentage {
        errs.check(
            &p.key("mirrorPercentage").key("value"),
            rules::percentage(pc.value),
        );
    }
    if let Some(c) = &r.cors_policy {
        cors(c, &p.key("corsPolicy"), errs);
    }
    if let Some(h) = &r.headers {
        headers(h, &p.key("headers"), errs);
    }
}

/// Each weight in 0..=100; with several destinations they must add up to 100.
fn weights(ws: impl Iterator<Item = i32> + Clone, p: &FieldPath, errs: &mut Errors) {
    let count = ws.clone().count();
    let mut total: i64 = 0;
    for (i, w) in ws.enumerate() {
        if !(0..=100).contains(&w) {
            errs.push(&p.index(i).key("weight"), "must be between 0 and 100");
        }
        total += i64::from(w);
    }
    if count > 1 && total != 100 {
        errs.push(p, format!("total destination weight {total} != 100"));
    }
}

pub(super) fn destination(d: &Destination, p: &FieldPath, errs: &mut Errors) {
    if d.host.is_empty() {
        errs.push(&p.key("host"), "destination host is required");
    } else if d.host == "*" {
        errs.push(
            &p.key("host"),
            format!("invalid destination host {}", d.host),
        );
    } else {
        errs.check(&p.key("host"), rules::wildcard_domain(&d.host));
    }
    if let Some(s) = &d.subset {
        errs.check(
            &p.key("subset"),
            rules::dns1123_label(s).map_err(|_| format!("subset name {s:?} is invalid")),
        );
    }
    if let Some(port) = &d.port {
        errs.check(&p.key("port").key("number"), rules::port(port.number));
    }
}

pub(super) fn string_match(m: &StringMatch, p: &FieldPath, errs: &mut Errors) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .into_iter()
        .filter(|b| *b)
        .count();
    if set > 1 {
        errs.push(p, "only one of exact, prefix or regex may be set");
    }
    if let Some(re) = &m.regex {
        errs.check(&p.key("regex"), rules::regex(re));
    }
}

fn match_map(m: &BTreeMap<String, StringMatch>, p: &FieldPath, errs: &mut Errors) {
    for (k, v) in m {
        if k.is_empty() {
            errs.push(p, "header name cannot be empty");
        }
        string_match(v, &p.key(k), errs);
    }
}

fn http_match(m: &HttpMatchRequest, p: &FieldPath, errs: &mut Errors) {
    for (name, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            string_match(sm, &p.key(name), errs);
        }
    }
    match_map(&m.headers, &p.key("headers"), errs);
    match_map(&m.query_params, &p.key("queryParams"), errs);
    match_map(&m.without_headers, &p.key("withoutHeaders"), errs);
    if let Some(port) = m.port {
        errs.check(&p.key("port"), rules::port(port));
    }
    rules::labels(&m.source_labels, &p.key("sourceLabels"), errs);
    for (i, g) in m.gateways.iter().enumerate() {
        errs.check(&p.key("gateways").index(i), rules::gateway_name(g));
    }
    if let Some(ns) = &m.source_namespace {
        errs.check(&p.key("sourceNamespace"), rules::dns1123_label(ns));
    }
}

fn redirect(r: &HttpRedirect, p: &FieldPath, errs: &mut Errors) {
    if r.uri.is_none()
        && r.authority.is_none()
        && r.scheme.is_none()
        && r.port.is_none()
        && r.derive_port.is_none()
    {
        errs.push(p, "redirect must specify URI, authority, scheme, or port");
    }
    if let Some(code) = r.redirect_code
        && !(300..=399).contains(&code)
    {
        errs.push(
            &p.key("redirectCode"),
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
    }
    if let Some(port) = r.port {
        errs.check(&p.key("port"), rules::port(port));
        if r.derive_port.is_some() {
            errs.push(p, "only one of port or derivePort may be set");
        }
    }
    if let Some(d) = &r.derive_port
        && d != "FROM_PROTOCOL_DEFAULT"
        && d != "FROM_REQUEST_PORT"
    {
        errs.push(
            &p.key("derivePort"),
            format!("unsupported value {d:?}: expected FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
        );
    }
}

fn rewrite(r: &HttpRewrite, p: &FieldPath, errs: &mut Errors) {
    if r.uri.is_none() && r.authority.is_none() && r.uri_regex_rewrite.is_none() {
        errs.push(p, "rewrite must specify URI, authority, or uriRegexRewrite");
    }
    if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
        errs.push(p, "rewrite may only contain one of URI or uriRegexRewrite");
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        if rr.match_.is_empty() || rr.rewrite.is_empty() {
            errs.push(
                &p.key("uriRegexRewrite"),
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            );
        }
        errs.check(
            &p.key("uriRegexRewrite").key("match"),
            rules::regex(&rr.match_),
        );
    }
}

fn retries(r: &HttpRetry, p: &FieldPath, errs: &mut Errors) {
    if r.attempts < 0 {
        errs.push(&p.key("attempts"), "attempts cannot be negative");
    }
    if r.attempts == 0
        && (r.per_try_timeout.is_some()
            || r.retry_on.is_some()
            || r.retry_remote_localities.is_some())
    {
        errs.push(
            p,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    rules::opt_duration(&r.per_try_timeout, &p.key("perTryTimeout"), errs);
    if let Some(on) = &r.retry_on {
        for policy in on.split(',').map(str::trim) {
            if RetryOnEntry::parse(policy).is_none() {
                errs.push(
                    &p.key("retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
}

fn fault(f: &HttpFaultInjection, p: &FieldPath, errs: &mut Errors) {
    if f.delay.is_none() && f.abort.is_none() {
        errs.push(p, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(d) = &f.delay {
        let dp = p.key("delay");
        if let Some(pc) = &d.percentage {
            errs.check(
                &dp.key("percentage").key("value"),
                rules::percentage(pc.value),
            );
        }
        if let Some(pc) = d.percent
            && !(0..=100).contains(&pc)
        {
            errs.push(
                &dp.key("percent"),
                format!("percent {pc} is out of range 0..100"),
            );
        }
        match (&d.fixed_delay, &d.exponential_delay) {
            (Some(fd), None) => errs.check(&dp.key("fixedDelay"), rules::duration(fd)),
            (None, Some(_)) => errs.push(
                &dp.key("exponentialDelay"),
                "exponentialDelay not supported yet",
            ),
            (None, None) => errs.push(&dp, "delay must specify fixedDelay"),
            (Some(_), Some(_)) => {
                errs.push(&dp, "only one of fixedDelay or exponentialDelay may be set")
            }
        }
    }
    if let Some(a) = &f.abort {
        let ap = p.key("abort");
        if let Some(pc) = &a.percentage {
            errs.check(
                &ap.key("percentage").key("value"),
                rules::percentage(pc.value),
            );
        }
        if let Some(pc) = a.percent
            && !(0..=100).contains(&pc)
        {
            errs.push(
                &ap.key("percent"),
                format!("percent {pc} is out of range 0..100"),
            );
        }
        let kinds = [
            a.http_status.is_some(),
            a.grpc_status.is_some(),
            a.http2_error.is_some(),
        ];
        match kinds.iter().filter(|b| **b).count() {
            0 => errs.push(
                &ap,
                "abort must specify httpStatus, grpcStatus or http2Error",
            ),
            1 => {}
            _ => errs.push(
                &ap,
                "only one of httpStatus, grpcStatus or http2Error may be set",
            ),
        }
        if let Some(s) = a.http_status
            && !(200..=599).contains(&s)
        {
            errs.push(
                &ap.key("httpStatus"),
                format!("invalid abort http status {s}"),
            );
        }
        if let Some(g) = &a.grpc_status
            && !GRPC_STATUS_NAMES.contains(&g.as_str())
        {
            errs.push(
                &ap.key("grpcStatus"),
                format!("{g:?} is not a valid gRPC code"),
            );
        }
        if a.http2_error.is_some() {
            errs.push(
                &ap.key("http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        }
    }
}

/// The gRPC status names Istio accepts in `abort.grpcStatus` (its `SupportedGRPCStatus`).
const GRPC_STATUS_NAMES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn cors(c: &CorsPolicy, p: &FieldPath, errs: &mut Errors) {
    for (i, o) in c.allow_origins.iter().enumerate() {
        let op = p.key("allowOrigins").index(i);
        let value = o
            .exact
            .as_deref()
            .or(o.prefix.as_deref())
            .or(o.regex.as_deref())
            .unwrap_or_default();
        if value.is_empty() {
            errs.push(
                &op,
                "empty match is not a valid match type for CORS allow origins",
            );
        }
        string_match(o, &op, errs);
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !rules::HTTP_METHODS.contains(&m.as_str()) {
            errs.push(
                &p.key("allowMethods").index(i),
                format!("{m:?} is not a supported HTTP method"),
            );
        }
    }
    for (field, names) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in names.iter().enumerate() {
            errs.check(&p.key(field).index(i), rules::header_name(h));
        }
    }
    if let Some(mode) = &c.unmatched_preflights
        && !["UNSPECIFIED", "FORWARD", "IGNORE"].contains(&mode.as_str())
    {
        errs.push(
            &p.key("unmatchedPreflights"),
            format!("{mode:?} is not one of UNSPECIFIED, FORWARD, IGNORE"),
        );
    }
    if let Some(age) = &c.max_age
        && age.as_std().subsec_nanos() != 0
    {
        errs.push(
            &p.key("maxAge"),
            "max_age duration is accurate only to seconds precision",
        );
    }
}

fn header_ops(h: &HeaderOperations, p: &FieldPath, errs: &mut Errors) {
    for (field, map) in [("set", &h.set), ("add", &h.add)] {
        for name in map.keys() {
            errs.check(&p.key(field).key(name), rules::header_name(name));
        }
    }
    for (i, name) in h.remove.iter().enumerate() {
        errs.check(&p.key("remove").index(i), rules::header_name(name));
    }
}

fn headers(h: &Headers, p: &FieldPath, errs: &mut Errors) {
    if let Some(r) = &h.request {
        header_ops(r, &p.key("request"), errs);
    }
    if let Some(r) = &h.response {
        header_ops(r, &p.key("response"), errs);
    }
}

fn l4_destinations(route: &[RouteDestination], p: &FieldPath, errs: &mut Errors) {
    if route.is_empty() {
        errs.push(p, "route is required");
    }
    weights(route.iter().map(|d| d.weight), p, errs);
    for (i, d) in route.iter().enumerate() {
        destination(&d.destination, &p.index(i).key("destination"), errs);
    }
}

fn l4_match(m: &L4MatchAttributes, p: &FieldPath, errs: &mut Errors) {
    for (i, s) in m.destination_subnets.iter().enumerate() {
        errs.check(&p.key("destinationSubnets").index(i), rules::ip_or_cidr(s));
    }
    if let Some(port) = m.port {
        errs.check(&p.key("port"), rules::port(port));
    }
    rules::labels(&m.source_labels, &p.key("sourceLabels"), errs);
    for (i, g) in m.gateways.iter().enumerate() {
        errs.check(&p.key("gateways").index(i), rules::gateway_name(g));
    }
}

fn tcp_route(r: &TcpRoute, p: &FieldPath, errs: &mut Errors) {
    for (i, m) in r.matches.iter().enumerate() {
        l4_match(m, &p.key("match").index(i), errs);
    }
    l4_destinations(&r.route, &p.key("route"), errs);
}

/// Whether `sni` is covered by a VirtualService host (exact or wildcard suffix).
fn host_covers(host: &str, sni: &str) -> bool {
    if host == "*" || host == sni {
        return true;
    }
    if let Some(suffix) = host.strip_prefix('*') {
        return sni.ends_with(suffix);
    }
    if let Some(suffix) = sni.strip_prefix('*') {
        return host.ends_with(suffix);
    }
    false
}

fn tls_route(r: &TlsRoute, hosts: &[String], p: &FieldPath, errs: &mut Errors) {
    if r.matches.is_empty() {
        errs.push(
            &p.key("match"),
            "TLS route must have at least one match condition",
        );
    }
    for (i, m) in r.matches.iter().enumerate() {
        let mp = p.key("match").index(i);
        if m.sni_hosts.is_empty() {
            errs.push(
                &mp.key("sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (j, sni) in m.sni_hosts.iter().enumerate() {
            let sp = mp.key("sniHosts").index(j);
            errs.check(&sp, rules::wildcard_domain(sni));
            if !hosts.is_empty() && !hosts.iter().any(|h| host_covers(h, sni)) {
                errs.push(
                    &sp,
                    format!("the SNI host {sni:?} is not a match for any virtual service host"),
                );
            }
        }
        let l4 = L4MatchAttributes {
            destination_subnets: m.destination_subnets.clone(),
            port: m.port,
            source_labels: m.source_labels.clone(),
            gateways: m.gateways.clone(),
            source_namespace: None,
        };
        l4_match(&l4, &mp, errs);
    }
    l4_destinations(&r.route, &p.key("route"), errs);
}
