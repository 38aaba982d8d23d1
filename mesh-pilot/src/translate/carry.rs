//! Carrying outbound configs over an endpoint-only change.
//!
//! When a new generation differs from the last only in the endpoints of some services (the
//! common case: workloads come and go), every scope's outbound config is the previous one
//! with those services' clusters rebuilt; the rest of the translation (routes, policies,
//! layer 4 routes, the clusters of every other service) cannot have changed. Istio makes the
//! same distinction between endpoint (EDS) and full pushes.

use std::collections::HashSet;
use std::sync::Arc;

use mesh_proto::config::v1::Cluster;

use super::index::MeshIndex;
use super::outbound::{Builder, Outbound};
use super::scope::ScopeKey;

/// Seeds `index` (the new generation) with the outbound configs of `previous`, for an
/// endpoint-only change of the services named by `changed_hosts`. The caller has checked that
/// nothing else differs: the config resources and every service but its endpoints (see
/// `Registry::endpoint_changes`). A scope whose rebuilt clusters bring warnings or clusters
/// the previous config did not have is left to a full build. Returns how many were carried.
pub fn carry_endpoint_change(
    index: &MeshIndex,
    previous: &MeshIndex,
    changed_hosts: &HashSet<String>,
) -> usize {
    // Scopes that shared one config before share one after, if their rebuilt clusters agree.
    let mut made: Vec<(*const Outbound, Vec<Cluster>, Arc<Outbound>)> = Vec::new();
    let mut carried = 0;
    for (scope, before) in previous.cached_outbounds() {
        let Some(fresh) = rebuilt_clusters(index, &scope, changed_hosts) else {
            continue;
        };
        let key = Arc::as_ptr(&before);
        let after = match made.iter().find(|(k, f, _)| *k == key && *f == fresh) {
            Some((_, _, done)) => done.clone(),
            None => {
                let Some(patched) = patch(&before, &fresh) else {
                    continue;
                };
                let patched = Arc::new(patched);
                made.push((key, fresh, patched.clone()));
                patched
            }
        };
        index.seed_outbound(scope, after);
        carried += 1;
    }
    carried
}

/// The clusters of the changed services visible in `scope`, as a full build makes them; `None`
/// when building them warns (the full build then reports the warning as it should).
fn rebuilt_clusters(
    index: &MeshIndex,
    scope: &ScopeKey,
    changed_hosts: &HashSet<String>,
) -> Option<Vec<Cluster>> {
    let mut b = Builder::new(index, scope);
    let services: Vec<_> = b
        .services
        .values()
        .copied()
        .filter(|svc| changed_hosts.contains(&svc.hostname))
        .collect();
    let mut clusters = Vec::new();
    for svc in services {
        b.clusters_of(svc, &mut clusters);
    }
    b.warnings.is_empty().then_some(clusters)
}

/// `before` with `fresh` in place of its clusters of the same names; `None` if one is new.
fn patch(before: &Outbound, fresh: &[Cluster]) -> Option<Outbound> {
    let mut after = before.clone();
    for cluster in fresh {
        let at = after
            .clusters
            .binary_search_by(|c| c.name.as_str().cmp(&cluster.name))
            .ok()?;
        after.clusters[at] = cluster.clone();
    }
    Some(after)
}
