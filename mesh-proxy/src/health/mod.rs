//! The health port (Istio's 15021), which the kubelet reaches from outside the pod:
//! - `GET /healthz/ready`: 200 once the proxy is ready to serve (its readiness probe, and
//!   what `mesh-proxy wait` polls), 503 before;
//! - `GET /app-health/<container>/<livez|readyz|startupz>`: the app's own probe, rewritten by
//!   the injector to come here so STRICT mTLS on the inbound listener does not refuse the
//!   kubelet's plain-text probes. The proxy runs the original probe against the app over
//!   loopback and answers with the app's status (500 when the app cannot be reached).
//!
//! Nothing else is served: no config, no stats, nothing that would leak from the pod.

pub mod probe;
pub mod probers;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub use probers::{ISTIO_PROBERS_ENV, PROBERS_ENV, Prober, Probers, ProbersError};

/// Istio's health port.
pub const HEALTH_PORT: u16 = 15021;
/// The proxy's readiness path.
pub const READY_PATH: &str = "/healthz/ready";

/// Whether the proxy is ready, asked on every `/healthz/ready` (e.g. a closure over a
/// `watch::Receiver<bool>` or an atomic flag).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Serves the health port on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, readiness: Readiness, probers: Arc<Probers>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: keep serving once it passes.
                tracing::warn!(error = %e, "health port: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (readiness, probers, builder) = (readiness.clone(), probers.clone(), builder.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (readiness, probers) = (readiness.clone(), probers.clone());
                async move { Ok::<_, Infallible>(handle(&readiness, &probers, req).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    readiness: &Readiness,
    probers: &Probers,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    let path = req.uri().path();
    if path == READY_PATH {
        return if readiness() {
            text(StatusCode::OK, "ready\n")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        };
    }
    if path.starts_with("/app-health/") {
        let Some(prober) = probers.get(path) else {
            return text(StatusCode::NOT_FOUND, "no such app probe\n");
        };
        let status = probe::run(
            prober,
            probers.app_host(),
            req.headers().get(header::USER_AGENT),
        )
        .await;
        return text(status, "");
    }
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
