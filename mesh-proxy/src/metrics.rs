//! The proxy's Prometheus metrics, served on the admin port at `/stats/prometheus`.

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::access_log::Sink;
use crate::http::mirror::MirrorLabels;
use crate::telemetry::Telemetry;
use crate::telemetry::trace::Tracer;
use crate::upstream::ConnectionStats;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum DirectionLabel {
    Outbound,
    Inbound,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: DirectionLabel,
    pub response_code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

/// Requests refused by a local rate limit: labelled by the side and listener only, both
/// bounded by the config.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitedLabels {
    pub direction: DirectionLabel,
    pub listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigVersionLabels {
    pub version: String,
}

/// The kind of pushed resource a NACK answers, as the label `type` (`config`, `endpoints`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum XdsType {
    Config,
    Endpoints,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct XdsTypeLabel(pub XdsType);

impl EncodeLabelSet for XdsTypeLabel {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let value = match self.0 {
            XdsType::Config => "config",
            XdsType::Endpoints => "endpoints",
        };
        ("type", value).encode(e.encode_label())
    }
}

#[derive(Default)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub retries: Family<ClusterLabels, Counter>,
    pub timeouts: Family<ClusterLabels, Counter>,
    pub upstream_connections: Family<ClusterLabels, Counter>,
    pub upstream_connections_active: Family<ClusterLabels, Gauge>,
    pub upstream_connect_failures: Family<ClusterLabels, Counter>,
    pub upstream_overflow: Family<ClusterLabels, Counter>,
    pub upstream_retry_overflow: Family<ClusterLabels, Counter>,
    pub outlier_ejections: Family<ClusterLabels, Counter>,
    /// Failed lookups of the names of DNS clusters, by name.
    pub dns_failures: Family<crate::dns::NameLabels, Counter>,
    pub downstream_connections: Family<ListenerLabels, Counter>,
    pub downstream_connections_active: Family<ListenerLabels, Gauge>,
    /// Idle HTTP/1.1 connections holding no HTTP state or buffers until their next request.
    pub downstream_connections_parked: Family<ListenerLabels, Gauge>,
    pub downstream_connections_overflow: Family<ListenerLabels, Counter>,
    pub config_updates: Family<ConfigLabels, Counter>,
    /// When the config in force was applied, as Unix seconds (its age is `time() - this`).
    pub config_last_update: Gauge<f64, AtomicU64>,
    /// The version of the config in force: one series, valued 1.
    pub config_version: Family<ConfigVersionLabels, Gauge>,
    /// Pushed configs and endpoint updates refused and answered with a NACK.
    pub xds_nacks: Family<XdsTypeLabel, Counter>,
    pub mirror_requests: Family<MirrorLabels, Counter>,
    /// Requests refused by a LocalRateLimit (429 or RESOURCE_EXHAUSTED).
    pub rate_limited: Family<RateLimitedLabels, Counter>,
    /// Istio's standard metrics (`istio_*`), with the peer metadata they are labelled by.
    pub istio: Arc<Telemetry>,
    /// The access-log queue and its writer.
    pub access_log: Arc<Sink>,
    /// Spans per request and their export (off until an OTLP endpoint is set).
    pub tracer: Tracer,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        self.istio.register(registry);
        let r = registry.sub_registry_with_prefix("mesh_proxy");
        self.tracer.register(r);
        r.register(
            "requests",
            "Downstream requests by direction and response code",
            self.requests.clone(),
        );
        r.register(
            "upstream_retries",
            "Retried upstream requests",
            self.retries.clone(),
        );
        r.register(
            "upstream_timeouts",
            "Route and per-try timeouts",
            self.timeouts.clone(),
        );
        r.register(
            "upstream_connections",
            "Upstream connections opened",
            self.upstream_connections.clone(),
        );
        r.register(
            "upstream_connections_active",
            "Upstream connections open now",
            self.upstream_connections_active.clone(),
        );
        r.register(
            "upstream_connect_failures",
            "Failed upstream connection attempts",
            self.upstream_connect_failures.clone(),
        );
        r.register(
            "upstream_overflow",
            "Requests refused by a circuit breaker (503, x-envoy-overloaded)",
            self.upstream_overflow.clone(),
        );
        r.register(
            "upstream_retry_overflow",
            "Retries not made because the retry limit or budget was spent",
            self.upstream_retry_overflow.clone(),
        );
        r.register(
            "dns_resolution_failures",
            "Failed lookups of the names of DNS clusters (the last answer stays in use)",
            self.dns_failures.clone(),
        );
        r.register(
            "outlier_ejections",
            "Endpoints ejected by outlier detection",
            self.outlier_ejections.clone(),
        );
        r.register(
            "downstream_connections",
            "Downstream connections accepted",
            self.downstream_connections.clone(),
        );
        r.register(
            "downstream_connections_active",
            "Downstream connections open now",
            self.downstream_connections_active.clone(),
        );
        r.register(
            "downstream_connections_parked",
            "Idle HTTP/1.1 downstream connections holding no HTTP state or buffers now",
            self.downstream_connections_parked.clone(),
        );
        r.register(
            "downstream_cx_overflow",
            "Downstream connections closed at accept because the listener was at its limit",
            self.downstream_connections_overflow.clone(),
        );
        r.register(
            "config_updates",
            "Config updates by result (accepted, rejected)",
            self.config_updates.clone(),
        );
        r.register(
            "config_last_update_timestamp_seconds",
            "When the config in force was applied, as Unix seconds",
            self.config_last_update.clone(),
        );
        r.register(
            "config_version_info",
            "The version of the config in force (always 1)",
            self.config_version.clone(),
        );
        r.register(
            "xds_nacks",
            "Updates from pilot refused and answered with a NACK, by type (config, endpoints)",
            self.xds_nacks.clone(),
        );
        self.access_log.register(r);
        r.register(
            "mirror_requests",
            "Shadow copies of mirrored requests, by cluster and how they ended",
            self.mirror_requests.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused by a local rate limit (429, or RESOURCE_EXHAUSTED for gRPC)",
            self.rate_limited.clone(),
        );
    }

    /// Connection counters of a cluster, shared with its pool.
    pub fn connection_stats(&self, cluster: &str) -> ConnectionStats {
        let labels = ClusterLabels {
            cluster: cluster.to_string(),
        };
        ConnectionStats {
            opened: self.upstream_connections.get_or_create(&labels).clone(),
            active: self
                .upstream_connections_active
                .get_or_create(&labels)
                .clone(),
            connect_failures: self
                .upstream_connect_failures
                .get_or_create(&labels)
                .clone(),
            overflow: self.upstream_overflow.get_or_create(&labels).clone(),
            retry_overflow: self.upstream_retry_overflow.get_or_create(&labels).clone(),
            ejections: self.outlier_ejections.get_or_create(&labels).clone(),
        }
    }

    pub fn retry(&self, cluster: &str) {
        self.retries
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_string(),
            })
            .inc();
    }

    pub fn timeout(&self, cluster: &str) {
        self.timeouts
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_string(),
            })
            .inc();
    }

    /// A config was applied: its version and the time are the ones in force from now on.
    pub fn config_applied(&self, version: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.config_last_update.set(now);
        // One series: the previous version's goes, so the count stays 1 whatever the history.
        self.config_version.clear();
        self.config_version
            .get_or_create(&ConfigVersionLabels {
                version: version.to_owned(),
            })
            .set(1);
    }

    /// An update from pilot was refused (a NACK went back).
    pub fn xds_nack(&self, kind: XdsType) {
        self.xds_nacks.get_or_create(&XdsTypeLabel(kind)).inc();
    }

    pub fn config_update(&self, accepted: bool) {
        let result = if accepted { "accepted" } else { "rejected" };
        self.config_updates
            .get_or_create(&ConfigLabels {
                result: result.to_string(),
            })
            .inc();
    }
}

/// Counts one in a gauge while it lives: an open connection, a parked one.
pub struct Held(Gauge);

impl Held {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}
