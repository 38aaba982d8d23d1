//! Checking a config without applying it: the proxy's own compile stages, run on a config
//! that is not going to be used here (pilot runs this before it sends a config). No sockets,
//! no background tasks, no files read (certificate files are the proxy's, see
//! [`CompileFor::Check`]).

use std::sync::Arc;

use mesh_proto::config::v1 as pb;

use super::ConfigError;
use super::snapshot::{Env, Listeners, Upstreams};
use crate::authz::Fallback;
use crate::identity::IdentitySlot;
use crate::metrics::Metrics;
use crate::upstream::CompileFor;

/// What a config that compiles still tells its sender.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Authorization rules that compile with Istio's fallback.
    pub fallbacks: Vec<Fallback>,
}

/// Whether a proxy would accept `cfg`: the same compile as [`super::Snapshot::compile`].
pub fn check(cfg: &pb::ProxyConfig) -> Result<Report, ConfigError> {
    let shared = check_shared(&cfg.clusters, &cfg.route_tables)?;
    let listeners = Listeners::compile(&cfg.listeners, &shared.0)?;
    Ok(Report {
        fallbacks: listeners.fallbacks,
    })
}

/// Clusters and route tables that many configs share, checked once.
#[derive(Debug, Clone)]
pub struct SharedPart(Arc<Upstreams>);

/// Checks clusters and route tables on their own; errors index into these lists.
pub fn check_shared(
    clusters: &[pb::Cluster],
    route_tables: &[pb::RouteTable],
) -> Result<SharedPart, ConfigError> {
    with_env(|env| Upstreams::compile(clusters, route_tables, None, env))
        .map(|u| SharedPart(Arc::new(u)))
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
    let listeners = Listeners::compile(&own.listeners, &upstreams)?;
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
