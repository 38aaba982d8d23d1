//! The admin endpoint, on localhost only: readiness, the running config, the workload
//! certificate (never its key), the log level, metrics, shutdown.
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

mod certs;
mod logging;

pub use certs::{CertificateView, CertsView};
pub use logging::{LogControl, LogLevelError, parse_level};

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

/// What the admin handlers act on: the proxy, and the log filter when the process owns one.
pub struct Admin {
    pub server: Arc<Server>,
    /// `None` in an embedded proxy whose host owns logging: `/logging` then answers 404.
    pub logging: Option<Arc<LogControl>>,
}

/// Serves the admin endpoint without log level control.
pub async fn serve(listener: TcpListener, server: Arc<Server>) {
    serve_admin(
        listener,
        Admin {
            server,
            logging: None,
        },
    )
    .await
}

pub async fn serve_admin(listener: TcpListener, admin: Admin) {
    serve_with(listener, Arc::new(admin), handle).await
}

/// Serves only the Prometheus stats (`/stats/prometheus`, also `/metrics`); any address.
pub async fn serve_metrics(listener: TcpListener, server: Arc<Server>) {
    let admin = Admin {
        server,
        logging: None,
    };
    serve_with(listener, Arc::new(admin), handle_metrics).await
}

type Handler = fn(&Admin, Request<Incoming>) -> Response<Full<Bytes>>;

async fn serve_with(listener: TcpListener, admin: Arc<Admin>, handler: Handler) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _) = tokio::select! {
            _ = admin.server.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let admin = admin.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(handler(&admin, req)) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let server = &admin.server;
    tracing::debug!(method = %req.method(), path = req.uri().path(), "admin request");
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
        (&Method::GET, "/certs") => match server.identity() {
            Some(handle) => json(&CertsView::of(&handle.current())),
            None => text(StatusCode::NOT_FOUND, "no workload certificate\n".into()),
        },
        (&Method::GET | &Method::POST, "/logging") => logging(admin, &req),
        (&Method::POST, "/quitquitquit") => {
            server.shutdown.cancel();
            text(StatusCode::OK, "OK\n".into())
        }
        (
            _,
            "/ready" | "/config_dump" | "/stats/prometheus" | "/certs" | "/logging"
            | "/quitquitquit",
        ) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// `GET /logging` shows the filter in force; `POST /logging?level=debug` sets it (Envoy's
/// verb: a GET that changed state could be triggered by any link).
fn logging(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(control) = &admin.logging else {
        return text(
            StatusCode::NOT_FOUND,
            "log level control is not available in this process\n".into(),
        );
    };
    if req.method() == Method::GET {
        return text(StatusCode::OK, format!("level: {}\n", control.current()));
    }
    match logging::level_param(req.uri().query()).and_then(|l| control.set_level(l)) {
        Ok(level) => {
            tracing::info!(%level, "log level changed through the admin endpoint");
            text(StatusCode::OK, format!("level: {level}\n"))
        }
        Err(e @ LogLevelError::Reload(_)) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(json) => body(StatusCode::OK, "application/json", json),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn handle_metrics(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let server = &admin.server;
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
