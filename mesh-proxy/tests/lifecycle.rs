//! Config updates, admin endpoints and bad input.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_proxy::Server;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

fn routes_to(
    cluster_name: &str,
    app: &mesh_echo::EchoHandle,
    version: &str,
) -> mesh_proto::config::v1::ProxyConfig {
    routes_to_addr(cluster_name, app.addr(), version)
}

fn routes_to_addr(
    cluster_name: &str,
    app: SocketAddr,
    version: &str,
) -> mesh_proto::config::v1::ProxyConfig {
    let mut c = outbound_config(
        table(json!([{ "name": "a", "domains": ["app"], "routes": [to(cluster_name)] }])),
        json!([{ "name": cluster_name, "endpoints": [{ "address": app.to_string() }] }]),
    );
    c.version = version.into();
    c
}

/// An upstream that answers as the echo app `app/v1` does, except that it holds a request for
/// `/held`: it reports it on `received` and answers only after [`HoldingUpstream::release`],
/// so a test knows the request is in flight for as long as it needs.
struct HoldingUpstream {
    addr: SocketAddr,
    received: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
}

impl HoldingUpstream {
    async fn start() -> HoldingUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (received_tx, received) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (received_tx, released) = (received_tx.clone(), released.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (received_tx, mut released) = (received_tx.clone(), released.clone());
                    async move {
                        if req.uri().path() == "/held" {
                            let _ = received_tx.send(());
                            let _ = released.wait_for(|released| *released).await;
                        }
                        let body = json!({ "name": "app", "version": "v1" }).to_string();
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HoldingUpstream {
            addr,
            received,
            release,
        }
    }

    /// Waits (up to 10 s) until a request for `/held` has reached this upstream.
    async fn wait_received(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), self.received.recv())
            .await
            .expect("the held request reached the upstream")
            .expect("the upstream is running");
    }

    /// Answers the held requests.
    fn release(&self) {
        self.release.send_replace(true);
    }
}

#[tokio::test]
async fn new_config_applies_atomically_without_dropping_requests_or_connections() {
    let (mut v1, v2) = (HoldingUpstream::start().await, echo("app", "v2").await);
    let server = Server::new();
    server
        .apply(routes_to_addr("one", v1.addr, "1"))
        .await
        .unwrap();
    let out = out_addr(&server);
    let client = h1_client();
    assert_eq!(
        send_h1(&client, out, "GET", "app", "/", &[], "")
            .await
            .served_by(),
        "app/v1"
    );

    // A request is in flight on its own connection (held by the upstream) while the config
    // changes.
    let held = tokio::spawn(async move { get(out, "app", "/held").await });
    v1.wait_received().await;
    server.apply(routes_to("two", &v2, "2")).await.unwrap();
    assert_eq!(
        server.listener_addr("out"),
        Some(out),
        "an unchanged listener keeps its socket"
    );

    // The kept-alive client connection carries on, with the new routes.
    let r = send_h1(&client, out, "GET", "app", "/", &[], "").await;
    assert_eq!(r.served_by(), "app/v2");
    assert!(!held.is_finished(), "the upstream still holds the request");
    v1.release();
    let held = held.await.unwrap();
    assert_eq!(held.status, StatusCode::OK, "in-flight request finished");
    assert_eq!(held.served_by(), "app/v1", "on the config it started with");
}

#[tokio::test]
async fn invalid_config_is_rejected_with_its_field_and_the_old_one_keeps_serving() {
    let app = echo("app", "v1").await;
    let server = Server::new();
    server.apply(routes_to("one", &app, "1")).await.unwrap();
    let mut bad = routes_to("one", &app, "2");
    bad.route_tables[0].virtual_hosts[0].routes[0].r#match =
        Some(mesh_proto::config::v1::RouteMatch {
            path: Some(mesh_proto::config::v1::StringMatch {
                kind: Some(mesh_proto::config::v1::string_match::Kind::Regex(
                    "(".into(),
                )),
            }),
            ..Default::default()
        });
    let err = server.apply(bad).await.unwrap_err();
    assert_eq!(
        err.field(),
        "routeTables[0].virtualHosts[0].routes[0].match.path"
    );
    assert!(err.reason().contains("regex"), "{err}");
    assert_eq!(server.snapshot().source.version, "1");
    assert_eq!(
        get(out_addr(&server), "app", "/").await.status,
        StatusCode::OK
    );
    let m = metrics_text(&server);
    assert_eq!(
        metric(&m, "mesh_proxy_config_updates_total", "rejected"),
        1.0
    );
    assert_eq!(
        metric(&m, "mesh_proxy_config_updates_total", "accepted"),
        1.0
    );

    let mut unknown_cluster = routes_to("one", &app, "3");
    unknown_cluster.clusters.clear();
    let err = server.apply(unknown_cluster).await.unwrap_err();
    assert_eq!(
        err.field(),
        "routeTables[0].virtualHosts[0].routes[0].route.clusters[0].cluster"
    );
}

async fn admin(server: std::sync::Arc<Server>) -> std::net::SocketAddr {
    let l = mesh_proxy::admin::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(mesh_proxy::admin::serve(l, server));
    addr
}

#[tokio::test]
async fn admin_ready_config_dump_stats_and_quit() {
    let server = Server::new();
    let addr = admin(server.clone()).await;
    assert_eq!(
        get(addr, "admin", "/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let app = echo("app", "v1").await;
    server.apply(routes_to("one", &app, "42")).await.unwrap();
    assert_eq!(get(addr, "admin", "/ready").await.status, StatusCode::OK);

    let dump = get(addr, "admin", "/config_dump").await.json();
    assert_eq!(dump["version"], "42");
    assert_eq!(dump["listeners"][0]["direction"], "OUTBOUND");
    assert_eq!(dump["clusters"][0]["name"], "one");

    get(out_addr(&server), "app", "/status/418").await;
    let stats =
        String::from_utf8(get(addr, "admin", "/stats/prometheus").await.body.to_vec()).unwrap();
    assert_eq!(
        metric(&stats, "mesh_proxy_requests_total", "response_code=\"418\""),
        1.0,
        "{stats}"
    );

    let c = h1_client();
    let r = send_h1(&c, addr, "GET", "admin", "/quitquitquit", &[], "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!server.shutdown.is_cancelled());
    let r = send_h1(&c, addr, "POST", "admin", "/quitquitquit", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(server.shutdown.is_cancelled());
}

#[tokio::test]
async fn admin_refuses_non_loopback_addresses() {
    let err = mesh_proxy::admin::bind("0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn bad_input_gets_proper_statuses() {
    let app = echo("app", "v1").await;
    let mut cfg = routes_to("one", &app, "1");
    cfg.clusters[0]
        .subsets
        .push(mesh_proto::config::v1::Subset {
            name: "empty".into(),
            labels: [("version".to_string(), "none".to_string())].into(),
        });
    cfg.route_tables[0].virtual_hosts.push(serde_json::from_value(json!({
        "name": "empty", "domains": ["empty"],
        "routes": [{ "route": { "clusters": [{ "cluster": "one", "subset": "empty", "weight": 1 }] } }]
    })).unwrap());
    let server = Server::new();
    server.apply(cfg).await.unwrap();
    let out = out_addr(&server);

    let r = raw(out, b"GET / HTTP/1.1\r\nHost app\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "malformed header: {r}");
    let r = raw(out, b"BLAH\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "malformed request line: {r}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let r = raw(out, big.as_bytes()).await;
    assert!(
        r.starts_with("HTTP/1.1 431"),
        "headers too large: {}",
        &r[..r.len().min(80)]
    );
    let r = raw(out, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "no host: {r}");

    assert_eq!(get(out, "nobody", "/").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(out, "empty", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(out, "app", "/").await.status,
        StatusCode::OK,
        "still serving"
    );
}

#[tokio::test]
async fn upstream_reset_is_503() {
    // An upstream that reads the request and closes without answering.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        }
    });
    let server = Server::new();
    server
        .apply(outbound_config(
            table(json!([{ "name": "a", "domains": ["*"], "routes": [{
                "route": { "clusters": [{ "cluster": "c", "weight": 1 }], "retryPolicy": {"numRetries": 0} } }] }])),
            json!([{ "name": "c", "endpoints": [{ "address": addr.to_string() }] }]),
        ))
        .await
        .unwrap();
    let r = get(out_addr(&server), "x", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&r.body).contains("reset"),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app = echo("app", "v1").await;
    let server = Server::with_options(mesh_proxy::server::Options {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    server.apply(routes_to("one", &app, "1")).await.unwrap();
    let mut s = tokio::net::TcpStream::connect(out_addr(&server))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy closed the connection");
    assert!(start.elapsed() < Duration::from_secs(3));
}
