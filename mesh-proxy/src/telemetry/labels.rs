//! Istio's label sets for the standard metrics. Workload and service labels are shared
//! `Arc`s, so a request clones pointers, not strings. Nothing here comes from a request's
//! path, id or address: the number of series is bounded by the workloads, services and codes.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};

use super::flags::ResponseFlags;
use super::peer::{UNKNOWN, WorkloadMetadata};

/// One side of a call as labels show it. Immutable once made, with its hash computed then:
/// a request's label set hashes two numbers for its peers, not a dozen strings.
#[derive(Debug, Clone)]
pub struct PeerLabels {
    workload: WorkloadMetadata,
    /// `spiffe://...` of the side's certificate; `unknown` without mTLS.
    principal: String,
    hash: u64,
}

impl PeerLabels {
    pub fn unknown() -> Self {
        Self::of(WorkloadMetadata::from_labels("", "", "", []), None)
    }

    pub fn of(workload: WorkloadMetadata, principal: Option<&str>) -> Self {
        let principal = principal.unwrap_or(UNKNOWN).to_owned();
        let hash = fixed_hash(&(&workload, &principal));
        Self {
            workload,
            principal,
            hash,
        }
    }

    pub fn workload(&self) -> &WorkloadMetadata {
        &self.workload
    }

    pub fn principal(&self) -> &str {
        &self.principal
    }

    fn encode(&self, side: &str, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let w = &self.workload;
        for (name, value) in [
            ("workload", &w.name),
            ("workload_namespace", &w.namespace),
            ("principal", &self.principal),
            ("app", &w.app),
            ("version", &w.version),
            ("cluster", &w.cluster),
        ] {
            (format!("{side}_{name}"), value.as_str()).encode(e.encode_label())?;
        }
        Ok(())
    }
}

/// The destination service: `destination_service` (the host), its short name and namespace.
/// Immutable once made, with its hash computed then.
#[derive(Debug, Clone)]
pub struct ServiceLabels {
    host: String,
    name: String,
    /// From the host when it is `name.namespace.svc...`; else the destination workload's.
    namespace: Option<String>,
    hash: u64,
}

impl ServiceLabels {
    fn new(host: String, name: String, namespace: Option<String>) -> Self {
        let hash = fixed_hash(&(&host, &name, &namespace));
        Self {
            host,
            name,
            namespace,
            hash,
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// From a host (no port): `reviews.default.svc.cluster.local` is `reviews` in `default`.
    pub fn from_host(host: &str) -> Self {
        let mut parts = host.split('.');
        let (name, ns, svc) = (parts.next(), parts.next(), parts.next());
        match (name, ns, svc) {
            (Some(name), Some(ns), Some("svc")) if !name.is_empty() && !ns.is_empty() => {
                Self::new(host.to_owned(), name.to_owned(), Some(ns.to_owned()))
            }
            _ => Self::new(host.to_owned(), host.to_owned(), None),
        }
    }

    /// From a cluster name: Istio's `outbound|9080|v1|reviews.default.svc.cluster.local`
    /// names the host last; any other name is taken as the service.
    pub fn from_cluster(cluster: &str) -> Self {
        match cluster.rsplit_once('|') {
            Some((_, host)) if !host.is_empty() => Self::from_host(host),
            _ => Self::from_host(cluster),
        }
    }

    pub fn unknown() -> Self {
        Self::new(UNKNOWN.to_owned(), UNKNOWN.to_owned(), None)
    }

    fn encode(
        &self,
        destination: &PeerLabels,
        e: &mut LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        let namespace = self
            .namespace
            .as_deref()
            .unwrap_or(&destination.workload.namespace);
        ("destination_service", self.host.as_str()).encode(e.encode_label())?;
        ("destination_service_name", self.name.as_str()).encode(e.encode_label())?;
        ("destination_service_namespace", namespace).encode(e.encode_label())
    }
}

/// A hash that is the same for equal values in every process run, computed once per label
/// value rather than per request.
fn fixed_hash(value: &impl Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl Hash for PeerLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for PeerLabels {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && (std::ptr::eq(self, other)
                || (self.workload == other.workload && self.principal == other.principal))
    }
}

impl Eq for PeerLabels {}

impl Hash for ServiceLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for ServiceLabels {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && (std::ptr::eq(self, other)
                || (self.host == other.host
                    && self.name == other.name
                    && self.namespace == other.namespace))
    }
}

impl Eq for ServiceLabels {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    Source,
    Destination,
}

impl EncodeLabelValue for Reporter {
    fn encode(
        &self,
        e: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        let s = match self {
            Self::Source => "source",
            Self::Destination => "destination",
        };
        EncodeLabelValue::encode(&s, e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    Http,
    Grpc,
    Tcp,
}

impl EncodeLabelValue for RequestProtocol {
    fn encode(
        &self,
        e: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        let s = match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        };
        EncodeLabelValue::encode(&s, e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    MutualTls,
    None,
}

impl EncodeLabelValue for SecurityPolicy {
    fn encode(
        &self,
        e: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        let s = match self {
            Self::MutualTls => "mutual_tls",
            Self::None => "none",
        };
        EncodeLabelValue::encode(&s, e)
    }
}

/// What both the HTTP and the TCP label sets hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallLabels {
    pub reporter: Reporter,
    pub source: Arc<PeerLabels>,
    pub destination: Arc<PeerLabels>,
    pub service: Arc<ServiceLabels>,
    pub response_flags: ResponseFlags,
    pub security: SecurityPolicy,
}

impl CallLabels {
    fn encode(
        &self,
        protocol: RequestProtocol,
        e: &mut LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        ("reporter", self.reporter).encode(e.encode_label())?;
        self.source.encode("source", e)?;
        self.destination.encode("destination", e)?;
        self.service.encode(&self.destination, e)?;
        ("request_protocol", protocol).encode(e.encode_label())?;
        ("response_flags", self.response_flags).encode(e.encode_label())?;
        ("connection_security_policy", self.security).encode(e.encode_label())
    }
}

/// The labels of `istio_requests_total` and the request histograms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestLabels {
    pub call: CallLabels,
    pub protocol: RequestProtocol,
    /// 0 when the downstream left before a response, as Envoy reports it.
    pub response_code: u16,
    /// gRPC's status code; `None` (an empty label) for plain HTTP.
    pub grpc_status: Option<u32>,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.call.encode(self.protocol, e)?;
        ("response_code", self.response_code).encode(e.encode_label())?;
        match self.grpc_status {
            Some(code) => ("grpc_response_status", code).encode(e.encode_label()),
            None => ("grpc_response_status", "").encode(e.encode_label()),
        }
    }
}

/// The labels of the TCP metrics (no response code).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpLabels(pub CallLabels);

impl EncodeLabelSet for TcpLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(RequestProtocol::Tcp, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_from_istio_cluster_names_and_plain_names() {
        let s = ServiceLabels::from_cluster("outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(s.host(), "reviews.default.svc.cluster.local");
        assert_eq!(s.name(), "reviews");
        assert_eq!(s.namespace(), Some("default"));
        let s = ServiceLabels::from_cluster("outbound|443||api.example.com");
        assert_eq!((s.name(), s.namespace()), ("api.example.com", None));
        let s = ServiceLabels::from_cluster("backend");
        assert_eq!(s.host(), "backend");
    }

    #[test]
    fn encodes_istios_label_names() {
        let mut registry = prometheus_client::registry::Registry::default();
        let family = prometheus_client::metrics::family::Family::<
            RequestLabels,
            prometheus_client::metrics::counter::Counter,
        >::default();
        registry.register("istio_requests", "", family.clone());
        let dest = Arc::new(PeerLabels::of(
            WorkloadMetadata::from_labels("reviews-v1", "default", "c1", [("app", "reviews")]),
            Some("spiffe://cluster.local/ns/default/sa/reviews"),
        ));
        family
            .get_or_create(&RequestLabels {
                call: CallLabels {
                    reporter: Reporter::Destination,
                    source: Arc::new(PeerLabels::unknown()),
                    destination: dest,
                    service: Arc::new(ServiceLabels::from_host("reviews")),
                    response_flags: ResponseFlags::default(),
                    security: SecurityPolicy::MutualTls,
                },
                protocol: RequestProtocol::Http,
                response_code: 200,
                grpc_status: None,
            })
            .inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for label in [
            "reporter=\"destination\"",
            "source_workload=\"unknown\"",
            "destination_workload=\"reviews-v1\"",
            "destination_principal=\"spiffe://cluster.local/ns/default/sa/reviews\"",
            "destination_app=\"reviews\"",
            "destination_version=\"unknown\"",
            "destination_cluster=\"c1\"",
            "destination_service=\"reviews\"",
            "destination_service_namespace=\"default\"",
            "request_protocol=\"http\"",
            "response_code=\"200\"",
            "grpc_response_status=\"\"",
            "response_flags=\"-\"",
            "connection_security_policy=\"mutual_tls\"",
        ] {
            assert!(text.contains(label), "{label} missing in {text}");
        }
    }
}
