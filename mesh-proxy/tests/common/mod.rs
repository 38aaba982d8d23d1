//! Test helpers: an in-process proxy on 127.0.0.1:0, sample apps, and real HTTP clients.
#![allow(dead_code)]

pub mod dns;
pub mod mesh;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_echo::{EchoConfig, EchoHandle};
use mesh_proto::config::v1::ProxyConfig;
use mesh_proxy::Server;
use serde_json::{Value, json};

pub async fn echo(name: &str, version: &str) -> EchoHandle {
    echo_with(name, version, None).await
}

pub async fn echo_with(name: &str, version: &str, fail_status: Option<u16>) -> EchoHandle {
    mesh_echo::spawn(
        "127.0.0.1:0",
        EchoConfig {
            name: name.into(),
            version: version.into(),
            fail_status,
        },
    )
    .await
    .expect("echo starts")
}

pub fn config(value: Value) -> ProxyConfig {
    serde_json::from_value(value).expect("test config parses")
}

/// A proxy with one outbound listener "out" using route table "out".
pub async fn proxy(route_table: Value, clusters: Value) -> Arc<Server> {
    let server = Server::new();
    server
        .apply(outbound_config(route_table, clusters))
        .await
        .expect("test config is valid");
    server
}

pub fn outbound_config(route_table: Value, clusters: Value) -> ProxyConfig {
    config(json!({
        "version": "1",
        "listeners": [{
            "name": "out", "address": "127.0.0.1:0", "direction": "OUTBOUND",
            "protocol": "HTTP", "routeTable": "out"
        }],
        "routeTables": [route_table],
        "clusters": clusters,
    }))
}

/// A route table "out" with one virtual host per (domain, routes).
pub fn table(vhosts: Value) -> Value {
    json!({ "name": "out", "virtualHosts": vhosts })
}

pub fn cluster(name: &str, endpoints: &[&EchoHandle]) -> Value {
    json!({
        "name": name,
        "lbPolicy": "ROUND_ROBIN",
        "endpoints": endpoints.iter().map(|e| json!({"address": e.addr().to_string()})).collect::<Vec<_>>(),
    })
}

/// A route to one cluster.
pub fn to(cluster: &str) -> Value {
    json!({ "route": { "clusters": [{ "cluster": cluster, "weight": 100 }] } })
}

pub fn out_addr(server: &Server) -> SocketAddr {
    server.listener_addr("out").expect("listener out is bound")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The answering echo app's `name/version`.
    pub fn served_by(&self) -> String {
        let j = self.json();
        format!(
            "{}/{}",
            j["name"].as_str().unwrap(),
            j["version"].as_str().unwrap()
        )
    }

    /// A request header as the upstream app saw it.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
}

pub async fn collect(resp: Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// An HTTP/1.1 client with keep-alive.
pub fn h1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends an HTTP/1.1 request through the proxy at `proxy` with `Host: authority`.
pub async fn send_h1(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header("host", authority);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    collect(
        client
            .request(req)
            .await
            .expect("request through the proxy"),
    )
    .await
}

pub async fn get(proxy: SocketAddr, authority: &str, path: &str) -> Reply {
    send_h1(&h1_client(), proxy, "GET", authority, path, &[], "").await
}

pub async fn get_with(
    proxy: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    send_h1(&h1_client(), proxy, "GET", authority, path, headers, "").await
}

/// An HTTP/2 (prior knowledge) connection to `addr`.
pub async fn h2_connection(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

pub async fn send_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: &str,
    path: &str,
) -> Reply {
    let req = Request::builder()
        .uri(format!("http://{authority}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    sender.ready().await.unwrap();
    collect(sender.send_request(req).await.unwrap()).await
}

/// A metric's value from the admin text (sum over label sets containing `labels`).
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn metrics_text(server: &Server) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, server.registry()).unwrap();
    out
}

/// gRPC bidirectional streaming through the proxy: each message comes back before the next is
/// sent, so nothing on the path buffers the stream, and the replies end when the requests do.
pub async fn assert_bidi_echo(
    client: &mut mesh_proto::echo::v1::echo_client::EchoClient<tonic::transport::Channel>,
) {
    use mesh_proto::echo::v1::EchoRequest;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut replies = client
        .bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        tx.send(EchoRequest {
            message: format!("m{i}"),
            count: 0,
        })
        .await
        .unwrap();
        let m = tokio::time::timeout(std::time::Duration::from_secs(5), replies.message())
            .await
            .expect("reply arrives while the request stream is open")
            .unwrap()
            .unwrap();
        assert_eq!(m.message, format!("m{i}"));
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
}
