//! The discovery server: connected proxies, the current mesh generation, and pushes.
//!
//! The push path: a new generation is built once ([`Mesh`]); the outbound config of each
//! scope in use is built and encoded once ([`snapshot`]) and shared, by content, with every
//! proxy of every scope that has the same content; then every connected proxy is queued
//! ([`queue`]). A bounded number of pushes run at once, in queue order; each computes the
//! proxy's versions (cheap: only its listeners and inbound part are encoded) and sends
//! nothing when they did not change, ENDPOINTS with only the changed clusters when only
//! endpoints changed, else the whole CONFIG. A push holds its slot until the proxy answers,
//! so the encoded configs in flight are bounded however many proxies connect at once.

#[cfg(test)]
mod carry_tests;
mod connection;
mod contract;
mod queue;
mod service;
mod snapshot;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mesh_api::Resource;
use mesh_proto::config::v1::ProxyConfig;
use mesh_proto::discovery::v1::Node;
use tokio::sync::Semaphore;

pub use connection::{Connection, State, TypeStatus};
pub use queue::PushQueue;
pub use service::serve;
pub use snapshot::{ProxySnapshot, ScopeSnapshot, SnapshotCache};

use crate::metrics::PilotMetrics;
use crate::registry::{Platform, Workload};
use crate::translate::{
    MeshIndex, Outbound, ProxyContext, ScopeKey, carry_endpoint_change, translate_shared,
};

/// The encoded outbound config of one scope, with the warnings its proxies report.
struct ScopeEntry {
    snapshot: Arc<ScopeSnapshot>,
    /// The index's warnings and the scope's, sorted.
    warnings: Arc<[String]>,
    /// The outbound part as the proxy's compile step saw it, for checking each proxy's own
    /// part on top; `None` when it could not be checked.
    checked: Option<mesh_proxy::config::SharedPart>,
}

/// A translated outbound config and its encoding, filled once by the first push that needs it.
type EncodedOutbound = (Arc<Outbound>, Arc<OnceLock<ScopeEntry>>);

/// One generation of the mesh: everything derived from the resources (which are not kept:
/// the store has them, and a second copy per generation costs tens of megabytes at scale).
pub struct Mesh {
    pub generation: u64,
    /// When the change that produced this generation was first seen.
    pub changed_at: Instant,
    /// How many resources the generation was built from.
    pub resource_count: usize,
    /// The resources other than ServiceEntries and WorkloadEntries (routing, policy, Sidecars:
    /// few and small), to tell an endpoint-only change from the next generation.
    config: Vec<Arc<Resource>>,
    pub index: MeshIndex,
    /// Scopes whose outbound config is built, so concurrent pushes build each once.
    built: Mutex<HashMap<ScopeKey, Arc<OnceLock<()>>>>,
    /// Encoded outbound configs by the address of the translated one (held here, so the
    /// address is not reused while the entry lives).
    encoded: Mutex<HashMap<usize, EncodedOutbound>>,
    /// Warnings of a proxy without an outbound listener or proxy-specific ones.
    index_warnings: OnceLock<Arc<[String]>>,
}

impl Mesh {
    pub fn new(generation: u64, changed_at: Instant, resources: Vec<Arc<Resource>>) -> Self {
        Self::with_platform(generation, changed_at, resources, &Platform::default())
    }

    /// A generation whose registry also holds a platform registry's (Kubernetes) services
    /// and workloads; see `Registry::build_merged`.
    pub fn with_platform(
        generation: u64,
        changed_at: Instant,
        resources: Vec<Arc<Resource>>,
        platform: &Platform,
    ) -> Self {
        Self::after(None, generation, changed_at, resources, platform)
    }

    /// The generation after `previous`, its registry reusing what did not change.
    fn after(
        previous: Option<&Mesh>,
        generation: u64,
        changed_at: Instant,
        resources: Vec<Arc<Resource>>,
        platform: &Platform,
    ) -> Self {
        let registry = crate::registry::Registry::next(
            previous.map(|p| p.index.registry()),
            &resources,
            crate::registry::DEFAULT_TRUST_DOMAIN,
            platform,
        );
        let index = MeshIndex::new(&resources, Arc::new(registry));
        let config = resources
            .iter()
            .filter(|r| !matches!(***r, Resource::ServiceEntry(_) | Resource::WorkloadEntry(_)))
            .cloned()
            .collect();
        Self {
            generation,
            changed_at,
            resource_count: resources.len(),
            config,
            index,
            built: Mutex::new(HashMap::new()),
            encoded: Mutex::new(HashMap::new()),
            index_warnings: OnceLock::new(),
        }
    }

    /// The routing and policy resources of this generation (not the ServiceEntries and
    /// WorkloadEntries, whose services and workloads the registry holds).
    pub fn config_resources(&self) -> &[Arc<Resource>] {
        &self.config
    }

    /// Takes over `previous`'s outbound configs when this generation differs from it only in
    /// endpoints (see `translate::carry_endpoint_change`). Returns how many scopes it took.
    fn carry_from(&self, previous: &Mesh) -> usize {
        let same_config = self.config.len() == previous.config.len()
            && self
                .config
                .iter()
                .zip(&previous.config)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a.same_content(b));
        if !same_config {
            return 0;
        }
        match self
            .index
            .registry()
            .endpoint_changes(previous.index.registry())
        {
            Some(changed) => carry_endpoint_change(&self.index, &previous.index, &changed),
            None => 0,
        }
    }

    fn workload(&self, node: &Node) -> Result<&Workload, String> {
        self.index
            .registry()
            .workload(&node.workload, &node.namespace)
            .ok_or_else(|| {
                format!(
                    "no WorkloadEntry or Pod {}/{} for proxy {}",
                    node.namespace, node.workload, node.id
                )
            })
    }

    /// Builds the outbound config of `workload`'s scope unless built: one build per scope
    /// even when many proxies of it are pushed at once.
    fn build_scope(&self, workload: &Workload) {
        let key = self.index.scope(workload);
        let cell = self
            .built
            .lock()
            .expect("scope lock")
            .entry(key.clone())
            .or_default()
            .clone();
        cell.get_or_init(|| {
            self.index.outbound(&key);
        });
    }

    /// The encoded form of `outbound`, from this generation's translation.
    fn encode_scope(&self, outbound: &Arc<Outbound>, cache: &SnapshotCache) -> Arc<[String]> {
        self.scope_entry(outbound, cache).get().warnings.clone()
    }

    fn scope_entry(&self, outbound: &Arc<Outbound>, cache: &SnapshotCache) -> ScopeEntryRef {
        let cell = self
            .encoded
            .lock()
            .expect("encoded lock")
            .entry(Arc::as_ptr(outbound) as usize)
            .or_insert_with(|| (outbound.clone(), Arc::default()))
            .1
            .clone();
        cell.get_or_init(|| {
            // Checked once per distinct outbound config, however many proxies share it.
            let checked = contract::check_outbound(outbound);
            for w in &checked.warnings {
                tracing::warn!("{w}");
            }
            let mut warnings = self.index.warnings().to_vec();
            warnings.extend(outbound.warnings.iter().cloned());
            warnings.extend(checked.warnings);
            warnings.sort();
            warnings.dedup();
            let encoded = match &checked.repaired {
                Some(repaired) => ScopeSnapshot::encode(repaired),
                None => ScopeSnapshot::encode(outbound),
            };
            ScopeEntry {
                snapshot: cache.intern(encoded),
                warnings: warnings.into(),
                checked: checked.part,
            }
        });
        ScopeEntryRef(cell)
    }

    /// What proxy `node` is to hold in this generation, or why it cannot have a config.
    pub fn snapshot_for(
        &self,
        node: &Node,
        cache: &SnapshotCache,
    ) -> Result<Arc<ProxySnapshot>, String> {
        let workload = self.workload(node)?;
        let addresses = node.addresses.clone().unwrap_or_default();
        if !addresses.outbound.is_empty() {
            self.build_scope(workload);
        }
        let mut shared = translate_shared(
            &self.index,
            &ProxyContext {
                id: &node.id,
                workload,
                addresses: &addresses,
            },
        )
        .map_err(|e| e.to_string())?;
        let scope_entry = shared
            .outbound
            .as_ref()
            .map(|out| self.scope_entry(out, cache));
        let checked = scope_entry.as_ref().and_then(|e| e.get().checked.as_ref());
        if shared.outbound.is_some() && checked.is_none() {
            return Err(format!(
                "proxy {}: its outbound config could not be checked; nothing new is sent",
                node.id
            ));
        }
        // The proxy's own part is checked on top of the scope's, which was checked once.
        let repairs = contract::check_own(&mut shared, checked)
            .map_err(|e| format!("proxy {}: {e}", node.id))?;
        for w in &repairs {
            tracing::warn!(proxy = %node.id, "{w}");
        }
        let own_warnings =
            shared.warnings.as_slice() != self.index.warnings() || !repairs.is_empty();
        let (scope, scope_warnings) = match &scope_entry {
            Some(entry) => {
                let e = entry.get();
                (Some(e.snapshot.clone()), e.warnings.clone())
            }
            None => (
                None,
                self.index_warnings
                    .get_or_init(|| self.index.warnings().to_vec().into())
                    .clone(),
            ),
        };
        // Proxy-specific warnings are rare; otherwise the list is shared with the scope.
        let warnings = if own_warnings {
            let mut all: Vec<String> = scope_warnings.iter().cloned().collect();
            all.extend(shared.warnings.iter().cloned());
            all.extend(repairs);
            all.sort();
            all.dedup();
            all.into()
        } else {
            scope_warnings
        };
        Ok(Arc::new(ProxySnapshot::new(&shared, scope, warnings)))
    }

    /// The config of the proxy `node`, or why there is none.
    pub fn config_for(&self, node: &Node) -> Result<(ProxyConfig, Vec<String>), String> {
        let snapshot = self.snapshot_for(node, &SnapshotCache::default())?;
        Ok((snapshot.config(), snapshot.warnings.to_vec()))
    }

    /// Builds and encodes the scopes of `nodes` ahead of their pushes, on every core: scopes
    /// are independent, and at scale each takes tens of milliseconds.
    fn prepare(&self, nodes: &[Node], cache: &SnapshotCache) {
        let mut seen = std::collections::HashSet::new();
        let workloads: Vec<&Workload> = nodes
            .iter()
            .filter(|node| {
                node.addresses
                    .as_ref()
                    .is_some_and(|a| !a.outbound.is_empty())
            })
            .filter_map(|node| self.workload(node).ok())
            .filter(|workload| seen.insert(self.index.scope(workload)))
            .collect();
        let next = AtomicUsize::new(0);
        let workers = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(workloads.len());
        std::thread::scope(|threads| {
            for _ in 0..workers {
                threads.spawn(|| {
                    while let Some(workload) = workloads.get(next.fetch_add(1, Ordering::Relaxed)) {
                        self.build_scope(workload);
                        let out = self.index.outbound(&self.index.scope(workload));
                        self.encode_scope(&out, cache);
                    }
                });
            }
        });
    }
}

/// A scope entry that is initialised.
struct ScopeEntryRef(Arc<OnceLock<ScopeEntry>>);

impl ScopeEntryRef {
    fn get(&self) -> &ScopeEntry {
        self.0.get().expect("initialised by scope_entry")
    }
}

/// Pushes in flight at once. Each holds one encoded config until the proxy answers, so this
/// bounds the memory of a connect storm; queue order keeps it fair.
const PUSH_CONCURRENCY: usize = 32;
/// How long a push waits for the proxy's answer before its slot goes to the next proxy.
const ANSWER_PATIENCE: Duration = Duration::from_secs(2);

pub struct Discovery {
    mesh: ArcSwap<Mesh>,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    pub metrics: Arc<PilotMetrics>,
    queue: Arc<PushQueue>,
    snapshots: SnapshotCache,
    dispatcher: Once,
    this: Weak<Discovery>,
}

impl Discovery {
    pub fn new(mesh: Mesh, metrics: Arc<PilotMetrics>) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            mesh: ArcSwap::from_pointee(mesh),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
            queue: Arc::new(PushQueue::default()),
            snapshots: SnapshotCache::default(),
            dispatcher: Once::new(),
            this: this.clone(),
        })
    }

    pub fn mesh(&self) -> Arc<Mesh> {
        self.mesh.load_full()
    }

    /// Installs a new generation and queues a push to every connected proxy; each gets a
    /// response only if its config changed. Returns once the pushes are queued.
    pub async fn update(self: &Arc<Self>, resources: Vec<Arc<Resource>>, changed_at: Instant) {
        self.update_with_platform(resources, Platform::default(), changed_at)
            .await
    }

    /// [`Discovery::update`] with a platform registry (Kubernetes) merged into the registry.
    pub async fn update_with_platform(
        self: &Arc<Self>,
        resources: Vec<Arc<Resource>>,
        platform: Platform,
        changed_at: Instant,
    ) {
        let generation = self.mesh.load().generation + 1;
        let this = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let previous = this.mesh.load_full();
            let mesh = Arc::new(Mesh::after(
                Some(&previous),
                generation,
                changed_at,
                resources,
                &platform,
            ));
            // Carrying outbound configs over is translation work: timed with it, not the index.
            let indexed = started.elapsed();
            let carried = mesh.carry_from(&previous);
            let nodes: Vec<Node> = this
                .connections()
                .into_iter()
                .map(|(_, c)| c.node.clone())
                .collect();
            mesh.prepare(&nodes, &this.snapshots);
            tracing::info!(
                generation,
                index_ms = indexed.as_millis() as u64,
                translate_ms = (started.elapsed() - indexed).as_millis() as u64,
                carried_scopes = carried,
                since_change_ms = changed_at.elapsed().as_millis() as u64,
                "generation built"
            );
            mesh
        })
        .await;
        let mesh = match built {
            Ok(mesh) => mesh,
            Err(e) => {
                tracing::error!(generation, error = %e, "building the mesh failed; keeping the last one");
                return;
            }
        };
        let previous = self.mesh.swap(mesh.clone());
        // Freeing a generation (every resource, registry entry and translated config) takes
        // long enough at scale to hold up the pushes of the new one; free it elsewhere.
        tokio::task::spawn_blocking(move || drop(previous));
        let connections = self.connections();
        let (scopes, bytes) = self.snapshots.stats();
        tracing::info!(
            generation,
            proxies = connections.len(),
            scopes,
            encoded_bytes = bytes,
            "pushing"
        );
        for (id, _) in connections {
            self.enqueue(id, Some(mesh.changed_at));
        }
    }

    /// Queues a push to connection `id`.
    fn enqueue(&self, id: u64, changed_at: Option<Instant>) {
        self.start_dispatcher();
        self.queue.push(id, changed_at);
    }

    /// Proxies waiting for a push.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Takes queued proxies in order and runs at most `PUSH_CONCURRENCY` pushes at once.
    fn start_dispatcher(&self) {
        self.dispatcher.call_once(|| {
            let this = self.this.clone();
            let queue = self.queue.clone();
            tokio::spawn(async move {
                let slots = Arc::new(Semaphore::new(PUSH_CONCURRENCY));
                loop {
                    let slot = slots.clone().acquire_owned().await.expect("never closed");
                    let (id, changed_at, waited) = queue.pop_waited().await;
                    let Some(discovery) = this.upgrade() else {
                        return;
                    };
                    discovery.metrics.queue_time.observe(waited.as_secs_f64());
                    tokio::spawn(async move {
                        discovery.push(id, changed_at).await;
                        drop(slot);
                    });
                }
            });
        });
    }

    /// Brings connection `id` up to date with the current generation.
    async fn push(&self, id: u64, changed_at: Option<Instant>) {
        let Some(conn) = self
            .connections
            .lock()
            .expect("connections lock")
            .get(&id)
            .cloned()
        else {
            return;
        };
        let _turn = conn.pushing.lock().await;
        let mesh = self.mesh();
        match mesh.snapshot_for(&conn.node, &self.snapshots) {
            Ok(snapshot) => {
                let Some(out) = conn.prepare(snapshot, mesh.generation, changed_at) else {
                    return;
                };
                let kind = out.response.kind;
                if conn
                    .send(out, ANSWER_PATIENCE, || {
                        self.metrics.pushed(kind.as_str_name())
                    })
                    .await
                    .is_none()
                {
                    tracing::debug!(proxy = %conn.node.id, "stream closed before the push");
                }
            }
            Err(problem) => {
                tracing::warn!(proxy = %conn.node.id, %problem, "no config for proxy");
                self.metrics.push_error("CONFIG");
                conn.failed(mesh.generation, problem);
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
        self.enqueue(id, None);
        id
    }

    fn unregister(&self, id: u64) {
        let gone = self
            .connections
            .lock()
            .expect("connections lock")
            .remove(&id);
        if let Some(conn) = gone {
            conn.closed();
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

    /// Distinct encoded outbound configs alive and their total bytes.
    pub fn encoded_scopes(&self) -> (usize, usize) {
        self.snapshots.stats()
    }
}
