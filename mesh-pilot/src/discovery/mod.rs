//! The discovery server: connected proxies, the current mesh generation, and pushes.

mod connection;
mod fingerprint;
mod service;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use mesh_api::Resource;
use mesh_proto::config::v1::ProxyConfig;
use mesh_proto::discovery::v1::Node;
use tokio::sync::Semaphore;

pub use connection::{Connection, State, TypeStatus};
pub use fingerprint::Fingerprint;
pub use service::serve;

use crate::metrics::PilotMetrics;
use crate::registry::{Platform, Registry};
use crate::translate::{MeshIndex, ProxyContext, translate};

/// One generation of the mesh: the resources and everything derived from them.
pub struct Mesh {
    pub generation: u64,
    /// When the change that produced this generation was first seen.
    pub changed_at: Instant,
    pub resources: Vec<Resource>,
    pub index: MeshIndex,
}

impl Mesh {
    pub fn new(generation: u64, changed_at: Instant, resources: Vec<Resource>) -> Self {
        Self::with_platform(generation, changed_at, resources, &Platform::default())
    }

    /// A generation whose registry also holds a platform registry's (Kubernetes) services
    /// and workloads; see `Registry::build_merged`.
    pub fn with_platform(
        generation: u64,
        changed_at: Instant,
        resources: Vec<Resource>,
        platform: &Platform,
    ) -> Self {
        let registry = Registry::build_merged(
            &resources,
            crate::registry::DEFAULT_TRUST_DOMAIN,
            platform,
        );
        let index = MeshIndex::new(&resources, std::sync::Arc::new(registry));
        Self {
            generation,
            changed_at,
            resources,
            index,
        }
    }

    /// The config of the proxy `node`, or why there is none.
    pub fn config_for(&self, node: &Node) -> Result<(ProxyConfig, Vec<String>), String> {
        let workload = self
            .index
            .registry()
            .workload(&node.workload, &node.namespace)
            .ok_or_else(|| {
                format!(
                    "no WorkloadEntry or Pod {}/{} for proxy {}",
                    node.namespace, node.workload, node.id
                )
            })?;
        let addresses = node.addresses.clone().unwrap_or_default();
        let translated = translate(
            &self.index,
            &ProxyContext {
                id: &node.id,
                workload,
                addresses: &addresses,
            },
        )
        .map_err(|e| e.to_string())?;
        Ok((translated.config, translated.warnings))
    }
}

/// Concurrent translations during a push; the rest wait, so thousands of proxies connecting
/// at once are all served without starving the runtime.
const PUSH_CONCURRENCY: usize = 64;

pub struct Discovery {
    mesh: ArcSwap<Mesh>,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    pub metrics: Arc<PilotMetrics>,
    permits: Arc<Semaphore>,
}

impl Discovery {
    pub fn new(mesh: Mesh, metrics: Arc<PilotMetrics>) -> Arc<Self> {
        Arc::new(Self {
            mesh: ArcSwap::from_pointee(mesh),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
            permits: Arc::new(Semaphore::new(PUSH_CONCURRENCY)),
        })
    }

    pub fn mesh(&self) -> Arc<Mesh> {
        self.mesh.load_full()
    }

    /// Installs a new generation and pushes it to every proxy whose config it changes.
    pub async fn update(self: &Arc<Self>, resources: Vec<Resource>, changed_at: Instant) {
        self.update_with_platform(resources, Platform::default(), changed_at)
            .await
    }

    /// [`Discovery::update`] with a platform registry (Kubernetes) merged into the registry.
    pub async fn update_with_platform(
        self: &Arc<Self>,
        resources: Vec<Resource>,
        platform: Platform,
        changed_at: Instant,
    ) {
        let generation = self.mesh.load().generation + 1;
        let mesh = Arc::new(Mesh::with_platform(
            generation, changed_at, resources, &platform,
        ));
        self.mesh.store(mesh.clone());
        let connections: Vec<_> = self.connections().into_iter().map(|(_, c)| c).collect();
        tracing::info!(generation, proxies = connections.len(), "pushing");
        let mut tasks = tokio::task::JoinSet::new();
        for conn in connections {
            let this = self.clone();
            let mesh = mesh.clone();
            tasks.spawn(async move { this.push(&conn, &mesh, Some(mesh.changed_at)).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Brings one proxy up to date with `mesh`; `changed_at` is set when a config change caused
    /// the push.
    pub async fn push(&self, conn: &Connection, mesh: &Mesh, changed_at: Option<Instant>) {
        let _permit = self.permits.acquire().await.expect("semaphore open");
        match mesh.config_for(&conn.node) {
            Ok((config, warnings)) => {
                conn.state.lock().expect("connection lock").problems = warnings;
                for kind in conn.push(config, mesh.generation, changed_at).await {
                    self.metrics.pushed(kind.as_str_name());
                }
            }
            Err(problem) => {
                tracing::warn!(proxy = %conn.node.id, %problem, "no config for proxy");
                self.metrics.push_error("CONFIG");
                conn.state.lock().expect("connection lock").problems = vec![problem];
            }
        }
    }

    fn register(&self, conn: Arc<Connection>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connections
            .lock()
            .expect("connections lock")
            .insert(id, conn);
        self.metrics.connected.inc();
        id
    }

    fn unregister(&self, id: u64) {
        if self
            .connections
            .lock()
            .expect("connections lock")
            .remove(&id)
            .is_some()
        {
            self.metrics.connected.dec();
        }
    }

    /// Every connected proxy, oldest first.
    pub fn connections(&self) -> Vec<(u64, Arc<Connection>)> {
        let mut all: Vec<_> = self
            .connections
            .lock()
            .expect("connections lock")
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// The connection of a proxy by node id (the newest one if it reconnected).
    pub fn connection(&self, node_id: &str) -> Option<Arc<Connection>> {
        self.connections()
            .into_iter()
            .rev()
            .find(|(_, c)| c.node.id == node_id)
            .map(|(_, c)| c)
    }
}
