//! A running pilot: store watcher, discovery server and debug endpoint, started together.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::debug::{self, DebugState};
use crate::discovery::{self, Discovery, Mesh};
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
        let metrics = Arc::new(PilotMetrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let discovery = Discovery::new(Mesh::new(1, Instant::now(), store.resources()), metrics);
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
        tokio::spawn(watch(store, discovery.clone(), debounce, stop.clone()));
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
