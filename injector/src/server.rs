//! The HTTPS server: routes bytes to [`crate::review`] and back. HTTP/1.1 and HTTP/2 (the
//! API server uses either), one task per connection, bounded bodies and handshakes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::inject::Injector;
use crate::review::{self, InjectVerdict};

/// Larger than any object the API server admits (etcd's 1.5 MiB request limit, with room).
pub const MAX_BODY: usize = 8 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
pub struct Webhook {
    pub injector: Injector,
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, webhook: Arc<Webhook>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let webhook = webhook.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let webhook = webhook.clone();
                async move { Ok::<_, Infallible>(handle(&webhook, req).await) }
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// One request to one response; never fails.
pub async fn handle(webhook: &Webhook, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::POST, "/inject" | "/validate") => {}
        (_, "/inject" | "/validate" | "/healthz") => {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let status = if e.is::<http_body_util::LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return text(status, format!("reading the body: {e}\n"));
        }
    };
    let result = if path == "/inject" {
        review::inject(&webhook.injector, &body).map(|(out, verdict)| {
            match &verdict {
                InjectVerdict::Injected => tracing::info!("pod injected"),
                InjectVerdict::Skipped(why) => tracing::info!(reason = %why, "pod not injected"),
                InjectVerdict::Refused(why) => tracing::warn!(reason = %why, "pod refused"),
                InjectVerdict::NotHandled => {}
            }
            out
        })
    } else {
        review::validate(&body).map(|(out, errors)| {
            if !errors.is_empty() {
                tracing::info!(errors = ?errors, "config object refused");
            }
            out
        })
    };
    match result {
        Ok(out) => json(out),
        Err(bad) => {
            tracing::info!(path, reason = %bad, "malformed review");
            text(StatusCode::BAD_REQUEST, format!("{bad}\n"))
        }
    }
}
