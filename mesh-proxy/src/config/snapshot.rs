//! A validated, compiled config: what requests read, swapped atomically on update.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_proto::config::v1 as pb;

use super::ListenerSecurity;
use super::security::RemoteKeys;
use crate::identity::IdentitySlot;
use crate::metrics::Metrics;
use crate::route::RouteTable;
use crate::tcp_route::TcpRoutes;
use crate::upstream::Cluster;

/// Why a config was rejected: the field path and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    fn at(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug)]
pub struct Snapshot {
    pub source: pb::ProxyConfig,
    pub route_tables: HashMap<String, Arc<RouteTable>>,
    pub clusters: HashMap<String, Arc<Cluster>>,
    /// Inbound listeners' mTLS modes and authorizers, by listener name.
    pub listener_security: HashMap<String, Arc<ListenerSecurity>>,
    /// Listeners' layer 4 routes, by listener name; listeners without routes are absent.
    pub tcp_routes: HashMap<String, Arc<TcpRoutes>>,
}

impl Snapshot {
    /// An empty config: nothing routes until the first real one arrives.
    pub fn empty() -> Self {
        Self {
            source: pb::ProxyConfig::default(),
            route_tables: HashMap::new(),
            clusters: HashMap::new(),
            listener_security: HashMap::new(),
            tcp_routes: HashMap::new(),
        }
    }

    /// Starts fetching the `jwksUri` key sets this config names that are not fetched yet.
    /// Called once the snapshot is in force; compiling alone does no I/O.
    pub fn start_key_fetching(&self) {
        for security in self.listener_security.values() {
            security.authenticator.start_fetching();
        }
    }

    /// Validates and compiles `cfg`. Pools of unchanged clusters in `previous` are kept.
    /// `identity` is the proxy's own, for mTLS to upstream endpoints.
    pub fn compile(
        cfg: pb::ProxyConfig,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        identity: &Arc<IdentitySlot>,
    ) -> Result<Self, ConfigError> {
        let mut clusters = HashMap::with_capacity(cfg.clusters.len());
        for (i, c) in cfg.clusters.iter().enumerate() {
            if c.name.is_empty() {
                return Err(ConfigError::at(
                    format!("clusters[{i}].name"),
                    "must not be empty",
                ));
            }
            let old = previous.and_then(|p| p.clusters.get(&c.name));
            let stats = || metrics.connection_stats(&c.name);
            let compiled = Cluster::compile_with_identity(c, old, stats, identity)
                .map_err(|(f, r)| ConfigError::at(format!("clusters[{i}].{f}"), r))?;
            if clusters
                .insert(c.name.clone(), Arc::new(compiled))
                .is_some()
            {
                return Err(ConfigError::at(
                    format!("clusters[{i}].name"),
                    format!("duplicate cluster {:?}", c.name),
                ));
            }
        }

        let mut route_tables = HashMap::with_capacity(cfg.route_tables.len());
        for (i, t) in cfg.route_tables.iter().enumerate() {
            let table = RouteTable::compile(t)
                .map_err(|(f, r)| ConfigError::at(format!("routeTables[{i}].{f}"), r))?;
            for (vi, vh) in t.virtual_hosts.iter().enumerate() {
                for (ri, r) in vh.routes.iter().enumerate() {
                    let Some(pb::route::Action::Route(a)) = &r.action else {
                        continue;
                    };
                    for (ci, wc) in a.clusters.iter().enumerate() {
                        let field = || {
                            format!(
                                "routeTables[{i}].virtualHosts[{vi}].routes[{ri}].route.clusters[{ci}]"
                            )
                        };
                        let cluster = clusters.get(&wc.cluster).ok_or_else(|| {
                            ConfigError::at(
                                field() + ".cluster",
                                format!("unknown cluster {:?}", wc.cluster),
                            )
                        })?;
                        if cluster.balancer(&wc.subset).is_none() {
                            return Err(ConfigError::at(
                                field() + ".subset",
                                format!("cluster {:?} has no subset {:?}", wc.cluster, wc.subset),
                            ));
                        }
                    }
                }
            }
            if route_tables
                .insert(t.name.clone(), Arc::new(table))
                .is_some()
            {
                return Err(ConfigError::at(
                    format!("routeTables[{i}].name"),
                    format!("duplicate route table {:?}", t.name),
                ));
            }
        }

        validate_listeners(&cfg.listeners, &route_tables, &clusters)?;
        let listener_security = compile_security(&cfg.listeners, previous)?;
        let tcp_routes = compile_tcp_routes(&cfg.listeners, &clusters)?;
        Ok(Self {
            source: cfg,
            route_tables,
            clusters,
            listener_security,
            tcp_routes,
        })
    }
}

/// Inbound listeners only: outbound traffic is not the local workload's to authorize. The
/// `jwksUri` key sets of `previous` are reused where the new config still names them.
fn compile_security(
    listeners: &[pb::Listener],
    previous: Option<&Snapshot>,
) -> Result<HashMap<String, Arc<ListenerSecurity>>, ConfigError> {
    let remote: RemoteKeys = previous
        .into_iter()
        .flat_map(|p| p.listener_security.values())
        .flat_map(|s| s.authenticator.remote_keys())
        .collect();
    let mut out = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.direction() != pb::Direction::Inbound {
            continue;
        }
        let security = ListenerSecurity::compile_reusing(l, &remote)
            .map_err(|(f, r)| ConfigError::at(format!("listeners[{i}].{f}"), r))?;
        out.insert(l.name.clone(), Arc::new(security));
    }
    Ok(out)
}

/// Every listener's layer 4 routes; a route to a cluster or subset the config lacks is an
/// error, as on HTTP routes.
fn compile_tcp_routes(
    listeners: &[pb::Listener],
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<HashMap<String, Arc<TcpRoutes>>, ConfigError> {
    let cluster_ok = |name: &str, subset: &str| match clusters.get(name) {
        None => Err(format!("unknown cluster {name:?}")),
        Some(c) if c.balancer(subset).is_none() => {
            Err(format!("cluster {name:?} has no subset {subset:?}"))
        }
        Some(_) => Ok(()),
    };
    let mut out = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.tcp_routes.is_empty() {
            continue;
        }
        let routes = TcpRoutes::compile(&l.tcp_routes, cluster_ok)
            .map_err(|(f, r)| ConfigError::at(format!("listeners[{i}].{f}"), r))?;
        out.insert(l.name.clone(), Arc::new(routes));
    }
    Ok(out)
}

fn validate_listeners(
    listeners: &[pb::Listener],
    route_tables: &HashMap<String, Arc<RouteTable>>,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, l) in listeners.iter().enumerate() {
        let at = |f: &str| format!("listeners[{i}].{f}");
        if l.name.is_empty() || !names.insert(l.name.as_str()) {
            return Err(ConfigError::at(at("name"), "must be non-empty and unique"));
        }
        if l.address.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::at(
                at("address"),
                format!("{:?} is not an IP:port address", l.address),
            ));
        }
        if l.direction() == pb::Direction::Unspecified {
            return Err(ConfigError::at(
                at("direction"),
                "must be OUTBOUND or INBOUND",
            ));
        }
        match l.protocol() {
            pb::ListenerProtocol::Tcp => {
                if !l.tcp_cluster.is_empty() && !clusters.contains_key(&l.tcp_cluster) {
                    return Err(ConfigError::at(
                        at("tcpCluster"),
                        format!("unknown cluster {:?}", l.tcp_cluster),
                    ));
                }
                if l.tcp_cluster.is_empty() && !l.transparent && l.tcp_routes.is_empty() {
                    return Err(ConfigError::at(
                        at("tcpCluster"),
                        "required unless the listener is transparent or has tcpRoutes",
                    ));
                }
            }
            _ => {
                if !route_tables.contains_key(&l.route_table) {
                    return Err(ConfigError::at(
                        at("routeTable"),
                        format!("unknown route table {:?}", l.route_table),
                    ));
                }
            }
        }
    }
    Ok(())
}
