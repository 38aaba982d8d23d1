//! A validated, compiled config: what requests read, swapped atomically on update.
//!
//! Compiling runs in two stages, [`Upstreams`] (clusters and route tables) and then the
//! listeners that refer to them. [`crate::config::check`] runs the very same stages without
//! applying anything, so a config that passes the check is one the proxy accepts.

use std::collections::{HashMap, HashSet};

use crate::fast_map::{self, FastMap};
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_proto::config::v1 as pb;

use super::ListenerSecurity;
pub use super::error::{ConfigError, ConfigObject, FieldError};
use super::security::{RemoteKeys, SecurityError};
use crate::access_log::{AccessLogConfig, AccessLogError};
use crate::authz::Fallback;
use crate::identity::IdentitySlot;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimits;
use crate::route::{RouteTable, TableError};
use crate::tcp_route::TcpRoutes;
use crate::telemetry::Telemetry;
use crate::telemetry::overrides::{MetricsConfig, OverrideError};
use crate::upstream::{Cluster, CompileFor};

#[derive(Debug)]
pub struct Snapshot {
    pub source: pb::ProxyConfig,
    pub route_tables: FastMap<String, Arc<RouteTable>>,
    pub clusters: FastMap<String, Arc<Cluster>>,
    /// Inbound listeners' mTLS modes and authorizers, by listener name.
    pub listener_security: FastMap<String, Arc<ListenerSecurity>>,
    /// Listeners' layer 4 routes, by listener name; listeners without routes are absent.
    pub tcp_routes: FastMap<String, Arc<TcpRoutes>>,
    /// Inbound listeners' LocalRateLimits, by listener name; listeners without limits are
    /// absent, so a config without any costs a request one `is_empty` check.
    pub rate_limits: FastMap<String, Arc<RateLimits>>,
    /// The access logs, by the side of the call.
    pub access_log: AccessLogConfig,
    /// The metrics overrides, by the side of the call.
    pub metrics_overrides: MetricsConfig,
}

impl Snapshot {
    /// An empty config: nothing routes until the first real one arrives.
    pub fn empty() -> Self {
        Self {
            source: pb::ProxyConfig::default(),
            route_tables: FastMap::default(),
            clusters: FastMap::default(),
            listener_security: FastMap::default(),
            tcp_routes: FastMap::default(),
            rate_limits: FastMap::default(),
            access_log: AccessLogConfig::default(),
            metrics_overrides: MetricsConfig::default(),
        }
    }

    /// Starts fetching the `jwksUri` key sets this config names that are not fetched yet.
    /// Called once the snapshot is in force; compiling alone does no I/O.
    pub fn start_key_fetching(&self) {
        for security in self.listener_security.values() {
            security.authenticator.start_fetching();
        }
    }

    /// Starts resolving the names of the DNS clusters (the answers known from the config
    /// before are used at once). Called once the snapshot is in force.
    pub fn start_resolving(&self, dns: &crate::dns::Dns) {
        for cluster in self.clusters.values() {
            cluster.start_resolving(dns);
        }
    }

    /// Whether a cluster resolves names (so the proxy needs its resolver).
    pub fn has_dns_clusters(&self) -> bool {
        self.clusters.values().any(|c| c.resolving().is_some())
    }

    /// Validates and compiles `cfg`. Pools of unchanged clusters in `previous` are kept.
    /// `identity` is the proxy's own, for mTLS to upstream endpoints.
    pub fn compile(
        cfg: pb::ProxyConfig,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        identity: &Arc<IdentitySlot>,
    ) -> Result<Self, ConfigError> {
        let env = Env {
            previous,
            metrics,
            identity,
            purpose: CompileFor::Proxy,
        };
        let upstreams = Upstreams::compile(&cfg.clusters, &cfg.route_tables, None, &env)?;
        let previous_limits = previous.map(|p| &p.rate_limits);
        let listeners = Listeners::compile(
            &cfg.listeners,
            &upstreams,
            &env.remote_keys(),
            previous_limits,
        )?;
        let access_log = compile_access_log(cfg.telemetry.as_ref())?;
        let metrics_overrides = compile_metrics(cfg.telemetry.as_ref(), &metrics.istio)?;
        for f in &listeners.fallbacks {
            tracing::warn!(policy = %f.policy, field = %f.field, "{f}");
        }
        Ok(Self {
            source: cfg,
            route_tables: upstreams.route_tables,
            clusters: upstreams.clusters,
            listener_security: listeners.security,
            tcp_routes: listeners.tcp_routes,
            rate_limits: listeners.rate_limits,
            access_log,
            metrics_overrides,
        })
    }
}

/// The access logs of `telemetry`, with an error that names the refused log.
pub(super) fn compile_access_log(
    telemetry: Option<&pb::Telemetry>,
) -> Result<AccessLogConfig, ConfigError> {
    AccessLogConfig::compile(telemetry).map_err(|e: AccessLogError| {
        ConfigError::new(
            ConfigObject::AccessLog { index: e.index() },
            FieldError::new(e.field(), e.to_string()),
        )
    })
}

/// The metrics overrides of `telemetry`, with an error that names the refused override.
pub(super) fn compile_metrics(
    cfg: Option<&pb::Telemetry>,
    telemetry: &Telemetry,
) -> Result<MetricsConfig, ConfigError> {
    MetricsConfig::compile(cfg, telemetry).map_err(|e: OverrideError| {
        ConfigError::new(
            ConfigObject::MetricOverride { index: e.index() },
            FieldError::new(e.field(), e.to_string()),
        )
    })
}

/// What a compile runs with.
pub(super) struct Env<'a> {
    pub(super) previous: Option<&'a Snapshot>,
    pub(super) metrics: &'a Metrics,
    pub(super) identity: &'a Arc<IdentitySlot>,
    pub(super) purpose: CompileFor,
}

impl Env<'_> {
    /// The previous config's `jwksUri` key sets, for the listeners that still name them.
    pub(super) fn remote_keys(&self) -> RemoteKeys {
        self.previous
            .into_iter()
            .flat_map(|p| p.listener_security.values())
            .flat_map(|s| s.authenticator.remote_keys())
            .collect()
    }
}

/// What a part compiled before (shared by many configs) offers to refer to: its route
/// tables, and its clusters with their subsets ("" for the whole cluster). Names only, so a
/// sender keeping it per shared part keeps no compiled clusters.
#[derive(Debug, Default)]
pub struct Names {
    route_tables: HashSet<String>,
    clusters: HashMap<String, HashSet<String>>,
}

impl Names {
    /// The names of clusters and route tables that compiled.
    pub(super) fn of(clusters: &[pb::Cluster], route_tables: &[pb::RouteTable]) -> Names {
        Names {
            route_tables: route_tables.iter().map(|t| t.name.clone()).collect(),
            clusters: clusters
                .iter()
                .map(|c| {
                    let subsets = std::iter::once(String::new())
                        .chain(c.subsets.iter().map(|s| s.name.clone()))
                        .collect();
                    (c.name.clone(), subsets)
                })
                .collect(),
        }
    }
}

/// Compiled clusters and route tables, the first stage. `base` names a part compiled before
/// whose clusters and route tables this part may refer to.
pub struct Upstreams {
    route_tables: FastMap<String, Arc<RouteTable>>,
    clusters: FastMap<String, Arc<Cluster>>,
    base: Option<Arc<Names>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("route_tables", &self.route_tables.len())
            .field("clusters", &self.clusters.len())
            .field("base", &self.base.is_some())
            .finish()
    }
}

impl Upstreams {
    pub(super) fn compile(
        clusters: &[pb::Cluster],
        route_tables: &[pb::RouteTable],
        base: Option<Arc<Names>>,
        env: &Env<'_>,
    ) -> Result<Upstreams, ConfigError> {
        let mut out = Upstreams {
            route_tables: fast_map::with_capacity(route_tables.len()),
            clusters: fast_map::with_capacity(clusters.len()),
            base,
        };
        for (i, c) in clusters.iter().enumerate() {
            let err = |field: &str, reason: String| {
                ConfigError::new(
                    ConfigObject::Cluster { index: i },
                    FieldError::new(field, reason),
                )
            };
            if c.name.is_empty() {
                return Err(err("name", "must not be empty".into()));
            }
            if out.has_cluster(&c.name) {
                return Err(err("name", format!("duplicate cluster {:?}", c.name)));
            }
            let old = env.previous.and_then(|p| p.clusters.get(&c.name));
            let stats = || env.metrics.connection_stats(&c.name);
            let compiled = Cluster::build(c, old, stats, env.identity, env.purpose)
                .map_err(|e| ConfigError::new(ConfigObject::Cluster { index: i }, e))?;
            out.clusters.insert(c.name.clone(), Arc::new(compiled));
        }

        for (i, t) in route_tables.iter().enumerate() {
            let table = RouteTable::compile(t).map_err(|e| match e {
                TableError::Table(error) => {
                    ConfigError::new(ConfigObject::RouteTable { index: i }, error)
                }
                TableError::Route {
                    virtual_host,
                    route,
                    error,
                } => ConfigError::new(
                    ConfigObject::Route {
                        table: i,
                        virtual_host,
                        route,
                    },
                    error,
                ),
            })?;
            out.check_destinations(i, t)?;
            if out.has_route_table(&t.name) {
                return Err(ConfigError::new(
                    ConfigObject::RouteTable { index: i },
                    FieldError::new("name", format!("duplicate route table {:?}", t.name)),
                ));
            }
            out.route_tables.insert(t.name.clone(), Arc::new(table));
        }
        Ok(out)
    }

    /// Every forwarding route names a cluster and subset that exist.
    fn check_destinations(&self, i: usize, t: &pb::RouteTable) -> Result<(), ConfigError> {
        for (vi, vh) in t.virtual_hosts.iter().enumerate() {
            for (ri, r) in vh.routes.iter().enumerate() {
                let Some(pb::route::Action::Route(a)) = &r.action else {
                    continue;
                };
                let object = ConfigObject::Route {
                    table: i,
                    virtual_host: vi,
                    route: ri,
                };
                for (ci, wc) in a.clusters.iter().enumerate() {
                    self.cluster_ok(&wc.cluster, &wc.subset)
                        .map_err(|(field, reason)| {
                            ConfigError::new(
                                object,
                                FieldError::new(format!("route.clusters[{ci}].{field}"), reason),
                            )
                        })?;
                }
            }
        }
        Ok(())
    }

    fn has_cluster(&self, name: &str) -> bool {
        self.clusters.contains_key(name)
            || self
                .base
                .as_ref()
                .is_some_and(|b| b.clusters.contains_key(name))
    }

    fn has_route_table(&self, name: &str) -> bool {
        self.route_tables.contains_key(name)
            || self
                .base
                .as_ref()
                .is_some_and(|b| b.route_tables.contains(name))
    }

    /// `Err((field, reason))` when the cluster or its subset does not exist.
    fn cluster_ok(&self, name: &str, subset: &str) -> Result<(), (&'static str, String)> {
        let has_subset = match self.clusters.get(name) {
            Some(c) => Some(c.has_subset(subset)),
            None => self
                .base
                .as_ref()
                .and_then(|b| b.clusters.get(name))
                .map(|subsets| subsets.contains(subset)),
        };
        match has_subset {
            None => Err(("cluster", format!("unknown cluster {name:?}"))),
            Some(false) => Err((
                "subset",
                format!("cluster {name:?} has no subset {subset:?}"),
            )),
            Some(true) => Ok(()),
        }
    }
}

/// The second stage: listeners, their security and their layer 4 routes.
pub(super) struct Listeners {
    pub(super) security: FastMap<String, Arc<ListenerSecurity>>,
    pub(super) tcp_routes: FastMap<String, Arc<TcpRoutes>>,
    pub(super) rate_limits: FastMap<String, Arc<RateLimits>>,
    /// Authorization rules compiled with Istio's fallback.
    pub(super) fallbacks: Vec<Fallback>,
}

impl Listeners {
    pub(super) fn compile(
        listeners: &[pb::Listener],
        upstreams: &Upstreams,
        remote: &RemoteKeys,
        previous_limits: Option<&FastMap<String, Arc<RateLimits>>>,
    ) -> Result<Listeners, ConfigError> {
        validate_listeners(listeners, upstreams)?;
        let mut out = Listeners {
            security: FastMap::default(),
            tcp_routes: FastMap::default(),
            rate_limits: FastMap::default(),
            fallbacks: Vec::new(),
        };
        for (i, l) in listeners.iter().enumerate() {
            // A limit where it would not be enforced is refused rather than ignored.
            if l.direction() != pb::Direction::Inbound && !l.local_rate_limits.is_empty() {
                return Err(ConfigError::new(
                    ConfigObject::LocalRateLimit {
                        listener: i,
                        limit: 0,
                    },
                    FieldError::new(
                        "",
                        "local rate limits are enforced on inbound listeners only",
                    ),
                ));
            }
            // Inbound listeners, and gateway listeners that terminate mesh mTLS: outbound
            // traffic is not the local workload's to authorize.
            let mesh_gateway =
                l.direction() == pb::Direction::Gateway && l.mtls_mode() != pb::MtlsMode::Unset;
            if l.direction() == pb::Direction::Inbound || mesh_gateway {
                let security =
                    ListenerSecurity::compile_reusing(l, remote).map_err(|e| match e {
                        SecurityError::Authorization(e) => ConfigError::new(
                            ConfigObject::AuthorizationPolicy {
                                listener: i,
                                policy: e.policy,
                            },
                            e.error,
                        ),
                        SecurityError::Jwt(e) => ConfigError::new(
                            ConfigObject::JwtRule {
                                listener: i,
                                rule: e.rule,
                            },
                            e.error,
                        ),
                    })?;
                out.fallbacks
                    .extend(security.authorizer.fallbacks().iter().cloned());
                out.security.insert(l.name.clone(), Arc::new(security));
                if !l.local_rate_limits.is_empty() {
                    let previous = previous_limits.and_then(|p| p.get(&l.name));
                    let limits = RateLimits::compile(
                        &l.local_rate_limits,
                        previous.map(|p| p.as_ref()),
                        std::time::Instant::now(),
                    )
                    .map_err(|e| {
                        ConfigError::new(
                            ConfigObject::LocalRateLimit {
                                listener: i,
                                limit: e.limit,
                            },
                            e.error,
                        )
                    })?;
                    out.rate_limits.insert(l.name.clone(), Arc::new(limits));
                }
            }
            // A route to a cluster or subset the config lacks is an error, as on HTTP routes.
            if !l.tcp_routes.is_empty() {
                let cluster_ok =
                    |name: &str, subset: &str| upstreams.cluster_ok(name, subset).map_err(|e| e.1);
                let routes = TcpRoutes::compile(&l.tcp_routes, cluster_ok).map_err(|e| {
                    ConfigError::new(
                        ConfigObject::TcpRoute {
                            listener: i,
                            route: e.route,
                        },
                        e.error,
                    )
                })?;
                out.tcp_routes.insert(l.name.clone(), Arc::new(routes));
            }
        }
        Ok(out)
    }
}

fn validate_listeners(
    listeners: &[pb::Listener],
    upstreams: &Upstreams,
) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, l) in listeners.iter().enumerate() {
        let err = |field: &str, reason: String| {
            ConfigError::new(
                ConfigObject::Listener { index: i },
                FieldError::new(field, reason),
            )
        };
        if l.name.is_empty() || !names.insert(l.name.as_str()) {
            return Err(err("name", "must be non-empty and unique".into()));
        }
        if l.address.parse::<SocketAddr>().is_err() {
            return Err(err(
                "address",
                format!("{:?} is not an IP:port address", l.address),
            ));
        }
        if l.direction() == pb::Direction::Unspecified {
            return Err(err("direction", "must be OUTBOUND or INBOUND".into()));
        }
        if l.direction() == pb::Direction::Gateway
            && l.mtls_mode() != pb::MtlsMode::Unset
            && l.downstream_tls.is_some()
        {
            return Err(err(
                "mtlsMode",
                "a gateway listener terminates mesh mTLS or downstreamTls, not both".into(),
            ));
        }
        match l.protocol() {
            pb::ListenerProtocol::Tcp => {
                if !l.tcp_cluster.is_empty() && !upstreams.has_cluster(&l.tcp_cluster) {
                    return Err(err(
                        "tcpCluster",
                        format!("unknown cluster {:?}", l.tcp_cluster),
                    ));
                }
                if l.tcp_cluster.is_empty() && !l.transparent && l.tcp_routes.is_empty() {
                    return Err(err(
                        "tcpCluster",
                        "required unless the listener is transparent or has tcpRoutes".into(),
                    ));
                }
            }
            _ => {
                if !upstreams.has_route_table(&l.route_table) {
                    return Err(err(
                        "routeTable",
                        format!("unknown route table {:?}", l.route_table),
                    ));
                }
            }
        }
    }
    Ok(())
}
