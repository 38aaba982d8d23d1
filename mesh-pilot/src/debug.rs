//! Pilot's HTTP endpoint: readiness, per-proxy sync status, config dumps and metrics.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;

use crate::discovery::Discovery;

pub struct DebugState {
    pub discovery: Arc<Discovery>,
    pub registry: Registry,
}

pub async fn serve(listener: TcpListener, state: Arc<DebugState>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    while let Ok((stream, _)) = listener.accept().await {
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn handle(state: &DebugState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/ready" => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        "/debug/syncz" => json_reply(syncz(&state.discovery)),
        "/debug/config_dump" => {
            let query: HashMap<_, _> = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|p| p.split_once('='))
                .collect();
            let Some(id) = query.get("proxy") else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "missing ?proxy=ID\n".into(),
                );
            };
            match state.discovery.connection(id) {
                Some(conn) => {
                    let sent = conn
                        .state
                        .lock()
                        .expect("connection lock")
                        .last_sent
                        .clone();
                    // Decoded on demand: connections keep only the shared encoding.
                    let config = sent.map(|s| s.config());
                    json_reply(serde_json::to_value(config).unwrap_or_default())
                }
                None => reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("no connected proxy {id:?}\n"),
                ),
            }
        }
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &state.registry) {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Every connected proxy with the versions it was sent and acknowledged, or its NACK.
pub fn syncz(discovery: &Discovery) -> serde_json::Value {
    let mesh = discovery.mesh();
    let proxies: Vec<_> = discovery
        .connections()
        .into_iter()
        .map(|(_, c)| {
            let s = c.state.lock().expect("connection lock");
            json!({
                "id": c.node.id,
                "workload": c.node.workload,
                "namespace": c.node.namespace,
                "generation": s.generation,
                "synced": s.generation == mesh.generation && s.config.in_sync() && s.endpoints.in_sync(),
                "config": s.config,
                "endpoints": s.endpoints,
                "problems": &*s.problems,
            })
        })
        .collect();
    let (encoded_configs, encoded_bytes) = discovery.encoded_scopes();
    json!({
        "generation": mesh.generation,
        "resources": mesh.resource_count,
        // Distinct encoded outbound configs alive, shared by the proxies of equal scopes.
        "encoded_outbound_configs": encoded_configs,
        "encoded_outbound_bytes": encoded_bytes,
        "proxies": proxies,
    })
}

fn json_reply(value: serde_json::Value) -> Response<Full<Bytes>> {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    reply(StatusCode::OK, "application/json", text)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
