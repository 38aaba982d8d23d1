//! The proxy's Prometheus metrics, served on the admin port at `/stats/prometheus`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::sync::Arc;

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    pub result: String,
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
    pub downstream_connections: Family<ListenerLabels, Counter>,
    pub downstream_connections_active: Family<ListenerLabels, Gauge>,
    pub downstream_connections_overflow: Family<ListenerLabels, Counter>,
    pub config_updates: Family<ConfigLabels, Counter>,
    pub mirror_requests: Family<MirrorLabels, Counter>,
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
            "downstream_cx_overflow",
            "Downstream connections closed at accept because the listener was at its limit",
            self.downstream_connections_overflow.clone(),
        );
        r.register(
            "config_updates",
            "Config updates by result (accepted, rejected)",
            self.config_updates.clone(),
        );
        self.access_log.register(r);
        r.register(
            "mirror_requests",
            "Shadow copies of mirrored requests, by cluster and how they ended",
            self.mirror_requests.clone(),
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

    pub fn config_update(&self, accepted: bool) {
        let result = if accepted { "accepted" } else { "rejected" };
        self.config_updates
            .get_or_create(&ConfigLabels {
                result: result.to_string(),
            })
            .inc();
    }
}
