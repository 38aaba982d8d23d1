//! Traces from real proxies to a real OTLP receiver: a call through two sidecars over mTLS
//! is one trace of a client span and a server span, linked as parent and child, with
//! Envoy's and Istio's attributes; the app sees the server span as its parent. The receiver
//! is the collector's own gRPC service (`opentelemetry.proto.collector.trace.v1`).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mesh::*;
use common::*;
use http::StatusCode;
use mesh_proto::config::v1::ProxyConfig;
use mesh_proxy::Server;
use mesh_proxy::telemetry::WorkloadMetadata;
use mesh_proxy::telemetry::trace::ExportOptions;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const REVIEWS_CLUSTER: &str = "outbound|9080||reviews.default.svc.cluster.local";

/// One exported span with the service it was reported under.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        Some(match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
    }
}

/// An OTLP trace receiver on 127.0.0.1, keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let receiver = Self::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (receiver, addr)
    }

    /// Waits (bounded) until `n` spans arrived.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..100 {
            let spans = self.spans.lock().unwrap().clone();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{n} spans never arrived: {:?}",
            self.spans.lock().unwrap().len()
        );
    }

    fn count(&self) -> usize {
        self.spans.lock().unwrap().len()
    }
}

fn export_to(addr: SocketAddr, node: &str) -> ExportOptions {
    let mut opts = ExportOptions::new(format!("http://{addr}"), node);
    opts.batch_delay = Duration::from_millis(100);
    opts
}

fn workload(name: &str, app: &str, version: &str) -> WorkloadMetadata {
    WorkloadMetadata::from_labels(
        name,
        "default",
        "Kubernetes",
        [("app", app), ("version", version)],
    )
}

/// The client sidecar's outbound listener to reviews' cluster, named as pilot names it, with
/// `tracing` as the proxy's Telemetry tracing config.
fn outbound_to_reviews(server: SocketAddr, tracing: Value) -> ProxyConfig {
    config(json!({
        "version": "1",
        "listeners": [{
            "name": "out", "address": "127.0.0.1:0", "direction": "OUTBOUND",
            "protocol": "HTTP", "routeTable": "out"
        }],
        "routeTables": [{ "name": "out", "virtualHosts": [{
            "name": "reviews", "domains": ["*"],
            "routes": [{ "route": {
                "clusters": [{ "cluster": REVIEWS_CLUSTER, "weight": 100 }],
                "retryPolicy": { "numRetries": 0 }
            } }]
        }]}],
        "clusters": [{
            "name": REVIEWS_CLUSTER,
            "endpoints": [endpoint(server, true, &[&spiffe("reviews")])]
        }],
        "telemetry": { "tracing": tracing },
    }))
}

struct Pair {
    app: mesh_echo::EchoHandle,
    client: Arc<Server>,
    server: Arc<Server>,
    _citadel: Citadel,
}

/// productpage-v1 calls reviews-v2 through their sidecars over mTLS; both report spans to
/// `collector`. The server sidecar keeps Istio's default sampling (1%).
async fn traced_pair(collector: SocketAddr, client_tracing: Value) -> Pair {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v2").await;
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await;
    server.set_workload(workload("reviews-v2", "reviews", "v2"));
    server
        .start_tracing(&export_to(
            collector,
            "sidecar~127.0.0.2~reviews-v2.default~default.svc.cluster.local",
        ))
        .unwrap();
    let client = sidecar(
        Some(citadel.identity("productpage").await),
        outbound_to_reviews(in_addr(&server), client_tracing),
    )
    .await;
    client.set_workload(workload("productpage-v1", "productpage", "v1"));
    client
        .start_tracing(&export_to(
            collector,
            "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local",
        ))
        .unwrap();
    Pair {
        app,
        client,
        server,
        _citadel: citadel,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn one_call_across_two_proxies_is_one_trace_of_a_client_and_a_server_span() {
    let (collector, addr) = Receiver::start().await;
    let pair = traced_pair(addr, json!({ "randomSamplingPercentage": 100 })).await;
    let http = h1_client();
    let reply = send_h1(
        &http,
        out_addr(&pair.client),
        "GET",
        "reviews:9080",
        "/reviews/1?x=y",
        &[("user-agent", "trace-test")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    let spans = collector.wait_for(2).await;
    assert_eq!(spans.len(), 2, "one span per proxy: {spans:#?}");
    let by_kind: HashMap<i32, &Received> = spans.iter().map(|s| (s.span.kind, s)).collect();
    let client = by_kind[&(SpanKind::Client as i32)];
    let server = by_kind[&(SpanKind::Server as i32)];

    // One trace; the client span is its root and the server span's parent.
    assert_eq!(client.span.trace_id, server.span.trace_id);
    assert!(client.span.parent_span_id.is_empty(), "{client:#?}");
    assert_eq!(server.span.parent_span_id, client.span.span_id);

    // The app's request carries the server span as its parent, in W3C and B3 form.
    let trace = hex(&server.span.trace_id);
    let server_span = hex(&server.span.span_id);
    let client_span = hex(&client.span.span_id);
    assert_eq!(
        reply.upstream_header("traceparent").unwrap(),
        format!("00-{trace}-{server_span}-01")
    );
    assert_eq!(reply.upstream_header("x-b3-traceid").unwrap(), trace);
    assert_eq!(reply.upstream_header("x-b3-spanid").unwrap(), server_span);
    assert_eq!(
        reply.upstream_header("x-b3-parentspanid").unwrap(),
        client_span
    );
    assert_eq!(reply.upstream_header("x-b3-sampled").unwrap(), "1");

    // Istio's span names, and the services the spans are reported under.
    assert_eq!(client.span.name, "reviews.default.svc.cluster.local:9080/*");
    assert_eq!(server.span.name, "reviews:9080/*");
    assert_eq!(client.service, "productpage.default");
    assert_eq!(server.service, "reviews.default");

    // Envoy's and Istio's attributes.
    let request_id = reply.upstream_header("x-request-id").unwrap();
    for (span, node, cluster, canonical) in [
        (
            client,
            "sidecar~127.0.0.1~productpage-v1",
            REVIEWS_CLUSTER,
            "productpage",
        ),
        (server, "sidecar~127.0.0.2~reviews-v2", "app", "reviews"),
    ] {
        assert!(span.attr("node_id").unwrap().starts_with(node), "{span:#?}");
        assert_eq!(span.attr("http.method").unwrap(), "GET");
        assert_eq!(
            span.attr("http.url").unwrap(),
            "http://reviews:9080/reviews/1?x=y"
        );
        assert_eq!(span.attr("http.status_code").unwrap(), "200");
        assert_eq!(span.attr("response_flags").unwrap(), "-");
        assert_eq!(span.attr("upstream_cluster").unwrap(), cluster);
        assert_eq!(span.attr("guid:x-request-id").unwrap(), request_id);
        assert_eq!(span.attr("user_agent").unwrap(), "trace-test");
        assert_eq!(span.attr("istio.canonical_service").unwrap(), canonical);
        assert_eq!(span.attr("istio.namespace").unwrap(), "default");
        assert_eq!(span.attr("component").unwrap(), "proxy");
    }
    // Each side names the other, from the peer metadata exchanged over mTLS.
    assert_eq!(
        server.attr("istio.source.principal").unwrap(),
        spiffe("productpage")
    );
    assert_eq!(
        server.attr("istio.source.workload").unwrap(),
        "productpage-v1"
    );
    assert_eq!(
        client.attr("istio.destination.principal").unwrap(),
        spiffe("reviews")
    );
    assert_eq!(
        client.attr("istio.destination.workload").unwrap(),
        "reviews-v2"
    );
    drop(pair.app);
    drop(pair.server);
}

#[tokio::test]
async fn an_incoming_trace_is_continued_and_its_decision_followed() {
    let (collector, addr) = Receiver::start().await;
    // Nothing would be sampled by percentage: the decisions come from the caller.
    let pair = traced_pair(addr, json!({ "randomSamplingPercentage": 0 })).await;
    let http = h1_client();
    let out = out_addr(&pair.client);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";

    // A caller that decided not to sample: no span, but the trace and decision go on.
    let reply = send_h1(
        &http,
        out,
        "GET",
        "reviews:9080",
        "/",
        &[("traceparent", &format!("00-{trace}-{caller}-00"))],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = reply.upstream_header("traceparent").unwrap();
    assert!(seen.starts_with(&format!("00-{trace}-")), "{seen}");
    assert!(seen.ends_with("-00"), "{seen}");
    assert!(
        !seen.contains(caller),
        "each proxy adds its own span: {seen}"
    );

    // A B3 caller that sampled: both proxies report, under the caller's trace.
    let reply = send_h1(
        &http,
        out,
        "GET",
        "reviews:9080",
        "/",
        &[
            ("x-b3-traceid", trace),
            ("x-b3-spanid", caller),
            ("x-b3-sampled", "1"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let spans = collector.wait_for(2).await;
    let client = spans
        .iter()
        .find(|s| s.span.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(hex(&client.span.trace_id), trace);
    assert_eq!(hex(&client.span.parent_span_id), caller);

    // x-client-trace-id forces a trace with no decision before it.
    let reply = send_h1(
        &http,
        out,
        "GET",
        "reviews:9080",
        "/",
        &[("x-client-trace-id", "debug-me")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .upstream_header("traceparent")
            .unwrap()
            .ends_with("-01")
    );
    collector.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(collector.count(), 4, "the unsampled call reported nothing");
}

/// `mesh_proxy_spans_dropped_total` from the proxy's registry.
fn dropped(server: &Server) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, server.registry()).unwrap();
    text.lines()
        .find(|l| l.starts_with("mesh_proxy_spans_dropped_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the dropped-spans counter is registered")
}

#[tokio::test]
async fn with_the_collector_away_requests_succeed_and_spans_are_dropped_and_counted() {
    // A port nothing listens on.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let app = echo("reviews", "v1").await;
    let proxy = Server::new();
    proxy
        .apply(outbound_config(
            json!({ "name": "out", "virtualHosts": [{ "name": "all", "domains": ["*"], "routes": [to("app")] }] }),
            json!([cluster("app", &[&app])]),
        ))
        .await
        .unwrap();
    let mut opts = export_to(
        gone,
        "sidecar~127.0.0.1~lonely.default~default.svc.cluster.local",
    );
    opts.queue = 4;
    proxy.start_tracing(&opts).unwrap();
    let http = h1_client();
    for _ in 0..20 {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            send_h1(
                &http,
                out_addr(&proxy),
                "GET",
                "reviews",
                "/",
                &[("x-client-trace-id", "1")],
                "",
            ),
        )
        .await
        .expect("a request never waits for the collector");
        assert_eq!(reply.status, StatusCode::OK);
    }
    for _ in 0..100 {
        if dropped(&proxy) >= 16.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("dropped spans not counted: {}", dropped(&proxy));
}

#[tokio::test]
async fn a_gateway_continues_an_external_trace_but_chooses_the_request_id() {
    let (collector, addr) = Receiver::start().await;
    let app = echo("shop", "v1").await;
    let gateway = Server::new();
    gateway
        .apply(config(json!({
            "version": "1",
            "listeners": [{
                "name": "gw", "address": "127.0.0.1:0", "direction": "GATEWAY",
                "protocol": "HTTP", "routeTable": "gw"
            }],
            "routeTables": [{ "name": "gw", "virtualHosts": [
                { "name": "shop", "domains": ["*"], "routes": [to("app")] }
            ]}],
            "clusters": [cluster("app", &[&app])],
            "telemetry": { "tracing": { "randomSamplingPercentage": 0 } },
        })))
        .await
        .unwrap();
    gateway
        .start_tracing(&export_to(
            addr,
            "router~127.0.0.1~ingressgateway.istio-system~istio-system.svc.cluster.local",
        ))
        .unwrap();
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let external = "b7ad6b7169203331";
    let reply = send_h1(
        &h1_client(),
        gateway.listener_addr("gw").unwrap(),
        "GET",
        "shop.example.com",
        "/",
        &[
            ("traceparent", &format!("00-{trace}-{external}-01")),
            ("x-request-id", "chosen-by-client"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // Envoy's defaults at the edge: the external trace context is continued (its sampled
    // flag included), the request id is the edge's own (`preserve_external_request_id`).
    let request_id = reply.upstream_header("x-request-id").unwrap();
    assert_ne!(request_id, "chosen-by-client");
    let spans = collector.wait_for(1).await;
    let span = &spans[0];
    assert_eq!(span.span.kind, SpanKind::Client as i32);
    assert_eq!(hex(&span.span.trace_id), trace);
    assert_eq!(hex(&span.span.parent_span_id), external);
    assert_eq!(span.attr("guid:x-request-id").unwrap(), request_id);
    assert_eq!(
        reply.upstream_header("traceparent").unwrap(),
        format!("00-{trace}-{}-01", hex(&span.span.span_id))
    );
}

#[tokio::test]
async fn a_request_id_is_made_where_missing_and_kept_across_the_mesh() {
    let pair = traced_pair(
        Receiver::start().await.1,
        json!({ "randomSamplingPercentage": 0 }),
    )
    .await;
    let http = h1_client();
    let kept = send_h1(
        &http,
        out_addr(&pair.client),
        "GET",
        "reviews:9080",
        "/",
        &[("x-request-id", "from-the-app")],
        "",
    )
    .await;
    assert_eq!(
        kept.upstream_header("x-request-id").as_deref(),
        Some("from-the-app")
    );

    // A plaintext client straight to a PERMISSIVE sidecar's inbound listener.
    let app = echo("ratings", "v1").await;
    let inbound_only = sidecar(None, inbound(app.addr(), json!({}))).await;
    let made = send_h1(
        &http,
        in_addr(&inbound_only),
        "GET",
        "ratings",
        "/",
        &[],
        "",
    )
    .await;
    assert_eq!(made.status, StatusCode::OK);
    let id = made
        .upstream_header("x-request-id")
        .expect("the inbound made one");
    assert_eq!(id.len(), 36, "a UUID: {id}");

    // Without a collector a proxy passes trace headers on untouched and creates none.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let untouched = send_h1(
        &http,
        in_addr(&inbound_only),
        "GET",
        "ratings",
        "/",
        &[("traceparent", traceparent), ("x-b3-sampled", "0")],
        "",
    )
    .await;
    assert_eq!(
        untouched.upstream_header("traceparent").as_deref(),
        Some(traceparent)
    );
    assert_eq!(
        untouched.upstream_header("x-b3-sampled").as_deref(),
        Some("0")
    );
    assert_eq!(untouched.upstream_header("x-b3-spanid"), None);
}

/// A route whose header edits set trace headers: the proxy's context still goes upstream,
/// once, as Envoy injects it after the route's edits.
#[tokio::test]
async fn a_route_setting_trace_headers_does_not_double_the_context() {
    let (_collector, addr) = Receiver::start().await;
    let app = echo("reviews", "v1").await;
    let route_traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    // The shared outbound config to `app`, with the route's edits and the tracing config.
    let mut cfg =
        serde_json::to_value(outbound(vec![endpoint(app.addr(), false, &[])], json!({}))).unwrap();
    cfg["routeTables"][0]["virtualHosts"][0]["routes"][0]["requestHeaders"] = json!({ "set": [
        { "name": "traceparent", "value": route_traceparent },
        { "name": "x-b3-sampled", "value": "1" },
    ] });
    cfg["telemetry"] = json!({ "tracing": { "randomSamplingPercentage": 0 } });
    let client = sidecar(None, config(cfg)).await;
    client
        .start_tracing(&export_to(
            addr,
            "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local",
        ))
        .unwrap();
    let reply = send_h1(
        &h1_client(),
        out_addr(&client),
        "GET",
        "reviews:9080",
        "/",
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let traceparent = reply.upstream_header("traceparent").unwrap();
    assert_ne!(traceparent, route_traceparent);
    assert!(
        traceparent.len() == 55 && traceparent.ends_with("-00"),
        "one context, the proxy's: {traceparent}"
    );
    assert_eq!(reply.upstream_header("x-b3-sampled").as_deref(), Some("0"));
}
