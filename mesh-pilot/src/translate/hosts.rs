//! Host names: short-name resolution, wildcard matching and the domains of a virtual host.

/// DNS suffix of the cluster's services (Istio's default `cluster.local`).
pub const DOMAIN_SUFFIX: &str = "cluster.local";

/// Istio's `ResolveShortnameToFQDN`: a name without a dot is relative to the namespace of the
/// config that names it (`reviews` in `default` is `reviews.default.svc.cluster.local`); any
/// other name, and `*`, stays as written.
pub fn resolve(host: &str, namespace: &str) -> String {
    if host.is_empty() || host == "*" || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{DOMAIN_SUFFIX}")
    }
}

/// Whether `pattern` (a host, `*.suffix` or `*`) covers `host`. A wildcard `host` is covered
/// when its whole range is (`*.a.com` covers `*.b.a.com`), as Istio's `SubsetOf`.
pub fn covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => match host.strip_prefix('*') {
            Some(h) => h.ends_with(suffix),
            None => host.ends_with(suffix),
        },
        None => false,
    }
}

/// How specific a pattern is: exact beats any wildcard, a longer suffix beats a shorter one.
pub fn specificity(pattern: &str) -> usize {
    if pattern.starts_with('*') {
        pattern.len() - 1
    } else {
        usize::MAX
    }
}

/// The domains of the virtual host of `hostname:port` as seen from a proxy in `proxy_ns`.
///
/// `host:port` always; the bare `host` only where it is unambiguous, i.e. for port 80 (as
/// Istio) or the only HTTP port of the service (one route table serves every port here, where
/// Istio has one per port). For `name.ns.svc.cluster.local`, the short forms Kubernetes DNS
/// resolves: `name.ns`, `name.ns.svc` from any namespace and `name` from `ns` itself, each
/// with the port, and without it under the same rule as the bare host.
pub fn domains(hostname: &str, port: u32, proxy_ns: &str, bare: bool) -> Vec<String> {
    let mut names = vec![hostname.to_string()];
    let kube_suffix = format!(".svc.{DOMAIN_SUFFIX}");
    if let Some(name_ns) = hostname.strip_suffix(&kube_suffix)
        && let Some((name, ns)) = name_ns.split_once('.')
        && !ns.contains('.')
        && !name.starts_with('*')
    {
        if ns == proxy_ns {
            names.push(name.to_string());
        }
        names.push(format!("{name}.{ns}"));
        names.push(format!("{name}.{ns}.svc"));
    }
    let mut out = Vec::with_capacity(names.len() * 2);
    for n in names {
        out.push(format!("{n}:{port}"));
        if bare {
            out.push(n);
        }
    }
    out
}

/// The domains a service's addresses give the virtual host of `port`, as Istio's
/// `generateVirtualHostDomains`: a client that calls the service by its VIP (a ClusterIP, a
/// ServiceEntry address) sends that address as the Host. `address:port` always, the bare
/// address for port 80; IPv6 in brackets; CIDR blocks name no host and give none.
pub fn address_domains(addresses: &[String], port: u32) -> Vec<String> {
    let mut out = Vec::new();
    for a in addresses {
        let Ok(ip) = a.parse::<std::net::IpAddr>() else {
            continue;
        };
        if ip.is_unspecified() {
            continue;
        }
        let host = match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        out.push(format!("{host}:{port}"));
        if port == 80 {
            out.push(host);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_the_config_namespace() {
        assert_eq!(
            resolve("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(resolve("reviews.default", "x"), "reviews.default");
        assert_eq!(resolve("*.example.com", "x"), "*.example.com");
        assert_eq!(resolve("*", "x"), "*");
    }

    #[test]
    fn wildcard_cover() {
        assert!(covers("*", "a.b"));
        assert!(covers("*.example.com", "api.example.com"));
        assert!(covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(covers("*.example.com", "*.api.example.com"));
        assert!(!covers("*.api.example.com", "*.example.com"));
        assert!(!covers("a.example.com", "b.example.com"));
        assert!(specificity("a.b") > specificity("*.b"));
        assert!(specificity("*.a.b") > specificity("*.b"));
    }

    #[test]
    fn domains_of_a_kubernetes_style_host() {
        let same = domains("reviews.default.svc.cluster.local", 9080, "default", true);
        assert_eq!(
            same,
            [
                "reviews.default.svc.cluster.local:9080",
                "reviews.default.svc.cluster.local",
                "reviews:9080",
                "reviews",
                "reviews.default:9080",
                "reviews.default",
                "reviews.default.svc:9080",
                "reviews.default.svc",
            ]
        );
        let other = domains("reviews.default.svc.cluster.local", 9080, "shop", false);
        assert_eq!(
            other,
            [
                "reviews.default.svc.cluster.local:9080",
                "reviews.default:9080",
                "reviews.default.svc:9080",
            ]
        );
        assert_eq!(
            domains("api.example.com", 443, "default", false),
            ["api.example.com:443"]
        );
    }

    #[test]
    fn service_addresses_are_domains_as_in_istio() {
        let addrs = [
            "198.18.10.1".to_string(),
            "198.18.11.0/24".to_string(),
            "2001:db8::1".to_string(),
            "0.0.0.0".to_string(),
        ];
        assert_eq!(
            address_domains(&addrs, 9080),
            ["198.18.10.1:9080", "[2001:db8::1]:9080"]
        );
        assert_eq!(
            address_domains(&addrs, 80),
            [
                "198.18.10.1:80",
                "198.18.10.1",
                "[2001:db8::1]:80",
                "[2001:db8::1]"
            ]
        );
    }
}
