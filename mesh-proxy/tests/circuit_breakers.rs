//! Per-cluster limits through a real proxy: requests in flight, requests per connection and
//! HTTP/2 upstreams (the circuit-breaking task itself runs through pilot in mesh-pilot's tests).

mod common;

use common::*;
use http::StatusCode;
use serde_json::{Value, json};

async fn single_cluster(cluster: Value) -> std::sync::Arc<mesh_proxy::Server> {
    proxy(
        table(json!([{ "name": "svc", "domains": ["svc"], "routes": [to("svc")] }])),
        json!([cluster]),
    )
    .await
}

fn with(mut cluster: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        cluster[k] = v.clone();
    }
    cluster
}

#[tokio::test]
async fn requests_in_flight_over_max_requests_are_refused_at_once() {
    let app = echo("svc", "v1").await;
    for protocol in ["HTTP1", "HTTP2"] {
        let c = with(
            cluster("svc", &[&app]),
            json!({"protocol": protocol, "circuitBreakers": {"maxRequests": 1}}),
        );
        let server = single_cluster(c).await;
        let out = out_addr(&server);
        let slow = tokio::spawn(async move { get(out, "svc", "/delay/500").await.status });
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let start = std::time::Instant::now();
        let refused = get(out, "svc", "/").await;
        assert_eq!(
            refused.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{protocol}"
        );
        assert_eq!(refused.headers["x-envoy-overloaded"], "true");
        assert!(
            start.elapsed() < std::time::Duration::from_millis(300),
            "answered at once, not queued"
        );
        assert_eq!(slow.await.unwrap(), StatusCode::OK);
        assert_eq!(get(out, "svc", "/").await.status, StatusCode::OK);
        let text = metrics_text(&server);
        assert_eq!(
            metric(
                &text,
                "mesh_proxy_upstream_overflow_total",
                "cluster=\"svc\""
            ),
            1.0
        );
        // Envoy's response flag for a circuit breaker's refusal.
        assert_eq!(
            metric(&text, "istio_requests_total", "response_flags=\"UO\""),
            1.0,
            "{protocol}: {text}"
        );
    }
}

#[tokio::test]
async fn max_requests_per_connection_opens_a_connection_per_request() {
    let app = echo("svc", "v1").await;
    for (limit, expected) in [
        (json!({"maxRequestsPerConnection": 1}), 5.0),
        (json!({}), 1.0),
    ] {
        let c = with(
            cluster("svc", &[&app]),
            json!({"protocol": "HTTP1", "circuitBreakers": limit}),
        );
        let server = single_cluster(c).await;
        let out = out_addr(&server);
        let client = h1_client();
        for _ in 0..5 {
            let r = send_h1(&client, out, "GET", "svc", "/", &[], "").await;
            assert_eq!(r.status, StatusCode::OK);
            // Let the pool take the connection back before the next request.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let text = metrics_text(&server);
        assert_eq!(
            metric(
                &text,
                "mesh_proxy_upstream_connections_total",
                "cluster=\"svc\""
            ),
            expected,
            "{limit}"
        );
    }
}
