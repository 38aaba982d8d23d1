//! Istio's standard metrics from real proxies: two sidecars over mTLS exchange peer metadata
//! and each reports the other's workload; failures carry Envoy's response flags; the series
//! count does not grow with request paths; metadata from outside the mesh is never believed.
//! Metrics are read the way Prometheus reads them: over HTTP from `/stats/prometheus`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::mesh::*;
use common::*;
use http::StatusCode;
use mesh_proxy::Server;
use mesh_proxy::telemetry::WorkloadMetadata;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PEER_METADATA: &str = "x-mesh-peer-metadata";
const ISTIO_PEER_METADATA: &str = "x-envoy-peer-metadata";

fn workload(name: &str, app: &str, version: &str) -> WorkloadMetadata {
    WorkloadMetadata::from_labels(
        name,
        "default",
        "Kubernetes",
        [("app", app), ("version", version)],
    )
}

/// Serves `server`'s metrics port (Istio's 15090 endpoint) on a loopback port.
async fn metrics_port(server: &Arc<Server>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(mesh_proxy::admin::serve_metrics(listener, server.clone()));
    addr
}

/// `GET /stats/prometheus` over HTTP, as Prometheus scrapes it.
async fn scrape(addr: SocketAddr) -> String {
    let reply = get(addr, "localhost", "/stats/prometheus").await;
    assert_eq!(reply.status, StatusCode::OK);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

/// The sum of a metric's samples whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrapes until `name{labels}` reaches `at_least` (a request is recorded when its response
/// body ends, a moment after the client has it); bounded.
async fn scrape_until(addr: SocketAddr, name: &str, labels: &[&str], at_least: f64) -> String {
    for _ in 0..100 {
        let text = scrape(addr).await;
        if sample(&text, name, labels) >= at_least {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{name} with {labels:?} never reached {at_least}:\n{}",
        scrape(addr).await
    );
}

/// Every `istio_*` series line (help and type lines excluded).
fn istio_series(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("istio_")).count()
}

struct Pair {
    app: mesh_echo::EchoHandle,
    client: Arc<Server>,
    server: Arc<Server>,
    _citadel: Citadel,
}

/// productpage-v1 calls reviews-v2 through their two sidecars, STRICT mTLS between them.
async fn mtls_pair(cluster_extra: serde_json::Value) -> Pair {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v2").await;
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await;
    server.set_workload(workload("reviews-v2", "reviews", "v2"));
    let client = sidecar(
        Some(citadel.identity("productpage").await),
        outbound(
            vec![endpoint(in_addr(&server), true, &[&spiffe("reviews")])],
            cluster_extra,
        ),
    )
    .await;
    client.set_workload(workload("productpage-v1", "productpage", "v1"));
    Pair {
        app,
        client,
        server,
        _citadel: citadel,
    }
}

#[tokio::test]
async fn both_proxies_report_the_other_side_of_an_mtls_call() {
    let pair = mtls_pair(json!({})).await;
    let (client_metrics, server_metrics) = (
        metrics_port(&pair.client).await,
        metrics_port(&pair.server).await,
    );
    // The app's own claim to be someone else is replaced by its proxy's.
    let forged = workload("admin", "admin", "v9").encode();
    let reply = get_with(
        out_addr(&pair.client),
        "reviews.default.svc.cluster.local:9080",
        "/reviews/1",
        &[(PEER_METADATA, forged.to_str().unwrap())],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.served_by(), "reviews/v2");
    // The exchange stays between the proxies: neither app sees a metadata header.
    assert_eq!(reply.upstream_header(PEER_METADATA), None);
    assert!(reply.headers.get(PEER_METADATA).is_none());
    assert_eq!(pair.app.requests(), 1);

    let common = [
        "source_workload=\"productpage-v1\"",
        "source_workload_namespace=\"default\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
        "source_app=\"productpage\"",
        "source_version=\"v1\"",
        "source_cluster=\"Kubernetes\"",
        "destination_workload=\"reviews-v2\"",
        "destination_workload_namespace=\"default\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/reviews\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v2\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    let source: Vec<&str> = common
        .iter()
        .copied()
        .chain([
            "reporter=\"source\"",
            // The client proxy's cluster is named "app" in this config.
            "destination_service=\"app\"",
        ])
        .collect();
    let text = scrape_until(client_metrics, "istio_requests_total", &source, 1.0).await;
    assert_eq!(
        sample(&text, "istio_requests_total", &source),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "istio_request_duration_milliseconds_count", &source),
        1.0
    );
    assert!(
        text.contains("le=\"3600000.0\""),
        "Istio's last bucket: {text}"
    );
    assert!(sample(&text, "istio_response_bytes_sum", &source) > 0.0);
    assert!(
        !text.contains("admin"),
        "the app's forged claim is nowhere: {text}"
    );

    let destination: Vec<&str> = common
        .iter()
        .copied()
        .chain([
            "reporter=\"destination\"",
            "destination_service=\"reviews.default.svc.cluster.local\"",
            "destination_service_name=\"reviews\"",
            "destination_service_namespace=\"default\"",
        ])
        .collect();
    let text = scrape_until(server_metrics, "istio_requests_total", &destination, 1.0).await;
    assert_eq!(
        sample(&text, "istio_requests_total", &destination),
        1.0,
        "{text}"
    );
    assert!(!text.contains("admin"), "{text}");
}

#[tokio::test]
async fn grpc_status_and_tcp_bytes_are_reported_over_mtls() {
    let pair = mtls_pair(json!({ "protocol": "HTTP2" })).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", out_addr(&pair.client)))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut grpc = mesh_proto::echo::v1::echo_client::EchoClient::new(channel);
    grpc.unary(mesh_proto::echo::v1::EchoRequest {
        message: "m".into(),
        count: 1,
    })
    .await
    .unwrap();
    let mut stream = grpc
        .server_stream(mesh_proto::echo::v1::EchoRequest {
            message: "s".into(),
            count: 3,
        })
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    for (reporter, metrics) in [
        ("destination", metrics_port(&pair.server).await),
        ("source", metrics_port(&pair.client).await),
    ] {
        let reporter = format!("reporter=\"{reporter}\"");
        let labels = [
            reporter.as_str(),
            "request_protocol=\"grpc\"",
            "grpc_response_status=\"0\"",
            "source_workload=\"productpage-v1\"",
            "destination_workload=\"reviews-v2\"",
        ];
        let text = scrape_until(metrics, "istio_requests_total", &labels, 2.0).await;
        // One request message per call; one reply, then three streamed.
        assert_eq!(
            sample(&text, "istio_request_messages_total", &labels),
            2.0,
            "{text}"
        );
        assert_eq!(sample(&text, "istio_response_messages_total", &labels), 4.0);
    }

    // TCP: the peer is named by its certificate (and by its metadata when it has some).
    let citadel = Citadel::start(None).await;
    let backend = tcp_echo().await;
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        inbound_tcp(backend, json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await;
    let client = sidecar(
        Some(citadel.identity("productpage").await),
        outbound_tcp(
            vec![endpoint(in_addr(&server), true, &[&spiffe("reviews")])],
            json!({}),
        ),
    )
    .await;
    let msg = b"twenty bytes of data";
    assert!(tcp_round_trip(out_addr(&client), msg).await);
    let closed = [
        "reporter=\"destination\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/reviews\"",
        "request_protocol=\"tcp\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    let server_metrics = metrics_port(&server).await;
    let text = scrape_until(
        server_metrics,
        "istio_tcp_connections_closed_total",
        &closed,
        1.0,
    )
    .await;
    assert_eq!(
        sample(&text, "istio_tcp_connections_opened_total", &closed),
        1.0
    );
    assert_eq!(
        sample(&text, "istio_tcp_received_bytes_total", &closed),
        20.0
    );
    assert_eq!(sample(&text, "istio_tcp_sent_bytes_total", &closed), 20.0);
    let source = [
        "reporter=\"source\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/reviews\"",
        "destination_service=\"app\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    let text = scrape_until(
        metrics_port(&client).await,
        "istio_tcp_connections_closed_total",
        &source,
        1.0,
    )
    .await;
    assert_eq!(sample(&text, "istio_tcp_sent_bytes_total", &source), 20.0);
}

/// A server that accepts connections and never answers.
async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test]
async fn failures_carry_envoys_response_flags() {
    let dead = format!("127.0.0.1:{}", free_port().await);
    let silent = silent_server().await.to_string();
    let route = |cluster: &str, extra: serde_json::Value| {
        let mut r = json!({ "clusters": [{ "cluster": cluster, "weight": 100 }] });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            r[k] = v;
        }
        r
    };
    let no_retry = json!({ "retryPolicy": { "numRetries": 0 } });
    let server = proxy(
        table(json!([
            { "name": "dead", "domains": ["dead"], "routes": [{ "route": route("dead", no_retry.clone()) }] },
            { "name": "retried", "domains": ["retried"], "routes": [{ "route": route("dead",
                json!({ "retryPolicy": { "numRetries": 2, "retryOn": "connect-failure" } })) }] },
            { "name": "empty", "domains": ["empty"], "routes": [{ "route": route("empty", no_retry.clone()) }] },
            { "name": "slow", "domains": ["slow"], "routes": [{ "route": route("slow",
                json!({ "timeoutMs": 200, "retryPolicy": { "numRetries": 0 } })) }] },
            { "name": "hang", "domains": ["hang"], "routes": [{ "route": route("slow", no_retry) }] }
        ])),
        json!([
            { "name": "dead", "endpoints": [{ "address": dead }] },
            { "name": "empty", "endpoints": [] },
            { "name": "slow", "endpoints": [{ "address": silent }] }
        ]),
    )
    .await;
    let out = out_addr(&server);
    let metrics = metrics_port(&server).await;
    for (host, status) in [
        ("dead", 503),
        ("retried", 503),
        ("empty", 503),
        ("slow", 504),
        ("nowhere", 404),
    ] {
        assert_eq!(get(out, host, "/").await.status.as_u16(), status, "{host}");
    }
    // The client gives up on a request the upstream never answers.
    let mut s = TcpStream::connect(out).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: hang\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);

    let flagged = |flags: &str, code: &str, service: &str| {
        vec![
            "reporter=\"source\"".to_string(),
            format!("response_flags=\"{flags}\""),
            format!("response_code=\"{code}\""),
            format!("destination_service=\"{service}\""),
        ]
    };
    for (flags, code, service) in [
        ("UF", "503", "dead"),
        ("UF,URX", "503", "dead"),
        ("UH", "503", "empty"),
        ("UT", "504", "slow"),
        ("NR", "404", "unknown"),
        ("DC", "0", "unknown"),
    ] {
        let labels = flagged(flags, code, service);
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let text = scrape_until(metrics, "istio_requests_total", &labels, 1.0).await;
        assert_eq!(
            sample(&text, "istio_requests_total", &labels),
            1.0,
            "{flags}: {text}"
        );
    }
}

/// A request's duration counts from the first bytes of its head, as Envoy's does: a client
/// that takes 300 ms to send its headers made a request of at least 300 ms.
#[tokio::test]
async fn a_slow_head_is_part_of_the_request_duration() {
    let dead = format!("127.0.0.1:{}", free_port().await);
    let server = proxy(
        table(json!([
            { "name": "known", "domains": ["known"],
              "routes": [{ "route": { "clusters": [{ "cluster": "dead", "weight": 100 }] } }] }
        ])),
        json!([{ "name": "dead", "endpoints": [{ "address": dead }] }]),
    )
    .await;
    let metrics = metrics_port(&server).await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nho").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"st: nowhere\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 404"), "{reply:?}");

    let labels = ["reporter=\"source\"", "response_code=\"404\""];
    let text = scrape_until(
        metrics,
        "istio_request_duration_milliseconds_count",
        &labels,
        1.0,
    )
    .await;
    let ms = sample(&text, "istio_request_duration_milliseconds_sum", &labels);
    assert!((300.0..10_000.0).contains(&ms), "{ms} ms: {text}");
}

#[tokio::test]
async fn a_thousand_paths_make_no_more_series_than_one() {
    let pair = mtls_pair(json!({})).await;
    let (client_metrics, server_metrics) = (
        metrics_port(&pair.client).await,
        metrics_port(&pair.server).await,
    );
    let http = h1_client();
    let out = out_addr(&pair.client);
    send_h1(&http, out, "GET", "reviews", "/item/0?id=0", &[], "").await;
    let labels = ["response_code=\"200\""];
    let one_client = scrape_until(client_metrics, "istio_requests_total", &labels, 1.0).await;
    let one_server = scrape_until(server_metrics, "istio_requests_total", &labels, 1.0).await;
    for i in 1..1000 {
        let path = format!("/item/{i}?id={i}&session={}", i * 7919);
        let id = format!("req-{i}");
        let reply = send_h1(
            &http,
            out,
            "GET",
            "reviews",
            &path,
            &[("x-request-id", &id)],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let many_client = scrape_until(client_metrics, "istio_requests_total", &labels, 1000.0).await;
    let many_server = scrape_until(server_metrics, "istio_requests_total", &labels, 1000.0).await;
    assert_eq!(istio_series(&one_client), istio_series(&many_client));
    assert_eq!(istio_series(&one_server), istio_series(&many_server));
    assert!(!many_client.contains("/item/"), "no path in any label");
}

/// A plaintext HTTP server outside the mesh that claims a workload in its response.
async fn forging_upstream(claim: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let claim = claim.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                // Our proxy's own metadata must not reach a server outside the mesh.
                let leaked = String::from_utf8_lossy(&seen)
                    .to_ascii_lowercase()
                    .contains(PEER_METADATA);
                let status = if leaked { "500 Leaked" } else { "200 OK" };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{PEER_METADATA}: {claim}\r\n\
                     {ISTIO_PEER_METADATA}: ChoKCkNMVVNURVJfSUQ\r\ncontent-length: 2\r\n\r\nok"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn metadata_from_outside_the_mesh_is_ignored_and_stripped() {
    // Inbound: a plaintext client (PERMISSIVE lets it in) claims to be productpage.
    let app = echo("reviews", "v1").await;
    let server = sidecar(None, inbound(app.addr(), json!({}))).await;
    server.set_workload(workload("reviews-v1", "reviews", "v1"));
    let forged = workload("forged-workload", "forged", "v1").encode();
    let reply = get_with(
        in_addr(&server),
        "reviews",
        "/",
        &[
            (PEER_METADATA, forged.to_str().unwrap()),
            (ISTIO_PEER_METADATA, "ChoKCkNMVVNURVJfSUQ"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.upstream_header(PEER_METADATA),
        None,
        "stripped before the app"
    );
    assert_eq!(reply.upstream_header(ISTIO_PEER_METADATA), None);
    assert!(
        reply.headers.get(PEER_METADATA).is_none(),
        "a plaintext client learns nothing about the workload"
    );
    let labels = [
        "reporter=\"destination\"",
        "source_workload=\"unknown\"",
        "source_principal=\"unknown\"",
        "destination_workload=\"reviews-v1\"",
        "connection_security_policy=\"none\"",
    ];
    let text = scrape_until(
        metrics_port(&server).await,
        "istio_requests_total",
        &labels,
        1.0,
    )
    .await;
    assert!(!text.contains("forged"), "{text}");

    // Outbound: a plaintext upstream outside the mesh claims a workload in its response.
    let upstream = forging_upstream(forged.to_str().unwrap().to_owned()).await;
    let client = sidecar(
        None,
        outbound(vec![endpoint(upstream, false, &[])], json!({})),
    )
    .await;
    client.set_workload(workload("productpage-v1", "productpage", "v1"));
    let reply = get(out_addr(&client), "external", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers.get(PEER_METADATA).is_none(),
        "stripped before the app"
    );
    assert!(reply.headers.get(ISTIO_PEER_METADATA).is_none());
    let labels = [
        "reporter=\"source\"",
        "source_workload=\"productpage-v1\"",
        "destination_workload=\"unknown\"",
        "connection_security_policy=\"none\"",
    ];
    let text = scrape_until(
        metrics_port(&client).await,
        "istio_requests_total",
        &labels,
        1.0,
    )
    .await;
    assert!(!text.contains("forged"), "{text}");
}

#[tokio::test]
async fn turned_off_nothing_is_recorded_or_announced() {
    let pair = mtls_pair(json!({})).await;
    pair.client.set_standard_metrics(false);
    let reply = get(out_addr(&pair.client), "reviews", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    // The server still records (it is on), but learns nothing about the caller.
    let labels = [
        "reporter=\"destination\"",
        "source_workload=\"unknown\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
    ];
    scrape_until(
        metrics_port(&pair.server).await,
        "istio_requests_total",
        &labels,
        1.0,
    )
    .await;
    let text = scrape(metrics_port(&pair.client).await).await;
    assert_eq!(sample(&text, "istio_requests_total", &[]), 0.0, "{text}");
}

/// `cfg` with `telemetry.metrics.overrides` set to `overrides` (proto3 JSON).
fn with_overrides(
    cfg: mesh_proto::config::v1::ProxyConfig,
    overrides: serde_json::Value,
) -> mesh_proto::config::v1::ProxyConfig {
    let mut v = serde_json::to_value(&cfg).unwrap();
    v["telemetry"] = json!({ "metrics": { "overrides": overrides } });
    config(v)
}

/// The `istio_requests_total` lines of `text`.
fn request_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect()
}

#[tokio::test]
async fn metrics_overrides_disable_a_metric_remove_a_tag_and_upsert_others() {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v2").await;
    // The server side: no request size histogram; `destination_app` replaced by a literal.
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        with_overrides(
            inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
            json!([
                { "metric": "STANDARD_METRIC_REQUEST_SIZE", "side": "METRIC_SIDE_SERVER", "disabled": true },
                { "metric": "STANDARD_METRIC_REQUEST_COUNT", "side": "METRIC_SIDE_SERVER",
                  "tags": [{ "name": "destination_app", "literal": "renamed" }] },
            ]),
        ),
    )
    .await;
    server.set_workload(workload("reviews-v2", "reviews", "v2"));
    // The client side: no duration histogram; the request count without `response_code`,
    // with a literal, the method and a header.
    let client = sidecar(
        Some(citadel.identity("productpage").await),
        with_overrides(
            outbound(
                vec![endpoint(in_addr(&server), true, &[&spiffe("reviews")])],
                json!({}),
            ),
            json!([
                { "metric": "STANDARD_METRIC_REQUEST_DURATION", "side": "METRIC_SIDE_CLIENT", "disabled": true },
                { "metric": "STANDARD_METRIC_REQUEST_COUNT", "side": "METRIC_SIDE_CLIENT", "tags": [
                    { "name": "response_code", "remove": true },
                    { "name": "team", "literal": "books" },
                    { "name": "method", "attribute": "REQUEST_ATTRIBUTE_METHOD" },
                    { "name": "tenant", "requestHeader": "x-tenant" },
                ] },
            ]),
        ),
    )
    .await;
    client.set_workload(workload("productpage-v1", "productpage", "v1"));
    let (client_metrics, server_metrics) =
        (metrics_port(&client).await, metrics_port(&server).await);

    let http = h1_client();
    let out = out_addr(&client);
    let long = "x".repeat(65);
    for (path, tenant) in [
        ("/a", Some("acme")),
        ("/status/404", Some("acme")),
        ("/status/503", Some("acme")),
        ("/b", None),
        ("/c", Some(long.as_str())),
    ] {
        let headers: Vec<(&str, &str)> = tenant.map(|t| ("x-tenant", t)).into_iter().collect();
        send_h1(&http, out, "GET", "reviews", path, &headers, "").await;
    }

    let text = scrape_until(client_metrics, "istio_requests_total", &[], 5.0).await;
    // The three codes of tenant acme are one series, without a response_code label.
    let acme = [
        "reporter=\"source\"",
        "team=\"books\"",
        "method=\"GET\"",
        "tenant=\"acme\"",
    ];
    assert_eq!(sample(&text, "istio_requests_total", &acme), 3.0, "{text}");
    let lines = request_lines(&text);
    assert_eq!(lines.len(), 3, "acme, unknown and other: {lines:#?}");
    assert!(
        lines.iter().all(|l| !l.contains("response_code")),
        "{lines:#?}"
    );
    // An absent header is `unknown`; a value over 64 bytes is `other`, never itself.
    assert_eq!(
        sample(&text, "istio_requests_total", &["tenant=\"unknown\""]),
        1.0
    );
    assert_eq!(
        sample(&text, "istio_requests_total", &["tenant=\"other\""]),
        1.0
    );
    assert!(!text.contains(&long), "{text}");
    // The other labels are Istio's.
    assert!(
        lines[0].contains("destination_workload=\"reviews-v2\"")
            && lines[0].contains("source_workload=\"productpage-v1\""),
        "{lines:#?}"
    );
    // The disabled metric has no series; the ones not overridden keep Istio's labels.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("istio_request_duration_milliseconds"))
            .count(),
        0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "istio_request_bytes_count",
            &["response_code=\"404\""]
        ),
        1.0,
        "{text}"
    );

    let text = scrape_until(server_metrics, "istio_requests_total", &[], 5.0).await;
    assert_eq!(
        sample(
            &text,
            "istio_requests_total",
            &["reporter=\"destination\"", "destination_app=\"renamed\""]
        ),
        5.0,
        "{text}"
    );
    // Only the request count is renamed: the duration keeps Istio's label.
    assert!(
        request_lines(&text)
            .iter()
            .all(|l| !l.contains("destination_app=\"reviews\"")),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "istio_request_duration_milliseconds_count",
            &["destination_app=\"reviews\""]
        ),
        5.0,
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("istio_request_bytes"))
            .count(),
        0,
        "{text}"
    );
}

#[tokio::test]
async fn metrics_overrides_change_the_tcp_metrics_per_side() {
    let citadel = Citadel::start(None).await;
    let backend = tcp_echo().await;
    // The server side: no opened count; the sent bytes without the source principal and
    // with a literal team.
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        with_overrides(
            inbound_tcp(backend, json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
            json!([
                { "metric": "STANDARD_METRIC_TCP_OPENED_CONNECTIONS", "side": "METRIC_SIDE_SERVER", "disabled": true },
                { "metric": "STANDARD_METRIC_TCP_SENT_BYTES", "side": "METRIC_SIDE_SERVER", "tags": [
                    { "name": "source_principal", "remove": true },
                    { "name": "team", "literal": "books" },
                    { "name": "host", "attribute": "REQUEST_ATTRIBUTE_HOST" },
                ] },
            ]),
        ),
    )
    .await;
    // The client side: no closed count; the HTTP overrides of the same side leave TCP alone.
    let client = sidecar(
        Some(citadel.identity("productpage").await),
        with_overrides(
            outbound_tcp(
                vec![endpoint(in_addr(&server), true, &[&spiffe("reviews")])],
                json!({}),
            ),
            json!([
                { "metric": "STANDARD_METRIC_TCP_CLOSED_CONNECTIONS", "side": "METRIC_SIDE_CLIENT", "disabled": true },
                { "metric": "STANDARD_METRIC_REQUEST_COUNT", "side": "METRIC_SIDE_CLIENT", "disabled": true },
            ]),
        ),
    )
    .await;
    let msg = b"twenty bytes of data";
    assert!(tcp_round_trip(out_addr(&client), msg).await);

    let server_metrics = metrics_port(&server).await;
    let closed = ["reporter=\"destination\"", "request_protocol=\"tcp\""];
    let text = scrape_until(
        server_metrics,
        "istio_tcp_connections_closed_total",
        &closed,
        1.0,
    )
    .await;
    assert!(
        !text.contains("istio_tcp_connections_opened_total{"),
        "opened is off on the server side: {text}"
    );
    let sent: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_tcp_sent_bytes_total{"))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    // A request value on a connection is `unknown`, as Istio's failed expression.
    for want in [
        "team=\"books\"",
        "host=\"unknown\"",
        "request_protocol=\"tcp\"",
    ] {
        assert!(sent[0].contains(want), "{want} in {sent:#?}");
    }
    assert!(!sent[0].contains("source_principal"), "{sent:#?}");
    assert!(!sent[0].contains("response_code"), "{sent:#?}");
    assert_eq!(
        sample(&text, "istio_tcp_sent_bytes_total", &["team=\"books\""]),
        20.0
    );
    // The received bytes keep Istio's labels.
    assert_eq!(
        sample(
            &text,
            "istio_tcp_received_bytes_total",
            &["source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\""]
        ),
        20.0
    );

    let text = scrape_until(
        metrics_port(&client).await,
        "istio_tcp_sent_bytes_total",
        &["reporter=\"source\""],
        20.0,
    )
    .await;
    assert_eq!(
        sample(
            &text,
            "istio_tcp_connections_opened_total",
            &["reporter=\"source\""]
        ),
        1.0,
        "{text}"
    );
    assert!(
        !text.contains("istio_tcp_connections_closed_total{"),
        "closed is off on the client side: {text}"
    );
}
