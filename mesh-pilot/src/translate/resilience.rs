//! DestinationRule `connectionPool` limits and `outlierDetection` (already merged for one
//! cluster) in the proxy's model. Every field the proxy does not enforce is reported, never
//! dropped without a word.

use mesh_api::networking::{ConnectionPoolSettings, OutlierDetection};
use mesh_proto::config::v1 as pb;

/// Istio's outlier detection defaults (Envoy's, as Istio documents them).
const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
const DEFAULT_CONSECUTIVE_LOCAL_ORIGIN: u32 = 5;
const DEFAULT_INTERVAL_MS: u64 = 10_000;
const DEFAULT_BASE_EJECTION_MS: u64 = 30_000;
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

fn ms(d: &mesh_api::Duration) -> u64 {
    u64::try_from(d.as_std().as_millis()).unwrap_or(u64::MAX)
}

/// A count from the API (validation rejects negatives); 0 and unset are "no limit".
fn count(v: Option<i32>) -> u32 {
    v.map_or(0, |v| u32::try_from(v).unwrap_or(0))
}

/// Fills the circuit breakers, keepalive and connection lifetimes of `cluster` from
/// `connectionPool`. The connect and HTTP idle timeouts and the protocol choice are filled by
/// the caller.
pub fn connection_pool(
    cluster: &mut pb::Cluster,
    pool: &ConnectionPoolSettings,
    what: &str,
    warnings: &mut Vec<String>,
) {
    let mut limits = pb::CircuitBreakers::default();
    if let Some(tcp) = &pool.tcp {
        limits.max_connections = count(tcp.max_connections);
        cluster.tcp_keepalive = tcp.tcp_keepalive.as_ref().map(|k| pb::TcpKeepalive {
            probes: k.probes.unwrap_or(0),
            time_ms: k.time.as_ref().map_or(0, ms),
            interval_ms: k.interval.as_ref().map_or(0, ms),
        });
        // As Istio: the TCP proxy's idle timeout (`0s` turns it off; unset, the proxy's hour).
        cluster.tcp_idle_timeout_ms = tcp.idle_timeout.as_ref().map(ms);
        cluster.max_connection_duration_ms = tcp.max_connection_duration.as_ref().map_or(0, ms);
    }
    if let Some(http) = &pool.http {
        limits.max_pending_requests = count(http.http1_max_pending_requests);
        limits.max_requests = count(http.http2_max_requests);
        limits.max_requests_per_connection = count(http.max_requests_per_connection);
        limits.max_retries = count(http.max_retries);
        cluster.max_concurrent_streams = count(http.max_concurrent_streams);
        if http.http2_keep_alive.is_some() {
            warnings.push(format!(
                "{what}: connectionPool.http.http2KeepAlive is not supported yet; ignored"
            ));
        }
    }
    if limits != pb::CircuitBreakers::default() {
        cluster.circuit_breakers = Some(limits);
    }
}

/// `outlierDetection` with Istio's defaults filled in, so the proxy needs none of its own.
pub fn outlier_detection(od: &OutlierDetection) -> pb::OutlierDetection {
    // `consecutiveErrors` is the deprecated name of `consecutive5xxErrors`; 0 turns it off.
    let consecutive_5xx = od
        .consecutive_5xx_errors
        .or(od.consecutive_errors.map(|v| u32::try_from(v).unwrap_or(0)))
        .unwrap_or(DEFAULT_CONSECUTIVE_5XX);
    pb::OutlierDetection {
        consecutive_5xx,
        consecutive_gateway_errors: od.consecutive_gateway_errors.unwrap_or(0),
        split_external_local_origin_errors: od.split_external_local_origin_errors == Some(true),
        consecutive_local_origin_failures: od
            .consecutive_local_origin_failures
            .unwrap_or(DEFAULT_CONSECUTIVE_LOCAL_ORIGIN),
        interval_ms: od.interval.as_ref().map_or(DEFAULT_INTERVAL_MS, ms),
        base_ejection_time_ms: od
            .base_ejection_time
            .as_ref()
            .map_or(DEFAULT_BASE_EJECTION_MS, ms),
        max_ejection_percent: od
            .max_ejection_percent
            .map_or(DEFAULT_MAX_EJECTION_PERCENT, |v| {
                u32::try_from(v).unwrap_or(0)
            }),
        min_health_percent: od
            .min_health_percent
            .map_or(0, |v| u32::try_from(v).unwrap_or(0)),
    }
}

/// The annotation of a DestinationRule that tunes or turns off the retry budget of its
/// clusters (on by default in the proxy: 20% of active requests, at least 3 at once).
pub const RETRY_BUDGET_ANNOTATION: &str = "networking.mesh.dev/retry-budget";

/// The annotation's value: `off`, `<percent>%`, or `<percent>%,<minimum concurrent retries>`
/// (for example `25%,5`). An invalid value is reported and the default budget stays.
pub fn retry_budget(
    value: &str,
    what: &str,
    warnings: &mut Vec<String>,
) -> Option<pb::RetryBudget> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Some(pb::RetryBudget {
            disabled: true,
            ..Default::default()
        });
    }
    let (percent, min) = match value.split_once(',') {
        Some((p, m)) => (p.trim(), Some(m.trim())),
        None => (value, None),
    };
    let percent = percent
        .strip_suffix('%')
        .and_then(|p| p.trim().parse::<f64>().ok())
        .filter(|p| *p > 0.0 && *p <= 100.0);
    let min = match min {
        None => Some(0),
        Some(m) => m.parse::<u32>().ok().filter(|m| *m > 0),
    };
    match (percent, min) {
        (Some(budget_percent), Some(min_retry_concurrency)) => Some(pb::RetryBudget {
            disabled: false,
            budget_percent,
            min_retry_concurrency,
        }),
        _ => {
            warnings.push(format!(
                "{what}: {RETRY_BUDGET_ANNOTATION} {value:?} is not off, <percent>% or <percent>%,<minimum>; the default budget applies"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_budget_annotation() {
        let mut w = Vec::new();
        assert!(retry_budget("off", "dr", &mut w).unwrap().disabled);
        let b = retry_budget("25%", "dr", &mut w).unwrap();
        assert_eq!((b.budget_percent, b.min_retry_concurrency), (25.0, 0));
        let b = retry_budget(" 50% , 5 ", "dr", &mut w).unwrap();
        assert_eq!(
            (b.budget_percent, b.min_retry_concurrency, b.disabled),
            (50.0, 5, false)
        );
        assert!(w.is_empty());
        for bad in ["25", "0%", "150%", "20%,x", "on"] {
            assert!(retry_budget(bad, "default/dr", &mut w).is_none(), "{bad}");
        }
        assert_eq!(w.len(), 5);
        assert!(w[0].starts_with("default/dr: networking.mesh.dev/retry-budget"));
    }
    use mesh_api::networking::{HttpSettings, TcpKeepalive, TcpSettings};

    fn dur(ms: u64) -> Option<mesh_api::Duration> {
        Some(std::time::Duration::from_millis(ms).into())
    }

    #[test]
    fn istio_circuit_breaking_task_limits() {
        let pool = ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                max_connections: Some(1),
                tcp_keepalive: Some(TcpKeepalive {
                    probes: Some(3),
                    time: dur(7_200_000),
                    interval: dur(75_000),
                }),
                ..Default::default()
            }),
            http: Some(HttpSettings {
                http1_max_pending_requests: Some(1),
                max_requests_per_connection: Some(1),
                http2_max_requests: Some(100),
                max_retries: Some(4),
                ..Default::default()
            }),
        };
        let mut c = pb::Cluster::default();
        let mut w = Vec::new();
        connection_pool(&mut c, &pool, "c", &mut w);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            c.circuit_breakers,
            Some(pb::CircuitBreakers {
                max_connections: 1,
                max_pending_requests: 1,
                max_requests: 100,
                max_requests_per_connection: 1,
                max_retries: 4,
            })
        );
        assert_eq!(
            c.tcp_keepalive,
            Some(pb::TcpKeepalive {
                probes: 3,
                time_ms: 7_200_000,
                interval_ms: 75_000
            })
        );
    }

    #[test]
    fn tcp_idle_timeout_and_max_connection_duration_are_translated() {
        let tcp = |idle, max| ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                max_connection_duration: max,
                idle_timeout: idle,
                ..Default::default()
            }),
            http: None,
        };
        let mut w = Vec::new();
        let mut c = pb::Cluster::default();
        connection_pool(&mut c, &tcp(dur(300), dur(60_000)), "c", &mut w);
        assert_eq!(c.tcp_idle_timeout_ms, Some(300));
        assert_eq!(c.max_connection_duration_ms, 60_000);
        // `idleTimeout: 0s` turns the timeout off; unset leaves the proxy's default hour.
        let mut c = pb::Cluster::default();
        connection_pool(&mut c, &tcp(dur(0), None), "c", &mut w);
        assert_eq!(c.tcp_idle_timeout_ms, Some(0));
        assert_eq!(c.max_connection_duration_ms, 0);
        let mut c = pb::Cluster::default();
        connection_pool(&mut c, &tcp(None, None), "c", &mut w);
        assert_eq!(c.tcp_idle_timeout_ms, None);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn max_concurrent_streams_is_translated() {
        let pool = ConnectionPoolSettings {
            tcp: None,
            http: Some(HttpSettings {
                max_concurrent_streams: Some(10),
                ..Default::default()
            }),
        };
        let (mut c, mut w) = (pb::Cluster::default(), Vec::new());
        connection_pool(&mut c, &pool, "c", &mut w);
        assert_eq!(c.max_concurrent_streams, 10);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn fields_not_enforced_are_reported() {
        let pool = ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                max_connections: Some(10),
                ..Default::default()
            }),
            http: Some(HttpSettings {
                http2_keep_alive: Some(Default::default()),
                ..Default::default()
            }),
        };
        let mut c = pb::Cluster::default();
        let mut w = Vec::new();
        connection_pool(&mut c, &pool, "outbound|27017||mongo", &mut w);
        assert_eq!(c.circuit_breakers.unwrap().max_connections, 10);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("http2KeepAlive"));
        assert!(w.iter().all(|m| m.starts_with("outbound|27017||mongo")));
    }

    #[test]
    fn outlier_defaults_are_istios() {
        let d = outlier_detection(&OutlierDetection::default());
        assert_eq!(d.consecutive_5xx, 5);
        assert_eq!(d.consecutive_gateway_errors, 0);
        assert_eq!(d.interval_ms, 10_000);
        assert_eq!(d.base_ejection_time_ms, 30_000);
        assert_eq!(d.max_ejection_percent, 10);
        assert_eq!(d.min_health_percent, 0);
        let d = outlier_detection(&OutlierDetection {
            consecutive_errors: Some(7),
            consecutive_gateway_errors: Some(2),
            split_external_local_origin_errors: Some(true),
            consecutive_local_origin_failures: Some(3),
            interval: dur(1000),
            base_ejection_time: dur(5000),
            max_ejection_percent: Some(100),
            min_health_percent: Some(50),
            ..Default::default()
        });
        assert_eq!(
            d,
            pb::OutlierDetection {
                consecutive_5xx: 7,
                consecutive_gateway_errors: 2,
                split_external_local_origin_errors: true,
                consecutive_local_origin_failures: 3,
                interval_ms: 1000,
                base_ejection_time_ms: 5000,
                max_ejection_percent: 100,
                min_health_percent: 50,
            }
        );
        let off = outlier_detection(&OutlierDetection {
            consecutive_5xx_errors: Some(0),
            consecutive_errors: Some(9),
            ..Default::default()
        });
        assert_eq!(off.consecutive_5xx, 0, "the new name wins, and 0 is off");
    }
}
