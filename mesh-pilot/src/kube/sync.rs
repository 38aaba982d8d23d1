//! Turning changes of both sources (the config directory, the cluster) into debounced pushes:
//! one store, one registry, one translation path.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::registry::{self, RegistryOptions};
use super::source::KubeState;
use crate::discovery::{Discovery, Mesh};
use crate::registry::Platform;
use crate::store::{DirStore, merge};
use crate::watch::{Debounce, due, due_at, sleep_until};

/// The sources pilot serves from when Kubernetes is on.
pub struct Sources {
    /// Config files served next to the cluster's objects, if any.
    pub dir: Option<DirStore>,
    pub kube: Arc<KubeState>,
    pub registry: RegistryOptions,
}

impl Sources {
    /// Rescans the directory; returns whether its valid objects changed.
    fn scan(&mut self) -> bool {
        self.dir.as_mut().is_some_and(DirStore::scan)
    }

    /// Every valid config object: the cluster's first, then the files'.
    pub fn resources(&self) -> Vec<Arc<mesh_api::Resource>> {
        let files = self
            .dir
            .as_ref()
            .map(DirStore::resources)
            .unwrap_or_default();
        merge(self.kube.config_resources(), files)
    }

    pub fn platform(&self) -> Platform {
        registry::build(&self.kube.cluster(), &self.registry)
    }

    fn error_count(&self) -> usize {
        let files = self.dir.as_ref().map_or(0, |d| d.errors().len());
        files + self.kube.config_errors().len()
    }

    /// The first generation.
    pub fn mesh(&self) -> Mesh {
        Mesh::with_platform(
            1,
            std::time::Instant::now(),
            self.resources(),
            &self.platform(),
        )
    }
}

/// Pushes a new generation after changes, debounced as the file source is.
pub async fn run(
    mut sources: Sources,
    discovery: Arc<Discovery>,
    debounce: Debounce,
    stop: CancellationToken,
) {
    let mut kube_changes = sources.kube.subscribe();
    kube_changes.mark_unchanged();
    let mut pending: Option<(Instant, Instant)> = None;
    let mut tick = tokio::time::interval(debounce.poll);
    loop {
        let cluster_changed = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            _ = sleep_until(due_at(pending, &debounce)) => false,
            r = kube_changes.changed() => r.is_ok(),
        };
        let now = Instant::now();
        if sources.scan() || cluster_changed {
            pending = Some(match pending {
                Some((first, _)) => (first, now),
                None => (now, now),
            });
        }
        discovery
            .metrics
            .config_errors
            .set(sources.error_count() as i64);
        if let Some((first, last)) = pending
            && due(first, last, now, &debounce)
            // Half-listed watches would push a registry missing what they have not listed.
            && sources.kube.is_synced()
        {
            pending = None;
            discovery
                .update_with_platform(sources.resources(), sources.platform(), first.into_std())
                .await;
        }
    }
}
