//! Checking a config without applying it: the proxy's own compile stages, run on a config
//! that is not going to be used here (pilot runs this before it sends a config). No sockets,
//! no background tasks, no files read (certificate files are the proxy's, see
//! [`CompileFor::Check`]).

use std::sync::Arc;

use mesh_proto::config::v1 as pb;

use super::ConfigError;
use super::snapshot::{Env, Listeners, Names, Upstreams, compile_access_log, compile_metrics};
use crate::authz::Fallback;
use crate::identity::IdentitySlot;
use crate::metrics::Metrics;
use crate::telemetry::Telemetry;
use crate::upstream::CompileFor;

/// What a config that compiles still tells its sender.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Authorization rules that compile with Istio's fallback.
    pub fallbacks: Vec<Fallback>,
}

/// Whether a proxy would accept `cfg`: the same compile as [`super::Snapshot::compile`].
pub fn check(cfg: &pb::ProxyConfig) -> Result<Report, ConfigError> {
    let upstreams =
        with_env(|env| Upstreams::compile(&cfg.clusters, &cfg.route_tables, None, env))?;
    let listeners = Listeners::compile(&cfg.listeners, &upstreams, &Default::default(), None)?;
    compile_access_log(cfg.telemetry.as_ref())?;
    compile_metrics(cfg.telemetry.as_ref(), &Telemetry::default())?;
    Ok(Report {
        fallbacks: listeners.fallbacks,
    })
}

/// Clusters and route tables that many configs share, checked once; only their names are
/// kept.
#[derive(Debug, Clone)]
pub struct SharedPart(Arc<Names>);

/// Checks clusters and route tables on their own; errors index into these lists.
pub fn check_shared(
    clusters: &[pb::Cluster],
    route_tables: &[pb::RouteTable],
) -> Result<SharedPart, ConfigError> {
    with_env(|env| Upstreams::compile(clusters, route_tables, None, env))?;
    Ok(SharedPart(Arc::new(Names::of(clusters, route_tables))))
}

/// Checks the config made of `own` followed by `shared`'s clusters and route tables, for the
/// cost of `own` alone. Errors index into `own`'s lists.
pub fn check_with(
    own: &pb::ProxyConfig,
    shared: Option<&SharedPart>,
) -> Result<Report, ConfigError> {
    let base = shared.map(|s| s.0.clone());
    let upstreams =
        with_env(|env| Upstreams::compile(&own.clusters, &own.route_tables, base, env))?;
    let listeners = Listeners::compile(&own.listeners, &upstreams, &Default::default(), None)?;
    compile_access_log(own.telemetry.as_ref())?;
    compile_metrics(own.telemetry.as_ref(), &Telemetry::default())?;
    Ok(Report {
        fallbacks: listeners.fallbacks,
    })
}

fn with_env<T>(f: impl FnOnce(&Env<'_>) -> T) -> T {
    let metrics = Metrics::default();
    let identity = Arc::new(IdentitySlot::default());
    f(&Env {
        previous: None,
        metrics: &metrics,
        identity: &identity,
        purpose: CompileFor::Check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigObject;

    fn shared() -> (Vec<pb::Cluster>, Vec<pb::RouteTable>) {
        let cluster = pb::Cluster {
            name: "db".into(),
            subsets: vec![pb::Subset {
                name: "v1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let table = pb::RouteTable {
            name: "outbound".into(),
            ..Default::default()
        };
        (vec![cluster], vec![table])
    }

    fn own(subset: &str) -> pb::ProxyConfig {
        pb::ProxyConfig {
            listeners: vec![pb::Listener {
                name: "outbound".into(),
                address: "127.0.0.1:15001".into(),
                direction: pb::Direction::Outbound as i32,
                protocol: pb::ListenerProtocol::Http as i32,
                route_table: "outbound".into(),
                tcp_routes: vec![pb::TcpRoute {
                    name: "db".into(),
                    clusters: vec![pb::WeightedCluster {
                        cluster: "db".into(),
                        subset: subset.into(),
                        weight: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn own_part_on_a_shared_part_is_the_whole_config() {
        let (clusters, tables) = shared();
        let part = check_shared(&clusters, &tables).unwrap();
        assert!(check_with(&own("v1"), Some(&part)).is_ok());
        let whole = |o: pb::ProxyConfig| pb::ProxyConfig {
            clusters: clusters.clone(),
            route_tables: tables.clone(),
            ..o
        };
        assert!(check(&whole(own("v1"))).is_ok());

        let split = check_with(&own("v9"), Some(&part)).unwrap_err();
        let together = check(&whole(own("v9"))).unwrap_err();
        assert_eq!(split, together);
        assert_eq!(
            split.object,
            ConfigObject::TcpRoute {
                listener: 0,
                route: 0
            }
        );
        assert!(split.reason().contains("no subset"), "{split}");
        // Without the shared part the route table is unknown.
        let alone = check_with(&own("v1"), None).unwrap_err();
        assert_eq!(alone.object, ConfigObject::Listener { index: 0 });
    }

    #[test]
    fn a_gateway_listener_terminates_mesh_mtls_or_its_own_tls_not_both() {
        let gateway = |downstream_tls: Option<pb::DownstreamTls>| pb::ProxyConfig {
            listeners: vec![pb::Listener {
                name: "gateway-443".into(),
                address: "127.0.0.1:18443".into(),
                direction: pb::Direction::Gateway as i32,
                protocol: pb::ListenerProtocol::Http as i32,
                route_table: "outbound".into(),
                mtls_mode: pb::MtlsMode::Strict as i32,
                downstream_tls,
                ..Default::default()
            }],
            route_tables: shared().1,
            ..Default::default()
        };
        assert!(check(&gateway(None)).is_ok());
        let both = check(&gateway(Some(pb::DownstreamTls::default()))).unwrap_err();
        assert_eq!(both.field(), "listeners[0].mtlsMode");
    }
}
