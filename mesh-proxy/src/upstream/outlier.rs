//! Outlier detection (passive health checking, DestinationRule `outlierDetection`): endpoints
//! that fail in a row are ejected, skipped by every balancer, and return after their ejection
//! time, which grows with the number of times they were ejected. Time is passed in, so the
//! state machine is pure and tested without waiting.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mesh_proto::config::v1 as pb;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
/// Envoy's `max_ejection_time` default: the growth of an ejection time stops here.
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// How one attempt on an endpoint ended, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The endpoint answered with this status.
    Status(u16),
    /// No answer: connect failure, reset or timeout (Envoy's local-origin errors).
    LocalFailure,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    split_local_origin: bool,
    consecutive_local_origin: u32,
    interval: Duration,
    base_ejection: Duration,
    max_ejection_percent: u32,
    min_health_percent: u32,
}

impl Config {
    pub fn from_spec(od: &pb::OutlierDetection) -> Self {
        let ms = |v: u64, default| {
            if v == 0 {
                default
            } else {
                Duration::from_millis(v)
            }
        };
        Self {
            consecutive_5xx: od.consecutive_5xx,
            consecutive_gateway: od.consecutive_gateway_errors,
            split_local_origin: od.split_external_local_origin_errors,
            consecutive_local_origin: od.consecutive_local_origin_failures,
            interval: ms(od.interval_ms, DEFAULT_INTERVAL),
            base_ejection: ms(od.base_ejection_time_ms, DEFAULT_BASE_EJECTION),
            max_ejection_percent: od.max_ejection_percent.min(100),
            min_health_percent: od.min_health_percent.min(100),
        }
    }
}

/// One endpoint's failure counts and ejection.
#[derive(Debug, Default, Clone)]
pub struct HostState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    /// Set while ejected (cleared lazily once past).
    ejected_until: Option<Instant>,
    /// Ejections that still lengthen the next one; one is forgiven per healthy interval.
    ejections: u32,
    /// When the last ejection ended, for that forgiveness.
    returned_at: Option<Instant>,
}

impl HostState {
    /// Counts one result; true when a threshold was just reached.
    fn observe(&mut self, cfg: &Config, observed: Observed) -> bool {
        let reached = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
        match observed {
            Observed::LocalFailure if cfg.split_local_origin => {
                self.consecutive_local += 1;
                reached(self.consecutive_local, cfg.consecutive_local_origin)
            }
            // Without the split, a local failure counts as the 503 Envoy answers for it.
            Observed::LocalFailure => self.observe_status(cfg, 503),
            Observed::Status(status) => {
                // An answer means the connection worked.
                self.consecutive_local = 0;
                self.observe_status(cfg, status)
            }
        }
    }

    fn observe_status(&mut self, cfg: &Config, status: u16) -> bool {
        if !(500..600).contains(&status) {
            self.consecutive_5xx = 0;
            self.consecutive_gateway = 0;
            return false;
        }
        if matches!(status, 502..=504) {
            self.consecutive_gateway += 1;
        } else {
            self.consecutive_gateway = 0;
        }
        self.consecutive_5xx += 1;
        let reached = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
        reached(self.consecutive_5xx, cfg.consecutive_5xx)
            || reached(self.consecutive_gateway, cfg.consecutive_gateway)
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Ejects until `now` + base time x ejections (capped), forgiving one earlier ejection per
    /// healthy interval since the last one ended.
    fn eject(&mut self, cfg: &Config, now: Instant) {
        if let Some(back) = self.returned_at {
            let healthy = now.saturating_duration_since(back);
            let forgiven = (healthy.as_nanos() / cfg.interval.as_nanos().max(1)) as u32;
            self.ejections = self.ejections.saturating_sub(forgiven);
        }
        self.ejections += 1;
        let time = cfg
            .base_ejection
            .saturating_mul(self.ejections)
            .min(MAX_EJECTION.max(cfg.base_ejection));
        self.ejected_until = Some(now + time);
        self.returned_at = Some(now + time);
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
        self.consecutive_local = 0;
    }

    /// Clears a past ejection; true when it was one.
    fn expire(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if now >= until => {
                self.ejected_until = None;
                true
            }
            _ => false,
        }
    }
}

/// The detector of one cluster: a state per endpoint (by the index of the endpoint in the
/// cluster's list).
#[derive(Debug)]
pub struct Detector {
    config: Config,
    /// The endpoints' addresses, so a config update can carry their states over.
    addresses: Vec<SocketAddr>,
    hosts: Mutex<Vec<HostState>>,
    /// Endpoints with an ejection not yet cleared: zero lets picks skip every check.
    ejected: AtomicUsize,
    ejections: Counter,
}

impl Detector {
    pub fn new(config: Config, addresses: Vec<SocketAddr>, ejections: Counter) -> Self {
        Self::carried_over(config, addresses, None, ejections)
    }

    /// A detector for a new endpoint list that keeps what `previous` knew of the endpoints
    /// still in it (their counts and ejections), as Envoy keeps host state across updates.
    pub fn carried_over(
        config: Config,
        addresses: Vec<SocketAddr>,
        previous: Option<&Detector>,
        ejections: Counter,
    ) -> Self {
        let old = previous.map(|p| (&p.addresses, p.hosts.lock().expect("outlier lock")));
        let hosts: Vec<HostState> = addresses
            .iter()
            .map(|a| {
                old.as_ref()
                    .and_then(|(addrs, states)| {
                        Some(states[addrs.iter().position(|x| x == a)?].clone())
                    })
                    .unwrap_or_default()
            })
            .collect();
        drop(old);
        let ejected = hosts.iter().filter(|h| h.ejected_until.is_some()).count();
        Self {
            config,
            addresses,
            hosts: Mutex::new(hosts),
            ejected: AtomicUsize::new(ejected),
            ejections,
        }
    }

    /// Counts a result of endpoint `host`; ejects it when a threshold is reached and the
    /// ejection share allows (one endpoint may always be ejected). True when it was ejected.
    pub fn observe(&self, host: usize, observed: Observed, now: Instant) -> bool {
        let mut hosts = self.hosts.lock().expect("outlier lock");
        let total = hosts.len();
        let Some(state) = hosts.get_mut(host) else {
            return false;
        };
        if state.is_ejected(now) || !state.observe(&self.config, observed) {
            return false;
        }
        let ejected = hosts.iter().filter(|h| h.is_ejected(now)).count();
        let share = ejected * 100 / total.max(1);
        if ejected > 0 && share >= self.config.max_ejection_percent as usize {
            return false;
        }
        let state = &mut hosts[host];
        if state.ejected_until.is_none() {
            self.ejected.fetch_add(1, Ordering::AcqRel);
        }
        state.eject(&self.config, now);
        self.ejections.inc();
        true
    }

    /// Whether any endpoint may be ejected now (cheap: no lock when none is).
    pub fn any_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire) > 0
    }

    /// The endpoints to skip now, by index, or none when fewer than `minHealthPercent` of the
    /// endpoints are healthy (then every endpoint is used, as Envoy's panic threshold).
    pub fn ejected_now(&self, now: Instant) -> Vec<usize> {
        let mut hosts = self.hosts.lock().expect("outlier lock");
        for h in hosts.iter_mut() {
            if h.expire(now) {
                self.ejected.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let ejected: Vec<usize> = (0..hosts.len())
            .filter(|&i| hosts[i].is_ejected(now))
            .collect();
        let healthy = hosts.len() - ejected.len();
        if healthy * 100 < self.config.min_health_percent as usize * hosts.len() {
            return Vec::new();
        }
        ejected
    }
}

/// What a pick must avoid: the tried endpoints and the ejected ones; when together they are
/// every endpoint, the ejected ones only (a retry may go back to a healthy endpoint); when
/// every endpoint is ejected, the tried ones only.
pub fn avoid(ejected: &[usize], tried: &[usize], endpoints: usize) -> Vec<usize> {
    let mut both: Vec<usize> = ejected.iter().chain(tried).copied().collect();
    both.sort_unstable();
    both.dedup();
    let covers_all = |set: &[usize]| (0..endpoints).all(|i| set.contains(&i));
    if !covers_all(&both) {
        both
    } else if !covers_all(ejected) {
        ejected.to_vec()
    } else {
        tried.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avoid_prefers_healthy_untried_then_healthy_then_anything() {
        assert_eq!(avoid(&[0], &[1], 3), [0, 1]);
        assert_eq!(avoid(&[0], &[1, 2], 3), [0]);
        assert_eq!(avoid(&[0, 1, 2], &[1], 3), [1]);
    }

    fn config(yaml: &str) -> Config {
        Config::from_spec(&serde_saphyr::from_str(yaml).unwrap())
    }

    fn addresses(n: usize) -> Vec<SocketAddr> {
        (1..=n as u16)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    fn detector(yaml: &str, hosts: usize) -> Detector {
        Detector::new(config(yaml), addresses(hosts), Counter::default())
    }

    #[test]
    fn a_new_endpoint_list_keeps_the_state_of_endpoints_still_in_it() {
        let d = detector("{consecutive5xx: 2, maxEjectionPercent: 100}", 3);
        let t = Instant::now();
        assert!(!d.observe(0, Observed::Status(500), t));
        assert!(!d.observe(1, Observed::Status(500), t));
        assert!(d.observe(1, Observed::Status(500), t));
        // Endpoint 3 gone, 4 new, the order changed.
        let mut next = addresses(4);
        next.remove(2);
        next.reverse();
        let n = Detector::carried_over(d.config, next, Some(&d), Counter::default());
        assert!(n.any_ejected());
        assert_eq!(n.ejected_now(t), [1], "127.0.0.1:2 is now at index 1");
        assert!(
            n.observe(2, Observed::Status(500), t),
            "127.0.0.1:1 had one 5xx already"
        );
        assert!(
            !n.observe(0, Observed::Status(500), t),
            "127.0.0.1:4 starts afresh"
        );
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn consecutive_5xx_eject_and_a_success_resets_the_count() {
        let d = detector("{consecutive5xx: 3, maxEjectionPercent: 100}", 2);
        let t = Instant::now();
        assert!(!d.observe(0, Observed::Status(500), t));
        assert!(!d.observe(0, Observed::Status(503), t));
        assert!(!d.observe(0, Observed::Status(200), t));
        assert!(!d.observe(0, Observed::Status(500), t));
        assert!(!d.observe(0, Observed::LocalFailure, t), "counts as 503");
        assert!(d.observe(0, Observed::Status(502), t));
        assert_eq!(d.ejected_now(t), [0]);
        assert_eq!(d.ejections.get(), 1);
    }

    #[test]
    fn gateway_errors_count_apart_and_a_500_breaks_their_run() {
        let d = detector("{consecutiveGatewayErrors: 2, maxEjectionPercent: 100}", 1);
        let t = Instant::now();
        assert!(!d.observe(0, Observed::Status(503), t));
        assert!(!d.observe(0, Observed::Status(500), t));
        assert!(!d.observe(0, Observed::Status(504), t));
        assert!(d.observe(0, Observed::Status(502), t));
    }

    #[test]
    fn split_local_origin_failures_have_their_own_threshold() {
        let d = detector(
            "{consecutive5xx: 2, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3, maxEjectionPercent: 100}",
            1,
        );
        let t = Instant::now();
        assert!(!d.observe(0, Observed::LocalFailure, t));
        assert!(
            !d.observe(0, Observed::LocalFailure, t),
            "not 5xx when split"
        );
        assert!(d.observe(0, Observed::LocalFailure, t));
        let d = detector(
            "{consecutive5xx: 5, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2, maxEjectionPercent: 100}",
            1,
        );
        assert!(!d.observe(0, Observed::LocalFailure, t));
        assert!(!d.observe(0, Observed::Status(200), t), "an answer resets");
        assert!(!d.observe(0, Observed::LocalFailure, t));
        assert!(d.observe(0, Observed::LocalFailure, t));
    }

    #[test]
    fn ejection_time_grows_with_ejections_and_is_forgiven_over_healthy_intervals() {
        let d = detector(
            "{consecutive5xx: 1, baseEjectionTimeMs: 10000, intervalMs: 1000, maxEjectionPercent: 100}",
            2,
        );
        let t0 = Instant::now();
        assert!(d.observe(0, Observed::Status(500), t0));
        assert_eq!(d.ejected_now(t0 + 9 * S), [0]);
        assert!(d.ejected_now(t0 + 10 * S).is_empty(), "back after 10 s");
        assert!(!d.any_ejected());
        // Second ejection right away: twice the base time.
        let t1 = t0 + 10 * S;
        assert!(d.observe(0, Observed::Status(500), t1));
        assert_eq!(d.ejected_now(t1 + 19 * S), [0]);
        assert!(d.ejected_now(t1 + 20 * S).is_empty());
        // Healthy for 5 intervals after returning: both earlier ejections are forgiven.
        let t2 = t1 + 25 * S;
        assert!(d.observe(0, Observed::Status(500), t2));
        assert!(d.ejected_now(t2 + 10 * S).is_empty());
        assert_eq!(d.ejections.get(), 3);
    }

    #[test]
    fn ejection_time_is_capped() {
        let d = detector(
            "{consecutive5xx: 1, baseEjectionTimeMs: 200000, maxEjectionPercent: 100}",
            1,
        );
        let t = Instant::now();
        assert!(d.observe(0, Observed::Status(500), t));
        assert!(d.ejected_now(t + 200 * S).is_empty());
        assert!(d.observe(0, Observed::Status(500), t + 200 * S));
        assert!(
            d.ejected_now(t + 500 * S).is_empty(),
            "300 s at most, not 400"
        );
    }

    #[test]
    fn max_ejection_percent_bounds_ejections_but_one_is_always_allowed() {
        let t = Instant::now();
        let d = detector("{consecutive5xx: 1, maxEjectionPercent: 10}", 3);
        assert!(d.observe(0, Observed::Status(500), t));
        assert!(
            !d.observe(1, Observed::Status(500), t),
            "33% ejected already"
        );
        assert_eq!(d.ejected_now(t), [0]);
        let d = detector("{consecutive5xx: 1, maxEjectionPercent: 100}", 3);
        assert!(d.observe(0, Observed::Status(500), t));
        assert!(d.observe(1, Observed::Status(500), t));
        assert_eq!(d.ejected_now(t), [0, 1]);
    }

    #[test]
    fn below_min_health_percent_every_endpoint_is_used() {
        let t = Instant::now();
        let d = detector(
            "{consecutive5xx: 1, maxEjectionPercent: 100, minHealthPercent: 50}",
            3,
        );
        assert!(d.observe(0, Observed::Status(500), t));
        assert_eq!(d.ejected_now(t), [0], "67% healthy");
        assert!(d.observe(1, Observed::Status(500), t));
        assert!(d.ejected_now(t).is_empty(), "33% healthy: panic, use all");
    }

    #[test]
    fn zero_thresholds_never_eject() {
        let d = detector("{maxEjectionPercent: 100}", 1);
        let t = Instant::now();
        for _ in 0..100 {
            assert!(!d.observe(0, Observed::Status(503), t));
        }
        assert!(!d.any_ejected());
    }
}
