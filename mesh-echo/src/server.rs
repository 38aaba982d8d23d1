//! Accept loop and per-connection protocol detection (HTTP/1.1 or h2c by the preface).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::EchoConfig;
use crate::dispatch::App;

/// Counters read by tests through [`EchoHandle`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) connections: AtomicU64,
    pub(crate) requests: AtomicU64,
}

/// A server started by [`spawn`]; dropping it stops the server and all its connections.
#[derive(Debug)]
pub struct EchoHandle {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl EchoHandle {
    pub(crate) fn new(addr: SocketAddr, stats: Arc<Stats>, task: JoinHandle<()>) -> Self {
        Self { addr, stats, task }
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// Requests received so far (HTTP, gRPC and upgrades; lines in line mode).
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }
}

impl Drop for EchoHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (e.g. `127.0.0.1:0`) and serves in a background task.
pub async fn spawn(addr: &str, cfg: EchoConfig) -> io::Result<EchoHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(Stats::default());
    let task = tokio::spawn(run(listener, cfg, stats.clone()));
    Ok(EchoHandle { addr, stats, task })
}

/// Serves `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, cfg: EchoConfig) {
    run(listener, cfg, Arc::default()).await
}

async fn run(listener: TcpListener, cfg: EchoConfig, stats: Arc<Stats>) {
    let shutdown = CancellationToken::new();
    // Dropping this future (EchoHandle::drop aborts it) ends every connection and stream task.
    let _guard = shutdown.clone().drop_guard();
    let app = Arc::new(App::new(cfg, stats.clone(), shutdown.clone()));
    let builder = auto::Builder::new(CancellableExecutor(shutdown.clone()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        // Small request/response exchanges: Nagle would only add latency to benchmarks.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        tokio::spawn(shutdown.clone().run_until_cancelled_owned(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { app.handle(req).await }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(err) = conn.await {
                tracing::debug!(%peer, %err, "connection ended with error");
            }
        }));
    }
}

/// Spawns hyper's HTTP/2 stream tasks so that they too stop with the server.
#[derive(Clone)]
struct CancellableExecutor(CancellationToken);

impl<F> hyper::rt::Executor<F> for CancellableExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(self.0.clone().run_until_cancelled_owned(fut));
    }
}
