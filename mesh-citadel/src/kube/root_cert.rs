//! Publishing the trust bundle as a ConfigMap (`root-cert.pem`) in every namespace the mesh
//! serves, as Istio publishes `istio-ca-root-cert`: pods mount it to verify mesh certificates.
//!
//! Namespaces are watched (optionally only those matching a label selector, filtered by the
//! API server); each gets the ConfigMaps by server-side apply with this CA as field manager.
//! The published ConfigMaps are watched too, so one that is deleted or edited is put back.
//! Without `force`, a ConfigMap whose data another manager owns (an Istio control plane's
//! `istio-ca-root-cert`) is left alone and the conflict reported.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The key pods read the bundle from (Istio's).
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Field manager of the applied ConfigMaps.
pub const FIELD_MANAGER: &str = "mesh-citadel";
/// Label on every published ConfigMap, so they can be watched and found.
pub const PUBLISHED_LABEL: &str = "mesh.dev/ca-root-cert";
/// The mesh's own name (mounted by the injected sidecar) and Istio's.
pub const DEFAULT_NAMES: &[&str] = &["mesh-ca-root-cert", "istio-ca-root-cert"];

#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// ConfigMap names to publish in each namespace.
    pub names: Vec<String>,
    /// Label selector of the namespaces the mesh serves; `None` is every namespace.
    pub namespace_selector: Option<String>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            names: DEFAULT_NAMES.iter().map(|s| s.to_string()).collect(),
            namespace_selector: None,
        }
    }
}

/// The trust bundle as one PEM file.
pub fn bundle(roots_pem: &[String]) -> String {
    let mut out = String::new();
    for pem in roots_pem {
        out.push_str(pem.trim_end());
        out.push('\n');
    }
    out
}

/// The ConfigMap as applied: only the fields this CA owns.
pub fn config_map(name: &str, namespace: &str, bundle_pem: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                PUBLISHED_LABEL: "true",
                "app.kubernetes.io/managed-by": FIELD_MANAGER,
            },
        },
        "data": { ROOT_CERT_KEY: bundle_pem },
    }))
    .expect("a ConfigMap")
}

/// What needs (re)applying.
enum Work {
    /// Every name in this namespace.
    Namespace(String),
    /// One ConfigMap that was deleted or changed.
    One { namespace: String, name: String },
}

/// Publishes `bundle_pem` until `stop`.
pub async fn publish(
    client: Client,
    bundle_pem: Arc<str>,
    options: PublishOptions,
    stop: CancellationToken,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(watch_namespaces(
        client.clone(),
        options.namespace_selector.clone(),
        tx.clone(),
        stop.clone(),
    ));
    tokio::spawn(watch_published(
        client.clone(),
        bundle_pem.clone(),
        options.names.clone(),
        tx,
        stop.clone(),
    ));
    // Namespaces served, so a ConfigMap change in another namespace is not published into.
    let mut served: BTreeSet<String> = BTreeSet::new();
    loop {
        let work = tokio::select! {
            _ = stop.cancelled() => return,
            w = rx.recv() => match w { Some(w) => w, None => return },
        };
        match work {
            WorkOrServed::Served(all) => served = all,
            WorkOrServed::Gone(ns) => {
                served.remove(&ns);
            }
            WorkOrServed::Work(Work::Namespace(ns)) => {
                served.insert(ns.clone());
                for name in &options.names {
                    apply(&client, &ns, name, &bundle_pem).await;
                }
            }
            WorkOrServed::Work(Work::One { namespace, name }) => {
                if served.contains(&namespace) {
                    apply(&client, &namespace, &name, &bundle_pem).await;
                }
            }
        }
    }
}

enum WorkOrServed {
    Work(Work),
    /// The complete set of served namespaces after a (re)list.
    Served(BTreeSet<String>),
    /// A namespace deleted (or terminating): nothing more is published there.
    Gone(String),
}

async fn apply(client: &Client, namespace: &str, name: &str, bundle_pem: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = config_map(name, namespace, bundle_pem);
    match api
        .patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&cm))
        .await
    {
        Ok(_) => tracing::info!(namespace, configmap = name, "root certificate published"),
        Err(kube::Error::Api(s)) if s.code == 409 => tracing::warn!(
            namespace,
            configmap = name,
            reason = %s.message,
            "another manager owns this ConfigMap; left alone"
        ),
        Err(e) => {
            tracing::warn!(namespace, configmap = name, error = %e, "cannot publish the root certificate")
        }
    }
}

fn active(ns: &Namespace) -> bool {
    ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

async fn watch_namespaces(
    client: Client,
    selector: Option<String>,
    tx: mpsc::UnboundedSender<WorkOrServed>,
    stop: CancellationToken,
) {
    let mut config = watcher::Config::default();
    if let Some(s) = &selector {
        config = config.labels(s);
    }
    let mut events = watcher::watcher(Api::<Namespace>::all(client), config)
        .default_backoff()
        .boxed();
    let mut listing = BTreeSet::new();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.next() => match e { Some(e) => e, None => return },
        };
        let send = |w| tx.send(WorkOrServed::Work(w)).is_ok();
        let ok = match event {
            Ok(Event::Init) => {
                listing.clear();
                true
            }
            Ok(Event::InitApply(ns)) => {
                if active(&ns) {
                    listing.insert(ns.name_any());
                }
                true
            }
            Ok(Event::InitDone) => {
                let all = std::mem::take(&mut listing);
                let sent = tx.send(WorkOrServed::Served(all.clone())).is_ok();
                sent && all.into_iter().all(|ns| send(Work::Namespace(ns)))
            }
            Ok(Event::Apply(ns)) if active(&ns) => send(Work::Namespace(ns.name_any())),
            Ok(Event::Apply(ns)) | Ok(Event::Delete(ns)) => {
                tx.send(WorkOrServed::Gone(ns.name_any())).is_ok()
            }
            Err(e) => {
                tracing::warn!(error = %e, "namespace watch failed; retrying");
                true
            }
        };
        if !ok {
            return;
        }
    }
}

/// Puts back a published ConfigMap that was deleted or whose bundle was changed.
async fn watch_published(
    client: Client,
    bundle_pem: Arc<str>,
    names: Vec<String>,
    tx: mpsc::UnboundedSender<WorkOrServed>,
    stop: CancellationToken,
) {
    let config = watcher::Config::default().labels(&format!("{PUBLISHED_LABEL}=true"));
    let mut events = watcher::watcher(Api::<ConfigMap>::all(client), config)
        .default_backoff()
        .boxed();
    let current = |cm: &ConfigMap| {
        cm.data
            .as_ref()
            .and_then(|d: &BTreeMap<String, String>| d.get(ROOT_CERT_KEY))
            .is_some_and(|pem| pem.as_str() == &*bundle_pem)
    };
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.next() => match e { Some(e) => e, None => return },
        };
        let stale = match event {
            Ok(Event::Apply(cm)) | Ok(Event::InitApply(cm)) if !current(&cm) => Some(cm),
            Ok(Event::Delete(cm)) => Some(cm),
            Err(e) => {
                tracing::warn!(error = %e, "ConfigMap watch failed; retrying");
                None
            }
            _ => None,
        };
        if let Some(cm) = stale
            && names.contains(&cm.name_any())
        {
            let work = Work::One {
                namespace: cm.namespace().unwrap_or_default(),
                name: cm.name_any(),
            };
            if tx.send(WorkOrServed::Work(work)).is_err() {
                return;
            }
        }
    }
}
