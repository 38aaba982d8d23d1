//! Pilot's Prometheus metrics, with Istio's names, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: String,
}

pub struct PilotMetrics {
    /// Responses sent, by resource type.
    pub pushes: Family<TypeLabels, Counter>,
    /// Responses that failed: NACKed by the proxy or not deliverable.
    pub push_errors: Family<TypeLabels, Counter>,
    /// Responses a proxy rejected (NACKed), by resource type.
    pub rejects: Family<TypeLabels, Counter>,
    /// Seconds from a config change to the proxy's ACK of it.
    pub convergence: Histogram,
    /// Seconds a proxy waited in the push queue before its push started.
    pub queue_time: Histogram,
    pub connected: Gauge,
    pub config_errors: Gauge,
}

impl Default for PilotMetrics {
    fn default() -> Self {
        let buckets = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        Self {
            pushes: Family::default(),
            push_errors: Family::default(),
            rejects: Family::default(),
            convergence: Histogram::new(buckets),
            // Istio's buckets for pilot_proxy_queue_time.
            queue_time: Histogram::new([0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]),
            connected: Gauge::default(),
            config_errors: Gauge::default(),
        }
    }
}

impl PilotMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pilot_xds_pushes",
            "Discovery responses sent, by type",
            self.pushes.clone(),
        );
        registry.register(
            "pilot_xds_push_errors",
            "Discovery responses NACKed or not delivered, by type",
            self.push_errors.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Seconds from a config change until a proxy ACKed it",
            self.convergence.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "Discovery responses a proxy rejected (NACKed), by type",
            self.rejects.clone(),
        );
        registry.register(
            "pilot_proxy_queue_time",
            "Seconds a proxy waited in the push queue",
            self.queue_time.clone(),
        );
        registry.register("pilot_xds", "Connected proxies", self.connected.clone());
        registry.register(
            "pilot_config_errors",
            "Config objects currently rejected by validation",
            self.config_errors.clone(),
        );
    }

    pub fn pushed(&self, kind: &str) {
        self.pushes
            .get_or_create(&TypeLabels {
                r#type: kind.to_string(),
            })
            .inc();
    }

    /// A proxy NACKed a response of `kind`.
    pub fn rejected(&self, kind: &str) {
        self.rejects
            .get_or_create(&TypeLabels {
                r#type: kind.to_string(),
            })
            .inc();
    }

    pub fn push_error(&self, kind: &str) {
        self.push_errors
            .get_or_create(&TypeLabels {
                r#type: kind.to_string(),
            })
            .inc();
    }
}
