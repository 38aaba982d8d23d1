//! The source-neutral service model: what ServiceEntry + WorkloadEntry (and later Kubernetes
//! Services, EndpointSlices and Pods) turn into.

use std::collections::BTreeMap;

/// Label that tells whether an endpoint's traffic is mTLS-capable (Istio's name and values).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// A port protocol as Istio resolves it (field, else name prefix, else unknown and sniffed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    HttpProxy,
    Https,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    Mysql,
    Thrift,
    Hbone,
    /// Neither the field nor the name says: Istio sniffs, so it may carry HTTP.
    Unknown,
}

impl Protocol {
    /// From the canonical name `mesh_api::networking::Port::resolved_protocol` returns.
    pub fn from_canonical(name: Option<&str>) -> Protocol {
        match name {
            Some("HTTP") => Protocol::Http,
            Some("HTTP2") => Protocol::Http2,
            Some("GRPC") => Protocol::Grpc,
            Some("GRPC-WEB") => Protocol::GrpcWeb,
            Some("HTTP_PROXY") => Protocol::HttpProxy,
            Some("HTTPS") => Protocol::Https,
            Some("TCP") => Protocol::Tcp,
            Some("TLS") => Protocol::Tls,
            Some("UDP") => Protocol::Udp,
            Some("MONGO") => Protocol::Mongo,
            Some("REDIS") => Protocol::Redis,
            Some("MYSQL") => Protocol::Mysql,
            Some("THRIFT") => Protocol::Thrift,
            Some("HBONE") => Protocol::Hbone,
            _ => Protocol::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Https => "HTTPS",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Udp => "UDP",
            Protocol::Mongo => "MONGO",
            Protocol::Redis => "REDIS",
            Protocol::Mysql => "MYSQL",
            Protocol::Thrift => "THRIFT",
            Protocol::Hbone => "HBONE",
            Protocol::Unknown => "UNKNOWN",
        }
    }

    /// Istio's `IsHTTP`: protocols routed by HTTP attributes.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
                | Protocol::HttpProxy
        )
    }
}

/// ServiceEntry `resolution`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resolution {
    /// Traffic goes to the address the client asked for.
    #[default]
    Passthrough,
    /// Endpoints are IP addresses known to the registry.
    Static,
    /// Endpoints (or the host itself) are DNS names the proxy resolves.
    Dns,
    DnsRoundRobin,
}

/// ServiceEntry `location`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Location {
    #[default]
    MeshExternal,
    MeshInternal,
}

/// Where a service was declared, for messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceOrigin {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub number: u32,
    pub protocol: Protocol,
    pub target_port: Option<u32>,
}

/// One host of the mesh with its ports and instances.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Fully qualified as declared, e.g. `reviews.default.svc.cluster.local` or `*.example.com`.
    pub hostname: String,
    pub namespace: String,
    /// Virtual IPs or CIDR blocks clients connect to (ServiceEntry `addresses`, a Kubernetes
    /// Service's cluster IPs); empty when the service has none (headless, or no VIP). Layer 4
    /// routes match connections by them.
    pub addresses: Vec<String>,
    /// Sorted by number.
    pub ports: Vec<ServicePort>,
    /// As written (`.`, `*`, namespace names); empty means the default, everywhere.
    pub export_to: Vec<String>,
    pub resolution: Resolution,
    pub location: Location,
    /// Sorted by address, then workload.
    pub endpoints: Vec<Endpoint>,
    pub origin: ServiceOrigin,
    /// Creation time as written (RFC 3339 compares as text); empty sorts first.
    pub created: String,
}

impl Service {
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// Whether the service is visible from `namespace` by its `exportTo`.
    pub fn visible_from(&self, namespace: &str) -> bool {
        export_visible(&self.export_to, &self.namespace, namespace)
    }
}

/// Istio's `exportTo` rule: empty or `*` is everywhere, `.` is the owner's namespace, `~` is
/// nowhere, anything else names a namespace.
pub fn export_visible(export_to: &[String], owner_ns: &str, from_ns: &str) -> bool {
    if export_to.is_empty() {
        return true;
    }
    if export_to.iter().any(|e| e == "~") && !export_to.iter().any(|e| e == "*") {
        return false;
    }
    export_to
        .iter()
        .any(|e| e == "*" || (e == "." && owner_ns == from_ns) || e == from_ns)
}

/// One instance of a service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Endpoint {
    /// IP address or DNS name (no port).
    pub address: String,
    /// Endpoint port by service port number.
    pub ports: BTreeMap<u32, u32>,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub identity: String,
    pub locality: Option<String>,
    pub network: Option<String>,
    /// Relative weight; 1 when unset.
    pub weight: u32,
    /// Whether a proxy of this mesh sits in front of the instance; see [`has_sidecar`].
    pub sidecar: bool,
    /// The WorkloadEntry (namespace, name) behind the endpoint, if any.
    pub workload: Option<(String, String)>,
}

/// A workload that runs a proxy: the identity pilot derives a proxy's config from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub identity: String,
    pub address: String,
    /// Port by name, as the WorkloadEntry declares them.
    pub ports: BTreeMap<String, u32>,
    pub locality: Option<String>,
    pub network: Option<String>,
    pub weight: u32,
}

/// SPIFFE identity of a service account.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// Whether an endpoint has a sidecar. The `security.istio.io/tlsMode` label decides when set
/// (`istio` yes, anything else no), as Istio reads it. Without it, a WorkloadEntry has one: in
/// this mesh a WorkloadEntry describes a workload that runs `mesh-proxy --workload` (the local
/// mesh starts one per entry), while an inline ServiceEntry endpoint is a plain address.
pub fn has_sidecar(labels: &BTreeMap<String, String>, is_workload_entry: bool) -> bool {
    match labels.get(TLS_MODE_LABEL) {
        Some(mode) => mode == "istio",
        None => is_workload_entry,
    }
}

/// `selector` labels all present with equal values in `labels`; an empty selector selects all.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn service_entry_addresses_are_the_service_addresses() {
        let (resources, errors) = mesh_api::load_str(
            "se.yaml",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: shop}\nspec:\n  hosts: [db.shop.svc.cluster.local]\n  addresses: [198.18.10.1, 198.18.11.0/24]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 5432, name: tcp}]\n  endpoints: [{address: 198.18.0.41}]\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let registry = crate::registry::Registry::build(&resources);
        let db = registry.services().next().unwrap();
        assert_eq!(db.addresses, ["198.18.10.1", "198.18.11.0/24"]);
    }

    #[test]
    fn sidecar_rule() {
        assert!(has_sidecar(&labels(&[]), true));
        assert!(!has_sidecar(&labels(&[]), false));
        assert!(has_sidecar(&labels(&[(TLS_MODE_LABEL, "istio")]), false));
        assert!(!has_sidecar(&labels(&[(TLS_MODE_LABEL, "disabled")]), true));
    }

    #[test]
    fn export_to_rules() {
        let v = |e: &[&str], from: &str| {
            let e: Vec<String> = e.iter().map(|s| s.to_string()).collect();
            export_visible(&e, "a", from)
        };
        assert!(v(&[], "b"));
        assert!(v(&["*"], "b"));
        assert!(v(&["."], "a"));
        assert!(!v(&["."], "b"));
        assert!(v(&["b"], "b"));
        assert!(!v(&["c"], "b"));
        assert!(!v(&["~"], "a"));
    }

    #[test]
    fn protocols() {
        assert!(Protocol::from_canonical(Some("GRPC")).is_http());
        assert!(!Protocol::from_canonical(Some("TCP")).is_http());
        assert_eq!(Protocol::from_canonical(None), Protocol::Unknown);
        assert!(!Protocol::Unknown.is_http());
    }

    #[test]
    fn spiffe() {
        assert_eq!(
            spiffe_id("cluster.local", "default", "bookinfo-reviews"),
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
    }
}
