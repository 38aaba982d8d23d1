//! Local rate limiting (LocalRateLimit) through a real inbound proxy to a real app: a burst
//! then 429 with Envoy's `x-ratelimit-*` headers, refill after the fill interval, a route with
//! a bucket of its own, RESOURCE_EXHAUSTED for a real gRPC client, the `RL` flag in the
//! standard metrics and the access log, and buckets replaced live by a config change.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::mesh::*;
use common::*;
use http::StatusCode;
use mesh_proto::echo::v1::EchoRequest;
use mesh_proto::echo::v1::echo_client::EchoClient;
use mesh_proxy::Server;
use mesh_proxy::access_log::Output;
use serde_json::{Value, json};

fn bucket(max: u32, fill_ms: u64) -> Value {
    json!({ "maxTokens": max, "tokensPerFill": max, "fillIntervalMs": fill_ms })
}

/// An inbound listener "in" to `app` with these LocalRateLimits (proto3 JSON).
fn limited(app: std::net::SocketAddr, limits: Value) -> mesh_proto::config::v1::ProxyConfig {
    inbound(app, json!({ "localRateLimits": limits }))
}

#[tokio::test]
async fn a_burst_then_429_with_headers_then_the_bucket_refills() {
    let app = echo("reviews", "v1").await;
    let log_dir = std::env::temp_dir().join(format!(
        "mesh-rate-limit-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&log_dir).unwrap();
    let log: PathBuf = log_dir.join("access.log");
    let server = Server::new();
    assert!(server.set_access_log_output(Output::File(log.clone())));
    let mut cfg = serde_json::to_value(limited(
        app.addr(),
        json!([{ "name": "default/reviews", "bucket": bucket(3, 1000) }]),
    ))
    .unwrap();
    cfg["telemetry"] = json!({ "accessLogging": { "logs": [
        { "name": "envoy", "format": "TEXT", "mode": "SERVER" }
    ]}});
    server.apply(config(cfg)).await.expect("config applies");
    let addr = in_addr(&server);

    for i in 0..3 {
        let r = get(addr, "reviews", "/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i} of the burst");
    }
    let r = get(addr, "reviews", "/").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(&r.body[..], b"local_rate_limited");
    assert_eq!(r.headers["x-ratelimit-limit"], "3");
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    assert_eq!(r.headers["x-ratelimit-reset"], "1");
    assert_eq!(app.requests(), 3, "a limited request never reaches the app");

    // One fill interval later the bucket is full again.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    for i in 0..3 {
        let r = get(addr, "reviews", "/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i} after the refill");
    }
    assert_eq!(
        get(addr, "reviews", "/").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let text = metrics_text(&server);
    assert_eq!(
        metric(
            &text,
            "mesh_proxy_rate_limited_total",
            "direction=\"Inbound\",listener=\"in\""
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "istio_requests_total", "response_flags=\"RL\""),
        2.0,
        "{text}"
    );
    let flagged = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_flags=\"RL\""))
        .unwrap();
    assert!(flagged.contains("response_code=\"429\""), "{flagged}");

    // The access log line of a limited request carries the flag.
    let mut line = None;
    for _ in 0..200 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        line = text
            .lines()
            .find(|l| l.contains(" 429 RL "))
            .map(str::to_string);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = std::fs::remove_dir_all(&log_dir);
    assert!(line.is_some(), "no access log line with \" 429 RL \"");
}

#[tokio::test]
async fn a_route_has_a_bucket_of_its_own() {
    let app = echo("reviews", "v1").await;
    let server = sidecar(
        None,
        limited(
            app.addr(),
            json!([{
                "name": "default/reviews",
                "bucket": bucket(2, 3_600_000),
                "routes": [{
                    "name": "login",
                    "matches": [{ "path": { "prefix": "/login" }, "method": { "exact": "GET" } }],
                    "bucket": bucket(1, 3_600_000),
                }],
            }]),
        ),
    )
    .await;
    let addr = in_addr(&server);
    let status = |path: &'static str| async move { get(addr, "reviews", path).await.status };
    assert_eq!(status("/login").await, StatusCode::OK);
    let r = get(addr, "reviews", "/login/again").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["x-ratelimit-limit"], "1");
    // The route's requests took nothing from the limit's own bucket.
    assert_eq!(status("/").await, StatusCode::OK);
    assert_eq!(status("/reviews/1").await, StatusCode::OK);
    let r = get(addr, "reviews", "/reviews/2").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["x-ratelimit-limit"], "2");
}

#[tokio::test]
async fn a_grpc_caller_gets_resource_exhausted() {
    let app = echo("grpc", "v1").await;
    let server = sidecar(
        None,
        limited(
            app.addr(),
            json!([{ "name": "default/grpc", "bucket": bucket(1, 3_600_000) }]),
        ),
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", in_addr(&server)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EchoClient::new(channel);
    let hi = || EchoRequest {
        message: "hi".into(),
        count: 0,
    };
    client.unary(hi()).await.expect("the first call is allowed");
    let status = client.unary(hi()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), "local_rate_limited");
    assert_eq!(status.metadata().get("x-ratelimit-limit").unwrap(), "1");
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn buckets_are_replaced_live_and_an_unchanged_one_keeps_its_state() {
    let app = echo("reviews", "v1").await;
    let one = |version: &str, max: u32| {
        let mut cfg = limited(
            app.addr(),
            json!([{ "name": "default/reviews", "bucket": bucket(max, 3_600_000) }]),
        );
        cfg.version = version.into();
        cfg
    };
    let server = sidecar(None, one("1", 1)).await;
    let count_allowed = |n: usize| {
        let server = server.clone();
        async move {
            let addr = in_addr(&server);
            let mut ok = 0;
            for _ in 0..n {
                if get(addr, "reviews", "/").await.status == StatusCode::OK {
                    ok += 1;
                }
            }
            ok
        }
    };
    assert_eq!(count_allowed(3).await, 1);
    // The same limit in a new config version: the bucket is the same, still empty.
    server.apply(one("2", 1)).await.unwrap();
    assert_eq!(count_allowed(3).await, 0);
    // A changed limit: a new bucket, full.
    server.apply(one("3", 2)).await.unwrap();
    assert_eq!(count_allowed(4).await, 2);
    // No limit: nothing is refused.
    let mut open = inbound(app.addr(), json!({}));
    open.version = "4".into();
    server.apply(open).await.unwrap();
    assert_eq!(count_allowed(5).await, 5);
}

#[tokio::test]
async fn a_bucket_that_cannot_work_is_refused_with_its_field() {
    let app = echo("reviews", "v1").await;
    let server = Server::new();
    let err = server
        .apply(limited(
            app.addr(),
            json!([{ "name": "default/reviews", "bucket": { "maxTokens": 1, "tokensPerFill": 0, "fillIntervalMs": 1000 } }]),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "listeners[0].localRateLimits[0].bucket.tokensPerFill: must be greater than 0"
    );
    // On an outbound listener a limit would not be enforced: refused, not ignored.
    let mut cfg = outbound(vec![endpoint(app.addr(), false, &[])], json!({}));
    cfg.listeners[0].local_rate_limits = limited(
        app.addr(),
        json!([{ "name": "default/reviews", "bucket": bucket(1, 1000) }]),
    )
    .listeners[0]
        .local_rate_limits
        .clone();
    let err = server.apply(cfg).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "listeners[0].localRateLimits[0]: local rate limits are enforced on inbound listeners only"
    );
}
