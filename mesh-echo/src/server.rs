//! Accept loop, per-connection protocol detection and per-request dispatch.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use mesh_proto::echo::v1::echo_server::EchoServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::EchoConfig;
use crate::body::{self, BoxError, ResponseBody};
use crate::grpc::{self, EchoGrpc};
use crate::{echo, upgrade};

/// Counters read by tests through [`EchoHandle`].
#[derive(Debug, Default)]
struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
}

/// A server started by [`spawn`]; dropping it stops the server and all its connections.
#[derive(Debug)]
pub struct EchoHandle {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl EchoHandle {
    /// The bound address (with the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// Requests received so far (HTTP, gRPC and upgrades).
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

/// Per-server state shared by every connection.
struct App {
    cfg: Arc<EchoConfig>,
    grpc: EchoServer<EchoGrpc>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
}

async fn run(listener: TcpListener, cfg: EchoConfig, stats: Arc<Stats>) {
    let shutdown = CancellationToken::new();
    // Dropping this future (EchoHandle::drop aborts it) ends every connection and stream task.
    let _guard = shutdown.clone().drop_guard();
    let cfg = Arc::new(cfg);
    let app = Arc::new(App {
        grpc: grpc::service(cfg.clone()),
        cfg,
        stats,
        shutdown: shutdown.clone(),
    });
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
        app.stats.connections.fetch_add(1, Ordering::Relaxed);
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

impl App {
    async fn handle(&self, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        // A broken replica fails everything alike, so the JSON handler answers it all.
        let healthy = self.cfg.fail_status.is_none();
        let res = if grpc::is_grpc(&req) {
            return Ok(match self.cfg.fail_status {
                None => self.grpc(req).await,
                Some(code) => grpc::broken(code, &self.cfg),
            });
        } else if healthy && upgrade::is_upgrade(&req) {
            upgrade::accept(req, &self.cfg, self.shutdown.clone())
        } else {
            echo::respond(req, &self.cfg).await
        };
        Ok(res.unwrap_or_else(|err| {
            // Only a broken request body gets here; the client is gone or misbehaving.
            tracing::debug!(%err, "request failed");
            error_response()
        }))
    }
}

impl App {
    async fn grpc(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let res = match self.grpc.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        res.map(|b| b.map_err(BoxError::from).boxed_unsync())
    }
}

fn error_response() -> Response<ResponseBody> {
    let mut res = Response::new(body::empty());
    *res.status_mut() = StatusCode::BAD_REQUEST;
    res
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
