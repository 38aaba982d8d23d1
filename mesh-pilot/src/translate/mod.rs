//! Translation: Istio resources + the registry into one proxy's `ProxyConfig`.
//!
//! A pure function of its inputs with deterministic output (everything is sorted), so equal
//! inputs give byte-equal configs and pilot can hash them into versions. [`MeshIndex`] is
//! built once per config generation; the outbound part, which depends only on a proxy's
//! [`ScopeKey`] (namespace, Sidecar, matching selectors), is memoised there and shared, and
//! only the listeners and the inbound part are built per proxy.
//!
//! Warnings: what the resources ask for but the proxy cannot do yet (fault injection,
//! mirroring, TCP ports, circuit breaking, ...) and references that lead nowhere (unknown
//! hosts or subsets) do not fail translation; they are returned sorted and deduplicated in
//! [`Translated::warnings`] for pilot to report. A route whose destination host, port or
//! subset does not exist answers 503 `no healthy upstream`, as Istio's Envoy does for a
//! missing cluster, instead of letting a later route take its traffic.

mod hosts;
mod index;
mod inbound;
mod outbound;
mod policy;
mod routes;
mod scope;

use mesh_proto::config::v1::{Direction, Listener, ListenerProtocol, ProxyConfig};
use mesh_proto::discovery::v1::ProxyAddresses;

pub use hosts::{DOMAIN_SUFFIX, domains, resolve as resolve_host};
pub use inbound::{INBOUND, INBOUND_CLUSTER};
pub use index::MeshIndex;
pub use outbound::{OUTBOUND, Outbound, cluster_name};
pub use policy::{Effective as EffectivePolicy, merge as merge_traffic_policy};
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
    let ok = address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && port.parse::<u16>().is_ok()
    });
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

/// The config of one proxy. Pure and deterministic; cheap when the proxy's scope is cached.
pub fn translate(mesh: &MeshIndex, proxy: &ProxyContext) -> Result<Translated, TranslateError> {
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

    let mut config = ProxyConfig::default();
    let mut warnings: Vec<String> = mesh.warnings().to_vec();
    if !a.outbound.is_empty() {
        let out = mesh.outbound(&mesh.scope(proxy.workload));
        config.listeners.push(Listener {
            name: OUTBOUND.to_string(),
            address: a.outbound.clone(),
            direction: Direction::Outbound as i32,
            protocol: ListenerProtocol::Http as i32,
            route_table: OUTBOUND.to_string(),
            tcp_cluster: String::new(),
            outbound_traffic_policy: out.outbound_traffic_policy as i32,
            transparent: a.transparent,
        });
        config.route_tables.push(out.route_table.clone());
        config.clusters.extend(out.clusters.iter().cloned());
        warnings.extend(out.warnings.iter().cloned());
    }
    if inbound_on {
        if a.application.is_empty() {
            warnings.push(format!(
                "proxy {}: an inbound address without an application address; no inbound listener",
                proxy.id
            ));
        } else {
            let (listener, table, cluster) = inbound::build(&a.inbound, &a.application, a.transparent);
            config.listeners.push(listener);
            config.route_tables.push(table);
            config.clusters.push(cluster);
        }
    }
    config.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    config.route_tables.sort_by(|a, b| a.name.cmp(&b.name));
    config.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    warnings.sort();
    warnings.dedup();
    Ok(Translated { config, warnings })
}

#[cfg(test)]
mod tests;
