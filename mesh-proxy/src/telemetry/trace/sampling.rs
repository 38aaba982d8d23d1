//! Whether a request is traced. The first proxy of a call decides, by the configured
//! percentage; later hops follow the sampled flag it sent. A client's `x-client-trace-id`
//! or a caller's sampled flag forces tracing on.

use mesh_proto::config::v1 as pb;

use super::context::Incoming;

/// Istio's default `randomSamplingPercentage`.
pub const DEFAULT_PERCENTAGE: f64 = 1.0;

/// The sampling percentage of a config, within 0..=100; unset is Istio's default.
pub fn percentage(cfg: Option<&pb::Tracing>) -> f64 {
    match cfg.and_then(|t| t.random_sampling_percentage) {
        Some(p) if p.is_finite() => p.clamp(0.0, 100.0),
        Some(_) => 0.0,
        None => DEFAULT_PERCENTAGE,
    }
}

/// The decision. `roll` is uniform in `[0, 100)`: the request is sampled when it falls below
/// the percentage and no earlier hop decided.
pub fn sampled(incoming: &Incoming, percentage: f64, roll: f64) -> bool {
    incoming.forced || incoming.sampled.unwrap_or(roll < percentage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(sampled: Option<bool>, forced: bool) -> Incoming {
        Incoming {
            sampled,
            forced,
            ..Incoming::default()
        }
    }

    #[test]
    fn the_first_hop_rolls_against_the_percentage() {
        let first = incoming(None, false);
        assert!(sampled(&first, 1.0, 0.5));
        assert!(!sampled(&first, 1.0, 1.0));
        assert!(!sampled(&first, 1.0, 99.9));
        assert!(sampled(&first, 100.0, 99.99));
        assert!(!sampled(&first, 0.0, 0.0));
    }

    #[test]
    fn a_caller_decision_is_followed() {
        assert!(sampled(&incoming(Some(true), false), 0.0, 50.0));
        assert!(!sampled(&incoming(Some(false), false), 100.0, 0.0));
    }

    #[test]
    fn a_client_trace_id_forces_tracing() {
        assert!(sampled(&incoming(None, true), 0.0, 99.0));
        assert!(sampled(&incoming(Some(false), true), 0.0, 99.0));
    }

    #[test]
    fn the_percentage_defaults_to_istios_and_stays_in_range() {
        assert_eq!(percentage(None), 1.0);
        assert_eq!(percentage(Some(&pb::Tracing::default())), 1.0);
        let with = |p: f64| pb::Tracing {
            random_sampling_percentage: Some(p),
            ..Default::default()
        };
        assert_eq!(percentage(Some(&with(0.0))), 0.0);
        assert_eq!(percentage(Some(&with(25.5))), 25.5);
        assert_eq!(percentage(Some(&with(250.0))), 100.0);
        assert_eq!(percentage(Some(&with(f64::NAN))), 0.0);
    }
}
