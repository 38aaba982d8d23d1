//! Host names as Istio reads them in config: short names are relative to the object's namespace.

/// Istio's `ResolveShortnameToFQDN`: `reviews` in `default` is
/// `reviews.default.svc.cluster.local`; names with a dot, and `*`, stay as written.
pub fn resolve(host: &str, namespace: &str) -> String {
    if host.is_empty() || host == "*" || host.contains('.') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

/// Whether `pattern` (a host, `*.suffix` or `*`) covers `host`; a wildcard `host` is covered
/// when its whole range is.
pub fn covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.strip_prefix('*').unwrap_or(host).ends_with(suffix),
        None => false,
    }
}

/// Whether two host patterns can name a common host (either covers the other).
pub fn overlap(a: &str, b: &str) -> bool {
    covers(a, b) || covers(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_the_objects_namespace() {
        assert_eq!(
            resolve("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(resolve("api.example.com", "default"), "api.example.com");
        assert_eq!(resolve("*", "default"), "*");
    }

    #[test]
    fn wildcards_cover_their_suffix() {
        assert!(covers("*.example.com", "api.example.com"));
        assert!(covers("*", "anything"));
        assert!(!covers("api.example.com", "*.example.com"));
        assert!(overlap("api.example.com", "*.example.com"));
        assert!(!overlap("a.example.com", "b.example.com"));
    }
}
