//! Translation: Istio resources + the registry into one proxy's `ProxyConfig`.
//!
//! A pure function of its inputs with deterministic output (everything is sorted), so equal
//! inputs give byte-equal configs and pilot can hash them into versions. [`MeshIndex`] is
//! built once per config generation; the outbound part, which depends only on a proxy's
//! [`ScopeKey`] (namespace, Sidecar, matching selectors), is memoised there and shared, and
//! only the listeners and the inbound part are built per proxy.
//!
//! Warnings: what the resources ask for but the proxy cannot do yet (UDP ports, some
//! connection pool fields, ...) and references that lead nowhere (unknown
//! hosts or subsets) do not fail translation; they are returned sorted and deduplicated in
//! [`Translated::warnings`] for pilot to report. A route whose destination host, port or
//! subset does not exist answers 503 `no healthy upstream`, as Istio's Envoy does for a
//! missing cluster, instead of letting a later route take its traffic.

mod carry;
mod delegate;
mod gateway;
mod hosts;
mod inbound;
mod index;
mod l4;
mod outbound;
mod policy;
mod resilience;
mod routes;
mod scope;

use std::sync::Arc;

use mesh_proto::config::v1::{
    Cluster, Direction, Listener, ListenerProtocol, ProxyConfig, RouteTable, Telemetry,
};
use mesh_proto::discovery::v1::ProxyAddresses;

pub use carry::carry_endpoint_change;
pub use gateway::{GATEWAY, GatewayConfig};
pub use hosts::{DOMAIN_SUFFIX, domains, resolve as resolve_host};
pub use inbound::{INBOUND, INBOUND_CLUSTER, InboundSecurity, security as inbound_security};
pub use index::MeshIndex;
pub use l4::{BLACKHOLE, EgressListener};
pub use outbound::{OUTBOUND, Outbound, cluster_name};
pub use policy::{Effective as EffectivePolicy, merge as merge_traffic_policy};
pub(crate) use routes::string_match;
pub use routes::{NO_CLUSTER_BODY, NO_CLUSTER_STATUS, retry_policy};
pub use scope::{ROOT_NAMESPACE, ScopeKey};

use crate::registry::Workload;

/// The proxy being configured.
#[derive(Clone, Copy, Debug)]
pub struct ProxyContext<'a> {
    pub id: &'a str,
    /// Its workload, from the registry.
    pub workload: &'a Workload,
    /// Where its listeners go; empty addresses mean no such listener.
    pub addresses: &'a ProxyAddresses,
}

/// A proxy's config and what could not be translated faithfully.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translated {
    /// `version` is left empty: pilot sets it.
    pub config: ProxyConfig,
    /// Sorted, without duplicates.
    pub warnings: Vec<String>,
}

/// Inconsistencies that make a config for this proxy impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("proxy {proxy}: {listener} address {address:?} is not HOST:PORT")]
    BadAddress {
        proxy: String,
        listener: &'static str,
        address: String,
    },
    #[error("proxy {proxy}: the outbound and inbound listeners both want {address}")]
    AddressConflict { proxy: String, address: String },
}

fn check_address(proxy: &str, listener: &'static str, address: &str) -> Result<(), TranslateError> {
    let ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(TranslateError::BadAddress {
            proxy: proxy.to_string(),
            listener,
            address: address.to_string(),
        })
    }
}

/// A proxy's config with the outbound part still shared with the other proxies of its
/// scope: per proxy only the listeners and the inbound part are built, so a push to many
/// proxies does not copy the outbound clusters for each (encode them once per scope).
#[derive(Clone, Debug, Default)]
pub struct SharedConfig {
    /// Sorted by name.
    pub listeners: Vec<Listener>,
    /// The `outbound` route table and clusters, when the proxy has an outbound listener or
    /// Sidecar egress listeners.
    pub outbound: Option<Arc<Outbound>>,
    /// The `inbound` route table and `inbound|app` cluster, when it has an inbound listener.
    pub inbound: Option<(RouteTable, Cluster)>,
    /// A gateway's route tables (`gateway-PORT`), sorted by name; its listeners are in
    /// `listeners`.
    pub gateway_tables: Vec<RouteTable>,
    /// The proxy's access logs (and, later, tracing), from the Telemetry resources.
    pub telemetry: Option<Telemetry>,
    /// The Telemetry resources resolved for this proxy's workload, including the tracing
    /// settings that `telemetry` does not carry yet.
    pub resolved_telemetry: crate::telemetry::Resolved,
    /// Warnings of this proxy and of the index; the scope's are in `outbound.warnings`.
    pub warnings: Vec<String>,
}

impl SharedConfig {
    /// The whole config, sorted: "inbound" sorts before "outbound" in every list.
    pub fn to_config(&self) -> ProxyConfig {
        let mut config = self.own();
        if let Some(out) = &self.outbound {
            config.route_tables.push(out.route_table.clone());
            config.clusters.extend(out.clusters.iter().cloned());
        }
        config
    }

    /// A copy of the proxy's own part, as [`SharedConfig::take_own`] takes it.
    pub fn own(&self) -> ProxyConfig {
        own_config(
            self.listeners.clone(),
            self.inbound.clone(),
            self.gateway_tables.clone(),
            self.telemetry.clone(),
        )
    }

    /// The proxy's own part (listeners, the inbound route table and cluster, a gateway's
    /// route tables, the telemetry), moved out as a config of its own; [`SharedConfig::put_own`] puts it
    /// back.
    pub fn take_own(&mut self) -> ProxyConfig {
        own_config(
            std::mem::take(&mut self.listeners),
            self.inbound.take(),
            std::mem::take(&mut self.gateway_tables),
            self.telemetry.take(),
        )
    }

    /// Puts back an own part taken by [`SharedConfig::take_own`] (and maybe repaired since:
    /// objects removed, none added).
    pub fn put_own(&mut self, own: ProxyConfig) {
        self.listeners = own.listeners;
        self.telemetry = own.telemetry;
        let (inbound, gateway): (Vec<RouteTable>, Vec<RouteTable>) = own
            .route_tables
            .into_iter()
            .partition(|t| t.name == INBOUND);
        self.gateway_tables = gateway;
        self.inbound = match (inbound.into_iter().next(), own.clusters.into_iter().next()) {
            (Some(t), Some(c)) => Some((t, c)),
            _ => None,
        };
    }

    /// Every warning, sorted, without duplicates.
    pub fn all_warnings(&self) -> Vec<String> {
        let mut all = self.warnings.clone();
        if let Some(out) = &self.outbound {
            all.extend(out.warnings.iter().cloned());
        }
        all.sort();
        all.dedup();
        all
    }
}

/// A config of a proxy's own objects, in the order of [`SharedConfig::to_config`].
fn own_config(
    listeners: Vec<Listener>,
    inbound: Option<(RouteTable, Cluster)>,
    gateway_tables: Vec<RouteTable>,
    telemetry: Option<Telemetry>,
) -> ProxyConfig {
    let mut config = ProxyConfig {
        listeners,
        telemetry,
        ..Default::default()
    };
    if let Some((table, cluster)) = inbound {
        config.route_tables.push(table);
        config.clusters.push(cluster);
    }
    config.route_tables.extend(gateway_tables);
    config
}

/// The config of one proxy, its outbound part shared with its scope. Pure; cheap (no copy
/// of the outbound config) when the proxy's scope is cached.
pub fn translate_shared(
    mesh: &MeshIndex,
    proxy: &ProxyContext,
) -> Result<SharedConfig, TranslateError> {
    let a = proxy.addresses;
    if !a.outbound.is_empty() {
        check_address(proxy.id, OUTBOUND, &a.outbound)?;
    }
    let inbound_on = !a.inbound.is_empty();
    if inbound_on {
        check_address(proxy.id, INBOUND, &a.inbound)?;
        if !a.outbound.is_empty() && a.outbound == a.inbound {
            return Err(TranslateError::AddressConflict {
                proxy: proxy.id.to_string(),
                address: a.inbound.clone(),
            });
        }
    }
    if !a.application.is_empty() {
        check_address(proxy.id, "application", &a.application)?;
    }

    let mut shared = SharedConfig {
        warnings: mesh.warnings().to_vec(),
        ..Default::default()
    };
    // Whether the workload's LocalRateLimits went onto an inbound listener.
    let mut rate_limited = false;
    if inbound_on {
        if a.application.is_empty() {
            shared.warnings.push(format!(
                "proxy {}: an inbound address without an application address; no inbound listener",
                proxy.id
            ));
        } else {
            let security = inbound::security(mesh, proxy.workload);
            let (tcp_ports, both) = mesh.inbound_tcp_ports(proxy.workload);
            for p in both {
                shared.warnings.push(format!(
                    "proxy {}: workload port {p} serves both an HTTP and a non-HTTP service port; served as HTTP",
                    proxy.id
                ));
            }
            let (mut listener, table, cluster) = inbound::build(
                &a.inbound,
                &a.application,
                a.transparent,
                security,
                &tcp_ports,
            );
            listener.services = mesh.inbound_services(proxy.workload);
            listener.local_rate_limits = crate::ratelimit::limits_for(
                &mesh.rate_limits,
                &proxy.workload.namespace,
                &proxy.workload.labels,
                ROOT_NAMESPACE,
            );
            rate_limited = true;
            shared.listeners.push(listener);
            shared.inbound = Some((table, cluster));
        }
    }
    if !rate_limited {
        // A gateway, or a proxy without inbound listener: nothing to put the limits on.
        for l in crate::ratelimit::limits_for(
            &mesh.rate_limits,
            &proxy.workload.namespace,
            &proxy.workload.labels,
            ROOT_NAMESPACE,
        ) {
            shared.warnings.push(format!(
                "proxy {}: LocalRateLimit {} selects it, but it has no inbound listener to limit; not applied",
                proxy.id, l.name
            ));
        }
    }
    let resolved = crate::telemetry::resolve(
        &mesh.telemetry,
        &proxy.workload.namespace,
        &proxy.workload.labels,
        ROOT_NAMESPACE,
    );
    shared.telemetry = resolved.to_proto();
    shared.warnings.extend(resolved.tracing_warnings());
    shared.resolved_telemetry = resolved;
    let scope = mesh.scope(proxy.workload);
    if let Some(addresses) = &a.gateway {
        let builder = outbound::Builder::new(mesh, &scope);
        let built = gateway::build(mesh, &builder, proxy.workload, addresses, proxy.id);
        shared.listeners.extend(built.listeners);
        shared.gateway_tables = built.route_tables;
        shared.warnings.extend(built.warnings);
    }
    // A gateway routes into the mesh with the outbound clusters of its scope.
    if !a.outbound.is_empty() || mesh.has_egress_ports(&scope) || a.gateway.is_some() {
        let out = mesh.outbound(&scope);
        let policy = out.outbound_traffic_policy as i32;
        if !a.outbound.is_empty() {
            shared.listeners.push(Listener {
                name: OUTBOUND.to_string(),
                address: a.outbound.clone(),
                direction: Direction::Outbound as i32,
                protocol: ListenerProtocol::Http as i32,
                route_table: OUTBOUND.to_string(),
                tcp_cluster: String::new(),
                outbound_traffic_policy: policy,
                transparent: a.transparent,
                // Connections keep their original destination only when redirected; an
                // explicit outbound listener is an HTTP proxy.
                tcp_routes: if a.transparent {
                    out.tcp_routes.clone()
                } else {
                    Vec::new()
                },
                ..Default::default()
            });
        }
        for e in &out.egress_listeners {
            if e.address == a.outbound || e.address == a.inbound {
                shared.warnings.push(format!(
                    "proxy {}: Sidecar egress listener {} has the address of its {} listener; skipped",
                    proxy.id,
                    e.address,
                    if e.address == a.outbound { OUTBOUND } else { INBOUND }
                ));
                continue;
            }
            shared.listeners.push(Listener {
                name: e.name.clone(),
                address: e.address.clone(),
                direction: Direction::Outbound as i32,
                protocol: if e.http {
                    ListenerProtocol::Http
                } else {
                    ListenerProtocol::Tcp
                } as i32,
                route_table: if e.http {
                    OUTBOUND.to_string()
                } else {
                    String::new()
                },
                outbound_traffic_policy: policy,
                tcp_routes: e.tcp_routes.clone(),
                ..Default::default()
            });
        }
        shared.listeners.sort_by(|x, y| x.name.cmp(&y.name));
        shared.outbound = Some(out);
    }
    Ok(shared)
}

/// The config of one proxy, owned. Pure and deterministic: equal inputs, byte-equal output.
pub fn translate(mesh: &MeshIndex, proxy: &ProxyContext) -> Result<Translated, TranslateError> {
    let shared = translate_shared(mesh, proxy)?;
    Ok(Translated {
        config: shared.to_config(),
        warnings: shared.all_warnings(),
    })
}

#[cfg(test)]
mod l4_tests;
#[cfg(test)]
mod tests;
