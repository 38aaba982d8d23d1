//! The running config of a proxy (its `/config_dump`) as istioctl-style tables.

use mesh_proto::config::v1::{
    Cluster, Listener, MtlsMode, ProxyConfig, Route, RouteMatch, StringMatch, WeightedCluster,
    route, string_match, upstream_tls,
};

use crate::table::Table;

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// The listener's mTLS: its mode (UNSET reads as Istio's PERMISSIVE default) and port overrides.
fn mtls(l: &Listener) -> String {
    if l.direction() != mesh_proto::config::v1::Direction::Inbound {
        return "-".to_owned();
    }
    let name = |m: MtlsMode| match m {
        MtlsMode::Unset | MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Disable => "DISABLE",
        MtlsMode::Strict => "STRICT",
    };
    let mut text = name(l.mtls_mode()).to_owned();
    for p in &l.port_mtls {
        text.push_str(&format!(" {}:{}", p.port, name(p.mode())));
    }
    text
}

pub fn listeners(cfg: &ProxyConfig) -> String {
    let mut t = Table::new(&[
        "NAME",
        "ADDRESS",
        "DIRECTION",
        "PROTOCOL",
        "DESTINATION",
        "MTLS",
        "AUTHZ POLICIES",
    ]);
    for l in &cfg.listeners {
        let mut destination = Vec::new();
        if !l.route_table.is_empty() {
            destination.push(format!("Route: {}", l.route_table));
        }
        if !l.tcp_cluster.is_empty() {
            destination.push(format!("Cluster: {}", l.tcp_cluster));
        }
        if !l.tcp_routes.is_empty() {
            destination.push(format!("{} TCP route(s)", l.tcp_routes.len()));
        }
        let address = if l.transparent {
            format!("{} (transparent)", l.address)
        } else {
            l.address.clone()
        };
        t.row(vec![
            l.name.clone(),
            address,
            l.direction().as_str_name().to_owned(),
            l.protocol().as_str_name().to_owned(),
            or_dash(&destination.join(", ")),
            mtls(l),
            l.authorization_policies.len().to_string(),
        ]);
    }
    t.render()
}

fn string_match(m: Option<&StringMatch>) -> Option<String> {
    match m?.kind.as_ref()? {
        string_match::Kind::Exact(s) => Some(s.clone()),
        string_match::Kind::Prefix(s) => Some(format!("{s}*")),
        string_match::Kind::Regex(s) => Some(format!("~{s}")),
    }
}

fn match_text(m: Option<&RouteMatch>) -> String {
    let Some(m) = m else {
        return "/*".to_owned();
    };
    let mut parts = vec![string_match(m.path.as_ref()).unwrap_or_else(|| "/*".to_owned())];
    if let Some(method) = string_match(m.method.as_ref()) {
        parts.push(format!("method={method}"));
    }
    for h in &m.headers {
        let value = string_match(h.value.as_ref()).unwrap_or_else(|| "*".to_owned());
        let op = if h.invert { "!=" } else { "=" };
        parts.push(format!("{}{op}{value}", h.name));
    }
    for q in &m.query_parameters {
        let value = string_match(q.value.as_ref()).unwrap_or_else(|| "*".to_owned());
        parts.push(format!("?{}={value}", q.name));
    }
    parts.join(" ")
}

fn weighted(clusters: &[WeightedCluster]) -> String {
    clusters
        .iter()
        .map(|c| {
            let subset = if c.subset.is_empty() {
                String::new()
            } else {
                format!("|{}", c.subset)
            };
            if clusters.len() > 1 {
                format!("{}{subset} {}%", c.cluster, c.weight)
            } else {
                format!("{}{subset}", c.cluster)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn action(r: &Route) -> String {
    match &r.action {
        Some(route::Action::Route(a)) => weighted(&a.clusters),
        Some(route::Action::Redirect(d)) => format!("redirect {}{}", d.host, d.path),
        Some(route::Action::DirectResponse(d)) => format!("direct response {}", d.status),
        None => "-".to_owned(),
    }
}

pub fn routes(cfg: &ProxyConfig) -> String {
    let mut t = Table::new(&[
        "ROUTE TABLE",
        "VIRTUAL HOST",
        "DOMAINS",
        "MATCH",
        "DESTINATION",
    ]);
    for table in &cfg.route_tables {
        for vh in &table.virtual_hosts {
            let domains = match vh.domains.as_slice() {
                [] => "-".to_owned(),
                [one] => one.clone(),
                [first, rest @ ..] => format!("{first} + {} more", rest.len()),
            };
            for r in &vh.routes {
                t.row(vec![
                    table.name.clone(),
                    vh.name.clone(),
                    domains.clone(),
                    match_text(r.r#match.as_ref()),
                    action(r),
                ]);
            }
        }
    }
    t.render()
}

fn tls_mode(c: &Cluster) -> &'static str {
    match c.tls.as_ref().map(|t| t.mode()) {
        None | Some(upstream_tls::Mode::Auto) => "AUTO",
        Some(upstream_tls::Mode::Disable) => "DISABLE",
        Some(upstream_tls::Mode::IstioMutual) => "ISTIO_MUTUAL",
        Some(upstream_tls::Mode::Simple) => "SIMPLE",
        Some(upstream_tls::Mode::Mutual) => "MUTUAL",
    }
}

pub fn clusters(cfg: &ProxyConfig) -> String {
    let mut t = Table::new(&["NAME", "LB", "PROTOCOL", "TLS", "SUBSETS", "ENDPOINTS"]);
    for c in &cfg.clusters {
        let subsets: Vec<&str> = c.subsets.iter().map(|s| s.name.as_str()).collect();
        t.row(vec![
            c.name.clone(),
            c.lb_policy()
                .as_str_name()
                .trim_start_matches("LB_POLICY_")
                .to_owned(),
            c.protocol()
                .as_str_name()
                .trim_start_matches("UPSTREAM_PROTOCOL_")
                .to_owned(),
            tls_mode(c).to_owned(),
            or_dash(&subsets.join(",")),
            c.endpoints.len().to_string(),
        ]);
    }
    t.render()
}

pub fn endpoints(cfg: &ProxyConfig) -> String {
    let mut t = Table::new(&["ENDPOINT", "CLUSTER", "LABELS", "SIDECAR", "IDENTITY"]);
    for c in &cfg.clusters {
        for e in &c.endpoints {
            let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            t.row(vec![
                e.address.clone(),
                c.name.clone(),
                or_dash(&labels.join(",")),
                if e.sidecar { "yes" } else { "no" }.to_owned(),
                or_dash(&e.identities.join(",")),
            ]);
        }
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProxyConfig {
        serde_json::from_value(serde_json::json!({
            "version": "7",
            "listeners": [
                {"name": "outbound", "address": "127.0.0.1:15001", "direction": "OUTBOUND",
                 "protocol": "HTTP", "routeTable": "outbound"},
                {"name": "inbound", "address": "127.0.0.1:19082", "direction": "INBOUND",
                 "protocol": "HTTP", "routeTable": "inbound", "mtlsMode": "MTLS_MODE_STRICT",
                 "portMtls": [{"port": 9080, "mode": "MTLS_MODE_PERMISSIVE"}],
                 "authorizationPolicies": [{"name": "ns/allow"}]}
            ],
            "routeTables": [{"name": "outbound", "virtualHosts": [{
                "name": "reviews.default.svc.cluster.local:9080",
                "domains": ["reviews.default.svc.cluster.local:9080", "reviews"],
                "routes": [
                    {"name": "r0", "match": {"path": {"prefix": "/"},
                      "headers": [{"name": "end-user", "value": {"exact": "jason"}}]},
                     "route": {"clusters": [{"cluster": "outbound|9080||reviews", "subset": "v2", "weight": 100}]}},
                    {"name": "r1", "route": {"clusters": [
                        {"cluster": "outbound|9080||reviews", "subset": "v1", "weight": 80},
                        {"cluster": "outbound|9080||reviews", "subset": "v3", "weight": 20}]}}
                ]}]}],
            "clusters": [{"name": "outbound|9080||reviews", "lbPolicy": "ROUND_ROBIN",
                "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
                "tls": {"mode": "ISTIO_MUTUAL"},
                "endpoints": [{"address": "127.0.0.1:19082", "labels": {"version": "v1"},
                    "sidecar": true, "identities": ["spiffe://cluster.local/ns/default/sa/reviews"]}]}]
        }))
        .unwrap()
    }

    #[test]
    fn listeners_show_direction_destination_and_mtls() {
        let text = listeners(&config());
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("outbound ") && lines[1].contains("Route: outbound"),
            "{text}"
        );
        assert_eq!(
            lines[1]
                .split_whitespace()
                .rev()
                .take(2)
                .collect::<Vec<_>>(),
            ["0", "-"],
            "{text}"
        );
        assert!(
            lines[2].contains("INBOUND") && lines[2].contains("STRICT 9080:PERMISSIVE"),
            "{text}"
        );
        assert!(lines[2].trim_end().ends_with('1'), "{text}");
    }

    #[test]
    fn routes_show_matches_and_weighted_subsets() {
        let text = routes(&config());
        assert!(text.contains("/* end-user=jason"), "{text}");
        assert!(
            text.contains("reviews.default.svc.cluster.local:9080 + 1 more"),
            "{text}"
        );
        assert!(text.contains("outbound|9080||reviews|v2\n"), "{text}");
        assert!(
            text.contains("outbound|9080||reviews|v1 80%, outbound|9080||reviews|v3 20%"),
            "{text}"
        );
    }

    #[test]
    fn clusters_and_endpoints() {
        let c = clusters(&config());
        assert!(
            c.lines().nth(1).unwrap().split_whitespace().eq([
                "outbound|9080||reviews",
                "ROUND_ROBIN",
                "UNSPECIFIED",
                "ISTIO_MUTUAL",
                "v1",
                "1"
            ]),
            "{c}"
        );
        let e = endpoints(&config());
        assert!(
            e.lines().nth(1).unwrap().split_whitespace().eq([
                "127.0.0.1:19082",
                "outbound|9080||reviews",
                "version=v1",
                "yes",
                "spiffe://cluster.local/ns/default/sa/reviews"
            ]),
            "{e}"
        );
    }
}
