//! The workload certificate's expiry as metrics, read from the identity in force at each
//! scrape, so a renewal shows at once and nothing has to be updated on the side:
//!
//! - `istio_agent_cert_expiry_seconds{resource_name="default"}`: seconds left (negative once
//!   expired), Istio's agent metric, so its alerts work unchanged;
//! - `mesh_proxy_certificate_expiration_timestamp_seconds`: the certificate's `notAfter`, as
//!   Unix seconds.
//!
//! No sample while the proxy has no certificate (no CA, or the first one is pending).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::identity::{CurrentIdentity, IdentitySlot};

/// Istio's label value for the workload certificate (the SDS resource name).
const RESOURCE_NAME: &str = "default";

/// What a scrape reports of the certificate in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Seconds from now until `notAfter`.
    Remaining,
    /// `notAfter` as Unix seconds.
    Timestamp,
}

#[derive(Debug)]
struct CertExpiry {
    identity: Arc<IdentitySlot>,
    reading: Reading,
}

/// Seconds between `a` and `b`, negative when `b` is before `a`.
fn seconds_between(a: SystemTime, b: SystemTime) -> i64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

impl CertExpiry {
    fn value(&self, now: SystemTime) -> Option<i64> {
        let not_after = self.identity.current_identity()?.not_after();
        Some(match self.reading {
            Reading::Remaining => seconds_between(now, not_after),
            Reading::Timestamp => seconds_between(UNIX_EPOCH, not_after),
        })
    }
}

impl EncodeMetric for CertExpiry {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let Some(value) = self.value(SystemTime::now()) else {
            return Ok(());
        };
        match self.reading {
            Reading::Remaining => encoder
                .encode_family(&[("resource_name", RESOURCE_NAME)])?
                .encode_gauge(&value),
            Reading::Timestamp => encoder.encode_gauge(&value),
        }
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// Registers both expiry gauges of `identity`.
pub fn register(registry: &mut Registry, identity: &Arc<IdentitySlot>) {
    registry.register(
        "istio_agent_cert_expiry_seconds",
        "The time remaining, in seconds, before the workload certificate chain expires; \
         negative once expired",
        CertExpiry {
            identity: identity.clone(),
            reading: Reading::Remaining,
        },
    );
    registry.register(
        "mesh_proxy_certificate_expiration_timestamp_seconds",
        "When the workload certificate in use expires (its notAfter), as Unix seconds",
        CertExpiry {
            identity: identity.clone(),
            reading: Reading::Timestamp,
        },
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn seconds_are_negative_past_the_end() {
        let t = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(seconds_between(t, t + Duration::from_secs(60)), 60);
        assert_eq!(seconds_between(t, t - Duration::from_secs(60)), -60);
    }

    #[test]
    fn nothing_is_reported_without_a_certificate() {
        let mut registry = Registry::default();
        register(&mut registry, &Arc::new(IdentitySlot::default()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("resource_name"), "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("mesh_proxy_certificate_expiration_timestamp_seconds ")),
            "{text}"
        );
    }
}
