//! The Kubernetes source: one watch per kind, feeding the cluster objects (for the registry)
//! and the config objects (into the same kind of store as files), and a change signal.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cluster::{Cluster, Objects};
use super::follow::{Change, follow, is_not_found};
use super::kinds::config_resources;
use crate::store::{ObjectKey, ObjectStore};

/// Metadata fields a config object carries into the store; the server's bookkeeping
/// (`managedFields`, `selfLink`) is left out.
const CONFIG_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "ownerReferences",
];

/// What the watches have seen so far; shared by the watch tasks and the sync loop.
pub struct KubeState {
    cluster: Mutex<Cluster>,
    config: Mutex<ObjectStore>,
    /// Watches that completed a first list (or found their kind not installed).
    synced: Mutex<BTreeSet<String>>,
    watches: usize,
    changes: watch::Sender<u64>,
}

impl KubeState {
    fn new(watches: usize) -> Self {
        Self {
            cluster: Mutex::default(),
            config: Mutex::default(),
            synced: Mutex::default(),
            watches,
            changes: watch::Sender::new(0),
        }
    }

    /// A copy of the cluster objects.
    pub fn cluster(&self) -> Cluster {
        self.cluster.lock().expect("cluster lock").clone()
    }

    /// Valid config objects from the cluster.
    pub fn config_resources(&self) -> Vec<Arc<mesh_api::Resource>> {
        self.config.lock().expect("config lock").resources()
    }

    /// Config objects from the cluster whose current version was rejected.
    pub fn config_errors(&self) -> Vec<mesh_api::ValidationError> {
        self.config.lock().expect("config lock").errors()
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn is_synced(&self) -> bool {
        self.synced.lock().expect("synced lock").len() >= self.watches
    }

    /// Waits until every watch has listed once, or `timeout`; returns whether all did.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        let wait = async {
            while !self.is_synced() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.is_synced()
    }

    fn mark_synced(&self, watch: &str) {
        let new = self
            .synced
            .lock()
            .expect("synced lock")
            .insert(watch.to_string());
        if new {
            tracing::debug!(watch, "listed");
            self.changed();
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn cluster_change<K: kube::ResourceExt + Clone>(
        &self,
        objects: impl Fn(&mut Cluster) -> &mut Objects<K>,
        change: Change<K>,
    ) {
        {
            let mut cluster = self.cluster.lock().expect("cluster lock");
            let objects = objects(&mut cluster);
            match change {
                Change::Replace(all) => objects.replace(all),
                Change::Apply(o) => objects.apply(o),
                Change::Delete(o) => objects.delete(&o),
            }
        }
        self.changed();
    }

    fn config_change(&self, resource: &ApiResource, change: Change<DynamicObject>) {
        let changed = {
            let mut store = self.config.lock().expect("config lock");
            match change {
                Change::Replace(all) => store.replace(
                    &resource.group,
                    &resource.kind,
                    all.iter().map(|o| config_object(resource, o)).collect(),
                ),
                Change::Apply(o) => {
                    let (key, value) = config_object(resource, &o);
                    store.apply(key, value)
                }
                Change::Delete(o) => store.delete(&config_object(resource, &o).0),
            }
        };
        if changed {
            self.changed();
        }
    }
}

/// The object as the loaders take it: `apiVersion`, `kind`, `metadata`, `spec` (and anything
/// else the server sent, so unknown fields are reported), keyed by watch and name.
pub fn config_object(resource: &ApiResource, o: &DynamicObject) -> (ObjectKey, Value) {
    let key = ObjectKey {
        group: resource.group.clone(),
        kind: resource.kind.clone(),
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: o.metadata.name.clone().unwrap_or_default(),
    };
    let mut map = match &o.data {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let (api_version, kind) = match &o.types {
        Some(t) => (t.api_version.clone(), t.kind.clone()),
        None => (resource.api_version.clone(), resource.kind.clone()),
    };
    map.insert("apiVersion".into(), Value::String(api_version));
    map.insert("kind".into(), Value::String(kind));
    let mut metadata = match serde_json::to_value(&o.metadata) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    metadata.retain(|k, _| CONFIG_METADATA.contains(&k.as_str()));
    map.insert("metadata".into(), Value::Object(metadata));
    (key, Value::Object(map))
}

/// Reports a watch's failures without repeating the same one at every retry.
struct ErrorLog {
    watch: String,
    last: Option<String>,
}

impl ErrorLog {
    fn report(&mut self, e: &watcher::Error) {
        let text = e.to_string();
        if self.last.as_deref() == Some(text.as_str()) {
            tracing::debug!(watch = %self.watch, error = %text, "watch still failing");
        } else if is_not_found(e) {
            tracing::info!(watch = %self.watch, "not served by the API server (CRD not installed?); retrying");
        } else {
            tracing::warn!(watch = %self.watch, error = %text, "watch failed; retrying");
        }
        self.last = Some(text);
    }
}

/// The running watches; they stop with `stop`.
pub struct KubeSource {
    pub state: Arc<KubeState>,
}

impl KubeSource {
    /// Starts one watch per kind: Services, EndpointSlices, Pods, Namespaces, and every config
    /// kind in Istio's groups and the mesh's own.
    pub fn start(client: Client, stop: CancellationToken) -> KubeSource {
        let configs = config_resources();
        let state = Arc::new(KubeState::new(4 + configs.len()));
        spawn_cluster_watch::<Service>(&client, &state, &stop, "services", |c| &mut c.services);
        spawn_cluster_watch::<EndpointSlice>(&client, &state, &stop, "endpointslices", |c| {
            &mut c.endpoint_slices
        });
        spawn_cluster_watch::<Pod>(&client, &state, &stop, "pods", |c| &mut c.pods);
        spawn_cluster_watch::<Namespace>(&client, &state, &stop, "namespaces", |c| {
            &mut c.namespaces
        });
        for resource in configs {
            spawn_config_watch(&client, &state, &stop, resource);
        }
        KubeSource { state }
    }
}

fn watch_config() -> watcher::Config {
    // Bookmarks keep the resume version current on quiet kinds, so a reconnect does not
    // fall behind the server's history and force a relist.
    watcher::Config {
        bookmarks: true,
        ..watcher::Config::default()
    }
}

fn spawn_cluster_watch<K>(
    client: &Client,
    state: &Arc<KubeState>,
    stop: &CancellationToken,
    name: &'static str,
    objects: fn(&mut Cluster) -> &mut Objects<K>,
) where
    K: kube::Resource + kube::ResourceExt + Clone + serde::de::DeserializeOwned,
    K: std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let api = Api::<K>::all(client.clone());
    let state = state.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut errors = ErrorLog {
            watch: name.to_string(),
            last: None,
        };
        follow(
            api,
            watch_config(),
            stop,
            |change| {
                let listed = matches!(change, Change::Replace(_));
                state.cluster_change(objects, change);
                if listed {
                    state.mark_synced(name);
                }
            },
            |e| errors.report(e),
        )
        .await;
    });
}

fn spawn_config_watch(
    client: &Client,
    state: &Arc<KubeState>,
    stop: &CancellationToken,
    resource: ApiResource,
) {
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let state = state.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        let name = format!("{}.{}", resource.plural, resource.group);
        let mut errors = ErrorLog {
            watch: name.clone(),
            last: None,
        };
        follow(
            api,
            watch_config(),
            stop,
            |change| {
                let listed = matches!(change, Change::Replace(_));
                state.config_change(&resource, change);
                if listed {
                    state.mark_synced(&name);
                }
            },
            |e| {
                // A kind that is not installed has nothing to wait for.
                if is_not_found(e) {
                    state.mark_synced(&name);
                }
                errors.report(e)
            },
        )
        .await;
    });
}
