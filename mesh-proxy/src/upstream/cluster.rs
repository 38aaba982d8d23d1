//! A cluster at run time: its endpoints grouped in subsets, a balancer per subset, and the
//! connection pool, kept across config updates when the connection settings are unchanged.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use mesh_proto::config::v1 as pb;

use super::connect::{ConnectionStats, Keepalive};
use super::limits::Thresholds;
use super::outlier::{self, Detector, Observed};
use super::pool::{Pool, PoolSettings};
use super::tls_policy::{CompileFor, TransportPlan};
use crate::config::FieldError;
use crate::identity::IdentitySlot;
use crate::lb::{self, Balancer, Policy};
use crate::route::query_param;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default idle timeout for upstream connections.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_RETRY_BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    SameAsDownstream,
    Http1,
    Http2,
}

/// Where a consistent-hash key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashSource {
    Header(http::HeaderName),
    Cookie(String),
    QueryParameter(String),
    SourceIp,
}

pub struct Cluster {
    pub name: String,
    spec: pb::Cluster,
    pub protocol: Protocol,
    pub retry_buffer_bytes: usize,
    hash: Option<HashSource>,
    /// Balancer per subset name; "" holds every endpoint.
    subsets: HashMap<String, Balancer>,
    pub pool: Arc<Pool>,
    /// Outlier detection, with each subset's members as indexes into the cluster's endpoints.
    outliers: Option<(Detector, HashMap<String, Vec<usize>>)>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What a request offers for consistent hashing.
pub struct HashInput<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub source_ip: IpAddr,
}

impl Cluster {
    /// Builds a cluster; `previous` (the same name in the last config) lends its pool when
    /// the connection settings did not change, so open connections survive the update.
    /// Without an identity: mesh mTLS is never automatic.
    pub fn compile(
        spec: &pb::Cluster,
        previous: Option<&Arc<Cluster>>,
        stats: impl FnOnce() -> ConnectionStats,
    ) -> Result<Self, FieldError> {
        Self::compile_with_identity(spec, previous, stats, &Arc::default())
    }

    /// [`Cluster::compile`], with the proxy's identity for mesh mTLS to the endpoints.
    pub fn compile_with_identity(
        spec: &pb::Cluster,
        previous: Option<&Arc<Cluster>>,
        stats: impl FnOnce() -> ConnectionStats,
        identity: &Arc<IdentitySlot>,
    ) -> Result<Self, FieldError> {
        Self::build(spec, previous, stats, identity, CompileFor::Proxy)
    }

    /// The compile step, for a proxy or for a check (see [`CompileFor`]).
    pub fn build(
        spec: &pb::Cluster,
        previous: Option<&Arc<Cluster>>,
        stats: impl FnOnce() -> ConnectionStats,
        identity: &Arc<IdentitySlot>,
        purpose: CompileFor,
    ) -> Result<Self, FieldError> {
        let settings = PoolSettings {
            connect_timeout: ms_or(spec.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: ms_or(spec.idle_timeout_ms, DEFAULT_IDLE_TIMEOUT),
            keepalive: spec.tcp_keepalive.as_ref().map(keepalive),
            thresholds: Thresholds::from_spec(
                spec.circuit_breakers.as_ref(),
                spec.retry_budget.as_ref(),
            ),
        };
        let protocol = match spec.protocol() {
            pb::UpstreamProtocol::Unspecified | pb::UpstreamProtocol::SameAsDownstream => {
                Protocol::SameAsDownstream
            }
            pb::UpstreamProtocol::Http1 => Protocol::Http1,
            pb::UpstreamProtocol::Http2 => Protocol::Http2,
        };
        let policy = match spec.lb_policy() {
            pb::LbPolicy::Unspecified | pb::LbPolicy::LeastRequest => Policy::LeastRequest,
            pb::LbPolicy::RoundRobin => Policy::RoundRobin,
            pb::LbPolicy::Random => Policy::Random,
            pb::LbPolicy::RingHash => Policy::RingHash,
            pb::LbPolicy::Maglev => Policy::Maglev,
        };
        let hash = compile_hash(spec)?;
        if matches!(policy, Policy::RingHash | Policy::Maglev) && hash.is_none() {
            return Err(FieldError::new(
                "hashPolicy",
                "RING_HASH and MAGLEV need a hash policy",
            ));
        }

        let mut transports = TransportPlan::new(spec.tls.as_ref(), identity, purpose)?;
        let mut endpoints = Vec::with_capacity(spec.endpoints.len());
        for (i, e) in spec.endpoints.iter().enumerate() {
            let address: SocketAddr = e.address.parse().map_err(|_| {
                FieldError::new(
                    format!("endpoints[{i}].address"),
                    format!("{:?} is not an IP:port address", e.address),
                )
            })?;
            let transport = transports.for_endpoint(e, address)?;
            endpoints.push((
                Arc::new(lb::Endpoint::new(address, e.weight.max(1)).with_transport(transport)),
                &e.labels,
            ));
        }
        let mut subsets = HashMap::with_capacity(spec.subsets.len() + 1);
        subsets.insert(
            String::new(),
            Balancer::new(policy, endpoints.iter().map(|(e, _)| e.clone()).collect()),
        );
        for (i, subset) in spec.subsets.iter().enumerate() {
            if subset.name.is_empty() {
                return Err(FieldError::new(
                    format!("subsets[{i}].name"),
                    "must not be empty",
                ));
            }
            let members = endpoints
                .iter()
                .filter(|(_, labels)| subset.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
                .map(|(e, _)| e.clone())
                .collect();
            if subsets
                .insert(subset.name.clone(), Balancer::new(policy, members))
                .is_some()
            {
                return Err(FieldError::new(
                    format!("subsets[{i}].name"),
                    format!("duplicate subset {:?}", subset.name),
                ));
            }
        }

        let pool = match previous {
            Some(p) if p.pool.settings() == settings => p.pool.clone(),
            _ if purpose == CompileFor::Check => Pool::unswept(settings, stats()),
            _ => Pool::new(settings, stats()),
        };
        let outliers = spec.outlier_detection.as_ref().map(|od| {
            let members = subset_members(spec, &endpoints);
            let detector = Detector::carried_over(
                outlier::Config::from_spec(od),
                endpoints.iter().map(|(e, _)| e.address).collect(),
                previous.and_then(|p| p.outliers.as_ref()).map(|(d, _)| d),
                pool.stats().ejections.clone(),
            );
            (detector, members)
        });
        Ok(Self {
            name: spec.name.clone(),
            spec: spec.clone(),
            protocol,
            retry_buffer_bytes: match spec.retry_buffer_bytes {
                0 => DEFAULT_RETRY_BUFFER,
                n => n as usize,
            },
            hash,
            subsets,
            pool,
            outliers,
        })
    }

    /// Indexes (in `subset`'s balancer) of the endpoints outlier detection ejected; None when
    /// none is, the common case, decided without a lock.
    pub fn ejected(&self, subset: &str) -> Option<Vec<usize>> {
        let (detector, members) = self.outliers.as_ref()?;
        if !detector.any_ejected() {
            return None;
        }
        let ejected = detector.ejected_now(tokio::time::Instant::now());
        let in_subset: Vec<usize> = match members.get(subset) {
            Some(m) => (0..m.len()).filter(|i| ejected.contains(&m[*i])).collect(),
            None => ejected,
        };
        (!in_subset.is_empty()).then_some(in_subset)
    }

    /// Counts how an attempt on endpoint `index` of `subset`'s balancer ended.
    pub fn observe(&self, subset: &str, index: usize, observed: Observed) {
        let Some((detector, members)) = &self.outliers else {
            return;
        };
        let host = match members.get(subset) {
            Some(m) => m.get(index).copied(),
            None => Some(index),
        };
        if let Some(host) = host
            && detector.observe(host, observed, tokio::time::Instant::now())
        {
            tracing::info!(cluster = %self.name, endpoint = host, "outlier detection ejected an endpoint");
        }
    }

    pub fn spec(&self) -> &pb::Cluster {
        &self.spec
    }

    /// The balancer of a subset ("" for the whole cluster); None for an unknown subset.
    pub fn balancer(&self, subset: &str) -> Option<&Balancer> {
        self.subsets.get(subset)
    }

    /// The request's hash key, when the cluster hashes and the request carries the input.
    pub fn hash_key(&self, input: &HashInput<'_>) -> Option<u64> {
        match self.hash.as_ref()? {
            HashSource::Header(name) => input.headers.get(name).map(|v| lb::hash_key(v.as_bytes())),
            HashSource::Cookie(name) => {
                cookie(input.headers, name).map(|v| lb::hash_key(v.as_bytes()))
            }
            HashSource::QueryParameter(name) => {
                query_param(input.query?, name).map(|v| lb::hash_key(v.as_bytes()))
            }
            HashSource::SourceIp => Some(lb::hash_key(input.source_ip.to_string().as_bytes())),
        }
    }
}

fn ms_or(ms: u64, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms)
    }
}

/// For each named subset, its members as indexes into the cluster's endpoints ("" is all).
fn subset_members(
    spec: &pb::Cluster,
    endpoints: &[(
        Arc<lb::Endpoint>,
        &std::collections::BTreeMap<String, String>,
    )],
) -> HashMap<String, Vec<usize>> {
    spec.subsets
        .iter()
        .map(|s| {
            let members = endpoints
                .iter()
                .enumerate()
                .filter(|(_, (_, labels))| s.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
                .map(|(i, _)| i)
                .collect();
            (s.name.clone(), members)
        })
        .collect()
}

fn keepalive(k: &pb::TcpKeepalive) -> Keepalive {
    let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
    Keepalive {
        time: ms(k.time_ms),
        interval: ms(k.interval_ms),
        probes: (k.probes > 0).then_some(k.probes),
    }
}

fn compile_hash(spec: &pb::Cluster) -> Result<Option<HashSource>, FieldError> {
    use pb::hash_policy::Key;
    let Some(key) = spec.hash_policy.as_ref().and_then(|h| h.key.as_ref()) else {
        return Ok(None);
    };
    let empty = |f: &str| {
        Err(FieldError::new(
            format!("hashPolicy.{f}"),
            "must not be empty",
        ))
    };
    Ok(Some(match key {
        Key::Header(h) if h.is_empty() => return empty("header"),
        Key::Header(h) => HashSource::Header(
            http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                FieldError::new("hashPolicy.header", format!("invalid header name {h:?}"))
            })?,
        ),
        Key::Cookie(c) if c.is_empty() => return empty("cookie"),
        Key::Cookie(c) => HashSource::Cookie(c.clone()),
        Key::QueryParameter(q) if q.is_empty() => return empty("queryParameter"),
        Key::QueryParameter(q) => HashSource::QueryParameter(q.clone()),
        Key::SourceIp(true) => HashSource::SourceIp,
        Key::SourceIp(false) => return Ok(None),
    }))
}

/// The value of a cookie in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> pb::Cluster {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn subsets_select_endpoints_by_labels() {
        let c = Cluster::compile(
            &spec(
                r#"
name: reviews
lbPolicy: ROUND_ROBIN
subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
  - { name: none, labels: { version: v9 } }
endpoints:
  - { address: "127.0.0.1:1001", labels: { version: v1, app: reviews } }
  - { address: "127.0.0.1:1002", labels: { version: v2, app: reviews } }
  - { address: "127.0.0.1:1003", labels: { version: v2 } }
"#,
            ),
            None,
            ConnectionStats::default,
        )
        .unwrap();
        let addrs = |s: &str| {
            let mut v: Vec<u16> = c
                .balancer(s)
                .unwrap()
                .endpoints()
                .iter()
                .map(|e| e.address.port())
                .collect();
            v.sort();
            v
        };
        assert_eq!(addrs(""), [1001, 1002, 1003]);
        assert_eq!(addrs("v1"), [1001]);
        assert_eq!(addrs("v2"), [1002, 1003]);
        assert!(addrs("none").is_empty());
        assert!(c.balancer("v3").is_none());
    }

    #[test]
    fn ejections_survive_a_config_update() {
        let yaml = "{name: a, outlierDetection: {consecutive5xx: 1, maxEjectionPercent: 100},
            endpoints: [{address: '127.0.0.1:1'}, {address: '127.0.0.1:2'}]}";
        let first =
            Arc::new(Cluster::compile(&spec(yaml), None, ConnectionStats::default).unwrap());
        first.observe("", 1, Observed::Status(503));
        assert_eq!(first.ejected(""), Some(vec![1]));
        let next = Cluster::compile(&spec(yaml), Some(&first), ConnectionStats::default).unwrap();
        assert_eq!(next.ejected(""), Some(vec![1]));
        let fresh = Cluster::compile(&spec(yaml), None, ConnectionStats::default).unwrap();
        assert_eq!(fresh.ejected(""), None);
    }

    #[test]
    fn bad_address_and_missing_hash_are_reported() {
        let err = Cluster::compile(
            &spec("{name: a, endpoints: [{address: 'reviews:80'}]}"),
            None,
            ConnectionStats::default,
        )
        .unwrap_err();
        assert_eq!(err.field, "endpoints[0].address");
        let err = Cluster::compile(
            &spec("{name: a, lbPolicy: MAGLEV}"),
            None,
            ConnectionStats::default,
        )
        .unwrap_err();
        assert_eq!(err.field, "hashPolicy");
    }

    #[test]
    fn hash_key_sources() {
        let c = |key: &str| {
            Cluster::compile(
                &spec(&format!(
                    "{{name: a, lbPolicy: RING_HASH, hashPolicy: {{{key}}}}}"
                )),
                None,
                ConnectionStats::default,
            )
            .unwrap()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "alice".parse().unwrap());
        headers.insert("cookie", "a=1; session=s42".parse().unwrap());
        let input = HashInput {
            headers: &headers,
            query: Some("shard=7"),
            source_ip: "127.0.0.9".parse().unwrap(),
        };
        assert_eq!(
            c("header: X-User").hash_key(&input),
            Some(lb::hash_key(b"alice"))
        );
        assert_eq!(
            c("cookie: session").hash_key(&input),
            Some(lb::hash_key(b"s42"))
        );
        assert_eq!(
            c("queryParameter: shard").hash_key(&input),
            Some(lb::hash_key(b"7"))
        );
        assert_eq!(
            c("sourceIp: true").hash_key(&input),
            Some(lb::hash_key(b"127.0.0.9"))
        );
        assert_eq!(c("header: x-missing").hash_key(&input), None);
    }
}
