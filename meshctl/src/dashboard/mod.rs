//! `meshctl dashboard`: a web page on 127.0.0.1 with the live service graph of the mesh, from
//! the proxies' Istio metrics in Prometheus (the one `meshctl up --prometheus` runs). It serves
//! the page at `/` (no external assets) and the graph at `/graph.json`, computed here from
//! three PromQL queries at every request.

mod graph;
mod query;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;

use crate::http::base_url;

const PAGE: &str = include_str!("page.html");

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Prometheus's address (`meshctl up --prometheus` runs it on 127.0.0.1:9090).
    #[arg(long, env = "MESH_PROMETHEUS", default_value = "http://127.0.0.1:9090")]
    pub prometheus: String,
    /// The page's port on 127.0.0.1 (0: any free port, printed at start).
    #[arg(long, default_value_t = 20001)]
    pub port: u16,
    /// The window the rates and percentiles are taken over (a PromQL duration).
    #[arg(long, default_value = "1m", value_parser = promql_duration)]
    pub window: String,
}

/// Only a plain duration goes into the queries: `30s`, `1m`, `5m`, `1h`.
fn promql_duration(value: &str) -> Result<String, String> {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &value[digits.len()..];
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["ms", "s", "m", "h", "d", "w", "y"].contains(&unit);
    ok.then(|| value.to_owned())
        .ok_or_else(|| format!("{value:?} is not a duration such as 30s, 1m or 1h"))
}

/// Whether a request's `Host` names this machine's loopback: a page of another site that a
/// DNS name pointed at 127.0.0.1 must not read the mesh's graph.
fn loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

struct Dashboard {
    prometheus: String,
    window: String,
}

impl Dashboard {
    /// The graph as JSON, or why it could not be computed.
    async fn graph_json(&self) -> Result<serde_json::Value, query::QueryError> {
        let q = graph::queries(&self.window);
        let (requests, durations, tcp_bytes) = tokio::join!(
            query::instant(&self.prometheus, &q.requests),
            query::instant(&self.prometheus, &q.durations),
            query::instant(&self.prometheus, &q.tcp_bytes),
        );
        let results = graph::Results {
            requests: requests?,
            durations: durations?,
            tcp_bytes: tcp_bytes?,
        };
        let g = graph::graph(&results);
        Ok(json!({
            "window": self.window,
            "prometheus": self.prometheus,
            "nodes": g.nodes,
            "edges": g.edges,
        }))
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        // HTTP/2 names the host in the URI's authority instead.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if !loopback_host(host) {
            return text(StatusCode::FORBIDDEN, "only for 127.0.0.1 or localhost\n");
        }
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match req.uri().path() {
            "/" => respond(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
            "/graph.json" => match self.graph_json().await {
                Ok(graph) => respond(StatusCode::OK, "application/json", graph.to_string()),
                Err(e) => respond(
                    StatusCode::BAD_GATEWAY,
                    "application/json",
                    json!({ "error": e.to_string() }).to_string(),
                ),
            },
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let value = |v: &str| header::HeaderValue::from_str(v).expect("a valid header value");
    headers.insert(header::CONTENT_TYPE, value(content_type));
    headers.insert(header::CACHE_CONTROL, value("no-store"));
    // The page is self-contained: its own inline script and style, and fetches from here.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        value("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"),
    );
    response
}

pub fn run(args: &Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshctl dashboard: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshctl dashboard: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &Args) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let dashboard = Arc::new(Dashboard {
        prometheus: base_url(&args.prometheus),
        window: args.window.clone(),
    });
    println!(
        "mesh dashboard: http://{bound}/ (service graph from Prometheus at {}, over {}); Ctrl-C stops it",
        dashboard.prometheus, dashboard.window
    );
    let _ = std::io::stdout().flush();
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| format!("accept on {bound}: {e}"))?;
        let dashboard = dashboard.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let dashboard = dashboard.clone();
                async move { Ok::<_, std::convert::Infallible>(dashboard.handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_durations_reach_the_queries() {
        for ok in ["30s", "1m", "5m", "1h", "500ms"] {
            assert_eq!(promql_duration(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "m", "1", "1m]) or vector(1", "1 m", "-1m", "1mm"] {
            assert!(promql_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_hosts_are_served() {
        for ok in [
            "127.0.0.1:20001",
            "localhost:20001",
            "localhost",
            "[::1]:20001",
        ] {
            assert!(loopback_host(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example:20001",
            "127.0.0.1.evil.example",
            "",
            "10.0.0.1:20001",
        ] {
            assert!(!loopback_host(Some(bad)), "{bad}");
        }
        assert!(!loopback_host(None));
    }
}
