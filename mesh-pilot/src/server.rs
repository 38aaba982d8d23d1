//! A running pilot: config sources, discovery server and debug endpoint, started together.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::debug::{self, DebugState};
use crate::discovery::{self, Discovery, Mesh};
use crate::kube::registry::RegistryOptions;
use crate::kube::source::KubeSource;
use crate::kube::sync::{self, Sources};
use crate::metrics::PilotMetrics;
use crate::store::DirStore;
use crate::watch::{Debounce, watch};

/// A pilot serving on its listeners until `stop` (also on drop).
pub struct Pilot {
    pub discovery: Arc<Discovery>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub stop: CancellationToken,
    serving: tokio::task::JoinHandle<()>,
}

/// The Kubernetes source of a pilot.
pub struct KubeOptions {
    pub client: kube::Client,
    pub registry: RegistryOptions,
    /// How long to wait for every watch's first list before serving what is known.
    pub sync_timeout: Duration,
}

impl Pilot {
    /// Loads `config_dir` once, then serves and watches it.
    pub async fn start(
        config_dir: &Path,
        grpc: TcpListener,
        http: TcpListener,
        debounce: Debounce,
    ) -> std::io::Result<Self> {
        let mut store = DirStore::new(config_dir);
        store.scan();
        let mesh = Mesh::new(1, Instant::now(), store.resources());
        Self::serve(mesh, grpc, http, |discovery, stop| {
            tokio::spawn(watch(store, discovery, debounce, stop));
        })
    }

    /// Serves the cluster's Services, EndpointSlices, Pods and config objects, and the files of
    /// `config_dir` if given. The first config waits until every watch has listed once (or
    /// `sync_timeout`), so proxies never get a registry that is only partly read.
    pub async fn start_kube(
        config_dir: Option<&Path>,
        kube: KubeOptions,
        grpc: TcpListener,
        http: TcpListener,
        debounce: Debounce,
    ) -> std::io::Result<Self> {
        let watches_stop = CancellationToken::new();
        let source = KubeSource::start(kube.client, watches_stop.clone());
        if !source.state.wait_synced(kube.sync_timeout).await {
            tracing::warn!(timeout = ?kube.sync_timeout, "not every watch has listed; serving what is known");
        }
        let mut dir = config_dir.map(DirStore::new);
        if let Some(d) = dir.as_mut() {
            d.scan();
        }
        let sources = Sources {
            dir,
            kube: source.state,
            registry: kube.registry,
        };
        let mesh = sources.mesh();
        Self::serve(mesh, grpc, http, |discovery, stop| {
            // The watches end with the pilot.
            let stop_watches = stop.clone();
            tokio::spawn(async move {
                stop_watches.cancelled().await;
                watches_stop.cancel();
            });
            tokio::spawn(sync::run(sources, discovery, debounce, stop));
        })
    }

    fn serve(
        mesh: Mesh,
        grpc: TcpListener,
        http: TcpListener,
        start_sources: impl FnOnce(Arc<Discovery>, CancellationToken),
    ) -> std::io::Result<Self> {
        let metrics = Arc::new(PilotMetrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let discovery = Discovery::new(mesh, metrics);
        let grpc_addr = grpc.local_addr()?;
        let http_addr = http.local_addr()?;
        let stop = CancellationToken::new();
        let debug_task = tokio::spawn(debug::serve(
            http,
            Arc::new(DebugState {
                discovery: discovery.clone(),
                registry,
            }),
        ));
        start_sources(discovery.clone(), stop.clone());
        let serving = {
            let discovery = discovery.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Err(e) = discovery::serve(grpc, discovery, stop).await {
                    tracing::error!(error = %e, "discovery server failed");
                }
                debug_task.abort();
            })
        };
        Ok(Self {
            discovery,
            grpc_addr,
            http_addr,
            stop,
            serving,
        })
    }

    /// Stops serving and waits until the discovery listener is closed.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let _ = (&mut self.serving).await;
    }
}

impl Drop for Pilot {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
