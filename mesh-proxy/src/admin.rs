//! The admin endpoint, on localhost only: readiness, the running config, metrics, shutdown.
//! Also the metrics-only endpoint (Istio's 15090) that Prometheus scrapes from outside the pod:
//! it serves the stats and nothing else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::server::Server;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin address {0} is not a loopback address; the admin port must stay on localhost")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the admin listener, refusing anything but loopback.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    if !addr.ip().is_loopback() {
        return Err(AdminError::NotLoopback(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

pub async fn serve(listener: TcpListener, server: Arc<Server>) {
    serve_with(listener, server, handle).await
}

/// Serves only the Prometheus stats (`/stats/prometheus`, also `/metrics`); any address.
pub async fn serve_metrics(listener: TcpListener, server: Arc<Server>) {
    serve_with(listener, server, handle_metrics).await
}

type Handler = fn(&Server, Request<Incoming>) -> Response<Full<Bytes>>;

async fn serve_with(listener: TcpListener, server: Arc<Server>, handler: Handler) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _) = tokio::select! {
            _ = server.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let server = server.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(handler(&server, req)) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn handle(server: &Server, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready") => match server.waiting_for() {
            None => text(StatusCode::OK, "LIVE\n".into()),
            Some(what) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("NOT READY: {what}\n"),
            ),
        },
        (&Method::GET, "/config_dump") => {
            match serde_json::to_vec_pretty(&server.snapshot().source) {
                Ok(json) => body(StatusCode::OK, "application/json", json),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        (&Method::GET, "/stats/prometheus") => stats(server),
        (&Method::POST, "/quitquitquit") => {
            server.shutdown.cancel();
            text(StatusCode::OK, "OK\n".into())
        }
        (_, "/ready" | "/config_dump" | "/stats/prometheus" | "/quitquitquit") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn handle_metrics(server: &Server, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats/prometheus" | "/metrics") => stats(server),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn stats(server: &Server) -> Response<Full<Bytes>> {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, server.registry()) {
        Ok(()) => body(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            out.into_bytes(),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn text(status: StatusCode, s: String) -> Response<Full<Bytes>> {
    body(status, "text/plain", s.into_bytes())
}

fn body(status: StatusCode, content_type: &'static str, bytes: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
