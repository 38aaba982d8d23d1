//! A cluster at run time: its endpoints grouped in subsets, a balancer per subset, and the
//! connection pool, kept across config updates when the connection settings are unchanged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use mesh_proto::config::v1 as pb;

use super::connect::{ConnectionStats, Keepalive};
use super::limits::Thresholds;
use super::members::{BuildInput, Members};
use super::pool::{Pool, PoolSettings};
use super::resolving::Resolving;
use super::tls_policy::{CompileFor, TransportPlan};
use super::transport::Transport;
use crate::config::FieldError;
use crate::dns::Dns;
use crate::identity::IdentitySlot;
use crate::lb::{self, Policy};
use crate::route::query_param;
use arc_swap::Guard;

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
    members: MemberSource,
    pub pool: Arc<Pool>,
    /// ORIGINAL_DST: how connections to an original destination are secured.
    original_dst: Option<Transport>,
    /// Proxied TCP connections close after this long without a byte either way; None: never.
    pub tcp_idle_timeout: Option<Duration>,
    /// Proxied TCP connections close at this age; None: no limit.
    pub max_connection_duration: Option<Duration>,
}

// The fixed members are read by every request to a static cluster: kept inline, not boxed.
#[allow(clippy::large_enum_variant)]
enum MemberSource {
    Fixed(Members),
    Resolved(Arc<Resolving>),
}

/// A cluster's members as one request reads them.
pub enum MembersRef<'a> {
    Fixed(&'a Members),
    Loaded(Guard<Arc<Members>>),
}

impl std::ops::Deref for MembersRef<'_> {
    type Target = Members;

    fn deref(&self) -> &Members {
        match self {
            Self::Fixed(m) => m,
            Self::Loaded(m) => m,
        }
    }
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
            max_connection_duration: optional_ms(spec.max_connection_duration_ms),
            max_concurrent_streams: (spec.max_concurrent_streams > 0)
                .then_some(spec.max_concurrent_streams as usize),
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

        let pool = match previous {
            Some(p) if p.pool.settings() == settings => p.pool.clone(),
            _ if purpose == CompileFor::Check => Pool::unswept(settings, stats()),
            _ => Pool::new(settings, stats()),
        };
        let ejections = pool.stats().ejections.clone();
        let no_answer = |_: &str| None;
        let initial = Members::build(
            spec,
            BuildInput {
                identity,
                purpose,
                policy,
                answer: &no_answer,
                previous: previous.map(|p| p.members()).as_deref(),
                ejections: ejections.clone(),
            },
        )?;
        let original_dst = match spec.discovery() {
            pb::cluster::Discovery::OriginalDst => {
                if !spec.endpoints.is_empty() {
                    return Err(FieldError::new(
                        "endpoints",
                        "an ORIGINAL_DST cluster has no endpoints",
                    ));
                }
                // One transport for every original destination: the cluster's `tls` for an
                // endpoint that says nothing of itself.
                let mut plan = TransportPlan::new(spec.tls.as_ref(), identity, purpose)?;
                let any = SocketAddr::from(([0, 0, 0, 0], 0));
                Some(plan.for_endpoint(&pb::Endpoint::default(), any)?)
            }
            _ => None,
        };
        let members = match spec.discovery() {
            pb::cluster::Discovery::Static | pb::cluster::Discovery::OriginalDst => {
                MemberSource::Fixed(initial)
            }
            _ => MemberSource::Resolved(Arc::new(Resolving::new(
                spec, initial, identity, policy, ejections,
            ))),
        };
        Ok(Self {
            name: spec.name.clone(),
            spec: spec.clone(),
            protocol,
            retry_buffer_bytes: match spec.retry_buffer_bytes {
                0 => DEFAULT_RETRY_BUFFER,
                n => n as usize,
            },
            hash,
            members,
            pool,
            original_dst,
            tcp_idle_timeout: match spec.tcp_idle_timeout_ms {
                None => Some(DEFAULT_IDLE_TIMEOUT),
                Some(ms) => optional_ms(ms),
            },
            max_connection_duration: optional_ms(spec.max_connection_duration_ms),
        })
    }

    pub fn spec(&self) -> &pb::Cluster {
        &self.spec
    }

    /// The endpoints now: fixed for a static cluster, the latest DNS build otherwise.
    pub fn members(&self) -> MembersRef<'_> {
        match &self.members {
            MemberSource::Fixed(m) => MembersRef::Fixed(m),
            MemberSource::Resolved(r) => MembersRef::Loaded(r.members()),
        }
    }

    /// Whether `subset` ("" for the whole cluster) exists, whatever its endpoints.
    pub fn has_subset(&self, subset: &str) -> bool {
        subset.is_empty() || self.spec.subsets.iter().any(|s| s.name == subset)
    }

    /// For an ORIGINAL_DST cluster, the transport to original destinations; None otherwise.
    pub fn original_dst_transport(&self) -> Option<&Transport> {
        self.original_dst.as_ref()
    }

    /// The DNS side of a cluster with DNS discovery.
    pub fn resolving(&self) -> Option<&Arc<Resolving>> {
        match &self.members {
            MemberSource::Fixed(_) => None,
            MemberSource::Resolved(r) => Some(r),
        }
    }

    /// Starts resolving the names of a DNS cluster (nothing for a static one); called once
    /// the config is in force, never by a check.
    pub fn start_resolving(&self, dns: &Dns) {
        if let Some(r) = self.resolving() {
            r.start(dns);
        }
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

/// A duration where 0 means none.
fn optional_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn ms_or(ms: u64, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms)
    }
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
    use crate::upstream::outlier::Observed;

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
                .members()
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
        assert!(c.members().balancer("v3").is_none());
    }

    #[test]
    fn ejections_survive_a_config_update() {
        let yaml = "{name: a, outlierDetection: {consecutive5xx: 1, maxEjectionPercent: 100},
            endpoints: [{address: '127.0.0.1:1'}, {address: '127.0.0.1:2'}]}";
        let first =
            Arc::new(Cluster::compile(&spec(yaml), None, ConnectionStats::default).unwrap());
        let second: std::net::SocketAddr = "127.0.0.1:2".parse().unwrap();
        first
            .members()
            .observe("a", "", 1, second, Observed::Status(503));
        assert_eq!(first.members().ejected(""), Some(vec![1]));
        let next = Cluster::compile(&spec(yaml), Some(&first), ConnectionStats::default).unwrap();
        assert_eq!(next.members().ejected(""), Some(vec![1]));
        let fresh = Cluster::compile(&spec(yaml), None, ConnectionStats::default).unwrap();
        assert_eq!(fresh.members().ejected(""), None);
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
    fn an_original_dst_cluster_has_no_endpoints_and_a_transport_for_any_destination() {
        let err = Cluster::compile(
            &spec("{name: a, discovery: ORIGINAL_DST, endpoints: [{address: '127.0.0.1:1'}]}"),
            None,
            ConnectionStats::default,
        )
        .unwrap_err();
        assert_eq!(err.field, "endpoints");
        let c = Cluster::compile(
            &spec("{name: a, discovery: ORIGINAL_DST}"),
            None,
            ConnectionStats::default,
        )
        .unwrap();
        assert!(!c.original_dst_transport().unwrap().is_tls());
        let plain = Cluster::compile(&spec("{name: a}"), None, ConnectionStats::default).unwrap();
        assert!(plain.original_dst_transport().is_none());
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
