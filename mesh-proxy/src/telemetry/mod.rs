//! Istio's standard metrics (`istio_requests_total`, the request duration and size
//! histograms, the TCP byte and connection counters) with Istio's names, labels and buckets,
//! and the peer metadata the two proxies of a call exchange over mTLS so that each side
//! reports the other's workload.
//!
//! - [`peer`]: a workload's metadata and its header encoding;
//! - [`labels`]: the label sets;
//! - [`overrides`]: the Telemetry API's metrics overrides, compiled, and `custom`: the label
//!   sets they make;
//! - [`flags`]: Envoy's response flags, set where a reply is made;
//! - [`record`]: one HTTP request, recorded once after its response body ends (or the
//!   downstream leaves);
//! - [`upstream`]: what the forwarding code learns from the upstream (its peer metadata, mTLS);
//! - [`tcp`]: one proxied TCP connection;
//! - [`trace`]: spans per request, trace header propagation and OTLP export.

pub mod flags;
pub mod grpc;
pub mod labels;
pub mod overrides;
pub mod peer;
pub mod record;
pub mod tcp;
pub mod trace;
pub mod upstream;

mod custom;
mod interner;
mod series;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use flags::{ResponseFlag, ResponseFlags};
pub use labels::{PeerLabels, ServiceLabels};
pub use peer::{PEER_METADATA, WorkloadMetadata};
pub use record::{RecordedBody, RequestRecord};
pub use upstream::UpstreamInfo;

use custom::RequestKey;
use custom::TcpKey;
use interner::Interner;
use overrides::{MAX_TAG_VALUES, OVERFLOW_VALUE, RequestValue};

/// Istio's buckets for `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's buckets for the request and response size histograms: 1 B to 1 GB by tens.
pub const SIZE_BUCKETS_BYTES: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

type Histograms = Family<RequestKey, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS_BYTES)
}

/// Distinct destination services one proxy labels; more are `unknown`. Clusters come from
/// the config, so this only caps a config far larger than any mesh's.
const MAX_CLUSTER_SERVICES: usize = 4096;
/// Distinct inbound hosts (the request authority) labelled as `destination_service`; a
/// client choosing hosts freely cannot grow the series past this.
const MAX_INBOUND_HOSTS: usize = 64;
/// Distinct peers (metadata and principal) labelled by their metadata; more are labelled by
/// their principal only.
const MAX_PEERS: usize = 1024;

/// This proxy's own workload as labels and as the header it announces itself with.
struct Local {
    workload: Option<WorkloadMetadata>,
    principal: Option<String>,
    /// Without the principal: what a plaintext side is labelled with.
    plain: Arc<PeerLabels>,
    /// With the certificate's principal, for the mTLS side of a call.
    mtls: Arc<PeerLabels>,
    /// `None` until the workload is known: nothing is announced then.
    header: Option<HeaderValue>,
}

impl Local {
    fn new(workload: Option<WorkloadMetadata>, principal: Option<String>) -> Self {
        let meta = workload
            .clone()
            .unwrap_or_else(|| WorkloadMetadata::from_labels("", "", "", []));
        Self {
            plain: Arc::new(PeerLabels::of(meta.clone(), None)),
            mtls: Arc::new(PeerLabels::of(meta, principal.as_deref())),
            header: workload.as_ref().map(WorkloadMetadata::encode),
            workload,
            principal,
        }
    }
}

/// The standard metrics of one proxy and what it knows about itself.
pub struct Telemetry {
    requests: Family<RequestKey, Counter>,
    duration: Histograms,
    request_bytes: Histograms,
    response_bytes: Histograms,
    request_messages: Family<RequestKey, Counter>,
    response_messages: Family<RequestKey, Counter>,
    tcp_sent: Family<TcpKey, Counter>,
    tcp_received: Family<TcpKey, Counter>,
    tcp_opened: Family<TcpKey, Counter>,
    tcp_closed: Family<TcpKey, Counter>,
    local: ArcSwap<Local>,
    unknown_peer: Arc<PeerLabels>,
    unknown_service: Arc<ServiceLabels>,
    cluster_services: Interner<ServiceLabels>,
    inbound_hosts: Interner<ServiceLabels>,
    /// The services of this workload, from the inbound listener; empty without pilot's word.
    inbound_services: ArcSwap<Vec<Arc<ServiceLabels>>>,
    peers: Interner<PeerLabels>,
    series: series::SeriesCache,
    /// The values metrics overrides took from requests, per request value; kept across
    /// configs so that the bound holds for the proxy's lifetime, not per config.
    tag_values: Mutex<HashMap<RequestValue, Arc<Interner<String>>>>,
    /// Off: no request is recorded and nothing is announced to peers (metadata headers are
    /// still stripped). The benchmark's baseline; TCP connections are still counted.
    enabled: AtomicBool,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(size_histogram),
            response_bytes: Family::new_with_constructor(size_histogram),
            request_messages: Family::default(),
            response_messages: Family::default(),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            local: ArcSwap::from_pointee(Local::new(None, None)),
            unknown_peer: Arc::new(PeerLabels::unknown()),
            unknown_service: Arc::new(ServiceLabels::unknown()),
            cluster_services: Interner::new(MAX_CLUSTER_SERVICES),
            inbound_hosts: Interner::new(MAX_INBOUND_HOSTS),
            inbound_services: ArcSwap::from_pointee(Vec::new()),
            peers: Interner::new(MAX_PEERS),
            series: series::SeriesCache::default(),
            tag_values: Mutex::default(),
            enabled: AtomicBool::new(true),
        }
    }
}

impl Telemetry {
    /// Registers Istio's metric names at the top level (no prefix), as dashboards expect.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "istio_requests",
            "Requests by source and destination workload, service and response",
            self.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds, until the last byte of the response",
            self.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes in bytes",
            self.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes in bytes",
            self.response_bytes.clone(),
        );
        registry.register(
            "istio_request_messages",
            "gRPC messages sent by the client",
            self.request_messages.clone(),
        );
        registry.register(
            "istio_response_messages",
            "gRPC messages sent by the server",
            self.response_messages.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream of TCP connections",
            self.tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream of TCP connections",
            self.tcp_received.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            self.tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            self.tcp_closed.clone(),
        );
    }

    /// Who this proxy's workload is (from its flags or node metadata); announced to peers
    /// over mTLS from now on.
    pub fn set_workload(&self, workload: WorkloadMetadata) {
        let principal = self.local.load().principal.clone();
        self.local
            .store(Arc::new(Local::new(Some(workload), principal)));
    }

    /// This proxy's workload, once known.
    pub fn workload(&self) -> Option<WorkloadMetadata> {
        self.local.load().workload.clone()
    }

    /// The SPIFFE URI of this proxy's certificate.
    pub fn set_principal(&self, principal: &str) {
        let workload = self.local.load().workload.clone();
        self.local
            .store(Arc::new(Local::new(workload, Some(principal.to_owned()))));
    }

    /// The header value this proxy announces itself with, once its workload is known and
    /// while recording is on.
    pub fn local_header(&self) -> Option<HeaderValue> {
        if !self.is_enabled() {
            return None;
        }
        self.local.load().header.clone()
    }

    /// Turns HTTP request recording and the metadata exchange on or off.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn local_labels(&self, mtls: bool) -> Arc<PeerLabels> {
        let local = self.local.load();
        if mtls {
            local.mtls.clone()
        } else {
            local.plain.clone()
        }
    }

    /// The bounded values of one request value that overrides label series with.
    fn tag_values(&self, value: &RequestValue) -> Arc<Interner<String>> {
        // A poisoned lock only means a panic elsewhere while inserting; the map is intact.
        let mut map = self.tag_values.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(value.clone())
            .or_insert_with(|| {
                // The overflow value has its own place, so it is always found.
                let values = Interner::new(MAX_TAG_VALUES + 1);
                values.get_or_insert(OVERFLOW_VALUE, || OVERFLOW_VALUE.to_owned());
                Arc::new(values)
            })
            .clone()
    }

    /// The destination service of a cluster, by its name.
    pub fn cluster_service(&self, cluster: &str) -> Arc<ServiceLabels> {
        self.cluster_services
            .get_or_insert(cluster, || ServiceLabels::from_cluster(cluster))
            .unwrap_or_else(|| self.unknown_service.clone())
    }

    /// The services this workload serves (hosts, as pilot names them on the inbound
    /// listener): what inbound requests and connections report as their destination service.
    pub fn set_inbound_services<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) {
        let services = hosts
            .into_iter()
            .map(|h| Arc::new(ServiceLabels::from_host(h)))
            .collect();
        self.inbound_services.store(Arc::new(services));
    }

    /// The destination service of an inbound request: of this workload's services, the one
    /// its host names (`reviews`, `reviews.default`, ... or the full host), else the first, as
    /// Istio reads its inbound cluster's services, so a caller's authority (an IP, a gateway's
    /// host) never becomes a service. Without services, its host; bounded.
    fn inbound_service(&self, host: Option<&str>) -> Arc<ServiceLabels> {
        let services = self.inbound_services.load();
        if let Some(first) = services.first() {
            let named = |s: &&Arc<ServiceLabels>| {
                host.is_some_and(|h| {
                    s.host() == h
                        || (h.starts_with(s.name())
                            && s.host().strip_prefix(h).is_some_and(|r| r.starts_with('.')))
                })
            };
            return services.iter().find(named).unwrap_or(first).clone();
        }
        host.and_then(|h| {
            self.inbound_hosts
                .get_or_insert(h, || ServiceLabels::from_host(h))
        })
        .unwrap_or_else(|| self.unknown_service.clone())
    }

    /// The labels of a verified mTLS peer: its certificate's principal and, when it sent
    /// valid metadata, its workload.
    fn peer(&self, metadata: Option<&HeaderValue>, principal: &str) -> Arc<PeerLabels> {
        let header = metadata.map_or(&b""[..], |v| v.as_bytes());
        let mut key = Vec::with_capacity(header.len() + principal.len() + 1);
        key.extend_from_slice(header);
        key.push(b' ');
        key.extend_from_slice(principal.as_bytes());
        // The key is bytes of header values and a URI; it is only compared, never shown.
        let key = String::from_utf8_lossy(&key);
        let make = || {
            let workload = metadata
                .and_then(WorkloadMetadata::decode)
                .unwrap_or_else(|| WorkloadMetadata::from_labels("", "", "", []));
            PeerLabels::of(workload, Some(principal))
        };
        // Past the ceiling a peer's claims are not labelled (its principal, which the CA
        // vouched for, still is): a peer varying its metadata cannot grow the series.
        self.peers.get_or_insert(&key, make).unwrap_or_else(|| {
            let unknown = WorkloadMetadata::from_labels("", "", "", []);
            Arc::new(PeerLabels::of(unknown, Some(principal)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_varying_its_metadata_cannot_grow_the_labels_past_the_ceiling() {
        let t = Telemetry::default();
        let principal = "spiffe://cluster.local/ns/default/sa/noisy";
        let claim = |i: usize| WorkloadMetadata::from_labels(&format!("w{i}"), "ns", "c", []);
        for i in 0..MAX_PEERS {
            let labels = t.peer(Some(&claim(i).encode()), principal);
            assert_eq!(labels.workload().name, format!("w{i}"));
        }
        let past = t.peer(Some(&claim(MAX_PEERS).encode()), principal);
        assert_eq!(past.workload().name, peer::UNKNOWN);
        assert_eq!(past.principal(), principal);
        // A peer seen before keeps its labels.
        assert_eq!(
            t.peer(Some(&claim(0).encode()), principal).workload().name,
            "w0"
        );
    }

    #[test]
    fn inbound_services_from_pilot_win_over_the_host() {
        let t = Telemetry::default();
        t.set_inbound_services([
            "ratings.default.svc.cluster.local",
            "reviews.default.svc.cluster.local",
        ]);
        let service = |host| t.inbound_service(host).name().to_owned();
        assert_eq!(service(Some("reviews")), "reviews");
        assert_eq!(service(Some("reviews.default")), "reviews");
        assert_eq!(
            service(Some("reviews.default.svc.cluster.local")),
            "reviews"
        );
        // An address, a gateway's host, no host (TCP): the workload's first service.
        assert_eq!(service(Some("127.0.0.1")), "ratings");
        assert_eq!(service(Some("rev")), "ratings");
        assert_eq!(service(None), "ratings");
    }

    #[test]
    fn inbound_hosts_past_the_ceiling_are_unknown() {
        let t = Telemetry::default();
        for i in 0..MAX_INBOUND_HOSTS {
            let host = format!("h{i}.example");
            assert_eq!(t.inbound_service(Some(&host)).host(), host);
        }
        assert_eq!(t.inbound_service(Some("one-more")).host(), peer::UNKNOWN);
    }
}
