//! Timeouts, retries and Envoy's override headers, against real upstream apps.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use mesh_test_support::RefusedAddr;
use serde_json::{Value, json};

fn route_with(cluster: &str, extra: Value) -> Value {
    let mut action = json!({ "clusters": [{ "cluster": cluster, "weight": 100 }] });
    for (k, v) in extra.as_object().unwrap() {
        action[k] = v.clone();
    }
    json!({ "route": action })
}

async fn single_route(cluster_value: Value, extra: Value) -> std::sync::Arc<mesh_proxy::Server> {
    let name = cluster_value["name"].as_str().unwrap().to_string();
    proxy(
        table(json!([{ "name": "svc", "domains": ["svc"], "routes": [route_with(&name, extra)] }])),
        json!([cluster_value]),
    )
    .await
}

#[tokio::test]
async fn route_timeout_answers_504() {
    let app = echo("slow", "v1").await;
    let server = single_route(cluster("slow", &[&app]), json!({"timeoutMs": 150})).await;
    let start = Instant::now();
    let r = get(out_addr(&server), "svc", "/delay/2000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(&r.body[..], b"upstream request timeout");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        get(out_addr(&server), "svc", "/delay/10").await.status,
        StatusCode::OK
    );
    assert!(
        metric(
            &metrics_text(&server),
            "mesh_proxy_upstream_timeouts_total",
            "slow"
        ) >= 1.0
    );
}

#[tokio::test]
async fn route_timeout_covers_retries() {
    let app = echo("slow", "v1").await;
    // Each try gets 100 ms, retries are plenty, but the route allows 250 ms in all.
    let server = single_route(
        cluster("slow", &[&app]),
        json!({"timeoutMs": 250, "retryPolicy": {"numRetries": 10, "perTryTimeoutMs": 100, "retryOn": "5xx"}}),
    )
    .await;
    let start = Instant::now();
    let r = get(out_addr(&server), "svc", "/delay/1000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(240) && took < Duration::from_millis(900),
        "{took:?}"
    );
    assert!(
        app.requests() >= 2 && app.requests() <= 4,
        "tries: {}",
        app.requests()
    );
}

/// An endpoint that accepts connections and never answers; returns its address and a counter
/// of accepted connections.
async fn blackhole() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn per_try_timeout_moves_on_to_another_endpoint() {
    let (hole, accepted) = blackhole().await;
    let healthy = echo("svc", "healthy").await;
    let c = json!({
        "name": "svc", "lbPolicy": "ROUND_ROBIN",
        "endpoints": [{"address": hole}, {"address": healthy.addr().to_string()}],
    });
    let server = single_route(c, json!({"retryPolicy": {"numRetries": 1, "perTryTimeoutMs": 100, "retryOn": "gateway-error"}})).await;
    let out = out_addr(&server);
    let client = h1_client();
    for _ in 0..4 {
        let r = send_h1(&client, out, "GET", "svc", "/", &[], "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.upstream_header("x-envoy-expected-rq-timeout-ms")
                .as_deref(),
            Some("100")
        );
    }
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the silent endpoint was tried"
    );
    assert!(
        metric(
            &metrics_text(&server),
            "mesh_proxy_upstream_timeouts_total",
            "svc"
        ) >= 2.0
    );

    // Without a retry the per-try timeout is the answer: 504.
    let c = json!({ "name": "svc", "endpoints": [{"address": blackhole().await.0}] });
    let server = single_route(
        c,
        json!({"retryPolicy": {"numRetries": 0, "perTryTimeoutMs": 100}}),
    )
    .await;
    assert_eq!(
        get(out_addr(&server), "svc", "/").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test]
async fn retries_on_5xx_go_to_another_endpoint() {
    let broken = echo_with("svc", "broken", Some(503)).await;
    let healthy = echo("svc", "healthy").await;
    let server = single_route(
        cluster("svc", &[&broken, &healthy]),
        json!({"retryPolicy": {"numRetries": 2, "retryOn": "5xx"}}),
    )
    .await;
    let out = out_addr(&server);
    let client = h1_client();
    for _ in 0..20 {
        let r = send_h1(&client, out, "GET", "svc", "/", &[], "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.served_by(), "svc/healthy");
    }
    // Every request ended on the healthy replica exactly once: a retry never went back to the
    // broken one (with 2 retries allowed it could have, were the tried endpoint not avoided).
    assert_eq!(healthy.requests(), 20);
    assert!(
        broken.requests() >= 1 && broken.requests() <= 20,
        "{}",
        broken.requests()
    );
    let retries = metric(
        &metrics_text(&server),
        "mesh_proxy_upstream_retries_total",
        "svc",
    );
    assert_eq!(retries, broken.requests() as f64);
}

#[tokio::test]
async fn attempt_count_is_sent_upstream_and_no_retry_without_a_condition() {
    let broken = echo_with("svc", "broken", Some(503)).await;
    let server = single_route(
        cluster("svc", &[&broken]),
        json!({"retryPolicy": {"numRetries": 3, "retryOn": "retriable-4xx"}}),
    )
    .await;
    let r = get(out_addr(&server), "svc", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(broken.requests(), 1, "503 is not retriable-4xx");
    let ok = echo("svc", "ok").await;
    let server = single_route(cluster("svc", &[&ok]), json!({})).await;
    let r = get(out_addr(&server), "svc", "/").await;
    assert_eq!(
        r.upstream_header("x-envoy-attempt-count").as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn istio_default_retries_connect_failures() {
    let healthy = echo("svc", "healthy").await;
    let dead = RefusedAddr::new();
    let c = json!({
        "name": "svc", "lbPolicy": "ROUND_ROBIN",
        "endpoints": [{"address": dead.addr().to_string()}, {"address": healthy.addr().to_string()}],
    });
    // No retryPolicy: Istio's default (2 retries on connect-failure, ...) applies.
    let server = single_route(c, json!({})).await;
    let out = out_addr(&server);
    let client = h1_client();
    for _ in 0..10 {
        let r = send_h1(&client, out, "GET", "svc", "/", &[], "").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // The default retries 503 (Istio's retriable status code), not other 5xx answers.
    let unavailable = echo_with("svc", "broken", Some(503)).await;
    let server = single_route(cluster("svc", &[&unavailable]), json!({})).await;
    assert_eq!(
        get(out_addr(&server), "svc", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(unavailable.requests(), 3);
    let broken = echo_with("svc", "broken", Some(500)).await;
    let server = single_route(cluster("svc", &[&broken]), json!({})).await;
    assert_eq!(
        get(out_addr(&server), "svc", "/").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(broken.requests(), 1);
}

#[tokio::test]
async fn connect_failure_without_retries_is_503() {
    let dead = RefusedAddr::new();
    let c = json!({ "name": "svc", "endpoints": [{"address": dead.addr().to_string()}] });
    let server = single_route(c, json!({"retryPolicy": {"numRetries": 0}})).await;
    let r = get(out_addr(&server), "svc", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&r.body).contains("connection failure"));
}

#[tokio::test]
async fn retried_post_replays_its_body_and_big_bodies_are_not_retried() {
    let broken = echo_with("svc", "broken", Some(503)).await;
    let healthy = echo("svc", "healthy").await;
    let mut c = cluster("svc", &[&broken, &healthy]);
    c["retryBufferBytes"] = json!(1024);
    let server = single_route(
        c,
        json!({"retryPolicy": {"numRetries": 1, "retryOn": "5xx"}}),
    )
    .await;
    let out = out_addr(&server);
    let client = h1_client();
    let small = "x".repeat(600);
    for _ in 0..4 {
        let r = send_h1(&client, out, "POST", "svc", "/", &[], &small).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.json()["body"],
            small.as_str(),
            "the retry carried the whole body"
        );
    }
    let big = "y".repeat(4096);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            send_h1(&client, out, "POST", "svc", "/", &[], &big)
                .await
                .status
                .as_u16(),
        );
    }
    assert!(
        statuses.contains(&503),
        "bodies over the buffer are not retried: {statuses:?}"
    );
}

#[tokio::test]
async fn override_headers_set_timeout_and_retries_and_are_removed() {
    let broken = echo_with("svc", "broken", Some(503)).await;
    let healthy = echo("svc", "healthy").await;
    let server = single_route(
        cluster("svc", &[&broken, &healthy]),
        json!({"retryPolicy": {"numRetries": 0}}),
    )
    .await;
    let out = out_addr(&server);
    let client = h1_client();
    // Without overrides half the requests fail (round robin over a broken replica).
    let mut failed = 0;
    for _ in 0..4 {
        if send_h1(&client, out, "GET", "svc", "/", &[], "")
            .await
            .status
            != StatusCode::OK
        {
            failed += 1;
        }
    }
    assert_eq!(failed, 2);
    for _ in 0..4 {
        let r = send_h1(
            &client,
            out,
            "GET",
            "svc",
            "/",
            &[
                ("x-envoy-max-retries", "1"),
                ("x-envoy-retry-on", "5xx"),
                ("x-envoy-upstream-rq-timeout-ms", "5000"),
            ],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let headers = r.json()["headers"].clone();
        for h in [
            "x-envoy-max-retries",
            "x-envoy-retry-on",
            "x-envoy-upstream-rq-timeout-ms",
        ] {
            assert!(headers.get(h).is_none(), "{h} must not reach the app");
        }
        let expected: u64 = r
            .upstream_header("x-envoy-expected-rq-timeout-ms")
            .unwrap()
            .parse()
            .unwrap();
        assert!(expected > 4000 && expected <= 5000, "{expected}");
    }

    let r = send_h1(
        &client,
        out,
        "GET",
        "svc",
        "/delay/1000",
        &[("x-envoy-upstream-rq-timeout-ms", "100")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    // An unparsable value is ignored.
    let r = send_h1(
        &client,
        out,
        "GET",
        "svc",
        "/delay/10",
        &[("x-envoy-upstream-rq-timeout-ms", "soon")],
        "",
    )
    .await;
    assert_ne!(r.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn retriable_status_codes_and_grpc_conditions_from_headers() {
    let teapot = echo_with("svc", "teapot", Some(418)).await;
    let healthy = echo("svc", "healthy").await;
    let server = single_route(
        cluster("svc", &[&teapot, &healthy]),
        json!({"retryPolicy": {"numRetries": 0}}),
    )
    .await;
    let out = out_addr(&server);
    let client = h1_client();
    for _ in 0..4 {
        let r = send_h1(
            &client,
            out,
            "GET",
            "svc",
            "/",
            &[
                ("x-envoy-max-retries", "2"),
                ("x-envoy-retry-on", "retriable-status-codes"),
                ("x-envoy-retriable-status-codes", "418"),
            ],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn inbound_listeners_ignore_override_headers() {
    let slow = echo("app", "v1").await;
    let server = mesh_proxy::Server::new();
    server
        .apply(config(json!({
            "listeners": [{ "name": "in", "address": "127.0.0.1:0", "direction": "INBOUND",
                            "protocol": "HTTP", "routeTable": "in" }],
            "routeTables": [{ "name": "in", "virtualHosts": [{ "name": "app", "domains": ["*"],
                "routes": [{ "route": { "clusters": [{ "cluster": "app", "weight": 1 }] } }] }] }],
            "clusters": [cluster("app", &[&slow])],
        })))
        .await
        .unwrap();
    let addr = server.listener_addr("in").unwrap();
    let r = get_with(
        addr,
        "app",
        "/delay/200",
        &[("x-envoy-upstream-rq-timeout-ms", "10")],
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the header came from outside the mesh"
    );
    assert_eq!(
        r.upstream_header("x-envoy-upstream-rq-timeout-ms"),
        None,
        "and is removed"
    );
}

#[tokio::test]
async fn grpc_timeout_bounds_the_request() {
    let app = echo("app", "v1").await;
    let server = single_route(cluster("app", &[&app]), json!({"timeoutMs": 5000})).await;
    let r = get_with(
        out_addr(&server),
        "svc",
        "/delay/2000",
        &[("grpc-timeout", "100m")],
    )
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
}
