//! CORS (VirtualService `corsPolicy`) through a real proxy to a real app, in the order a
//! browser sends it: a preflight the proxy answers, then the actual request, whose response
//! carries the CORS headers. Origins the policy does not allow get nothing from the proxy.

mod common;

use common::*;
use http::StatusCode;
use serde_json::{Value, json};

const SHOP: &str = "https://shop.example.com";

fn policy(extra: Value) -> Value {
    let mut p = json!({
        "allowOrigins": [{ "exact": SHOP }, { "regex": "https://.*\\.dev\\.example\\.com" }],
        "allowMethods": "GET,PUT",
        "allowHeaders": "x-custom,content-type",
        "exposeHeaders": "x-trace",
        "maxAge": "86400",
        "allowCredentials": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

async fn with_cors(
    app: &mesh_echo::EchoHandle,
    cors: Value,
    fault: Value,
) -> std::sync::Arc<mesh_proxy::Server> {
    let mut route = to("app");
    route["cors"] = cors;
    if !fault.is_null() {
        route["fault"] = fault;
    }
    proxy(
        table(json!([{ "name": "svc", "domains": ["svc"], "routes": [route] }])),
        json!([cluster("app", &[app])]),
    )
    .await
}

fn preflight(origin: &str) -> Vec<(&str, &str)> {
    vec![
        ("origin", origin),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-custom"),
    ]
}

#[tokio::test]
async fn a_browser_sequence_preflight_then_request() {
    let app = echo("app", "v1").await;
    let server = with_cors(&app, policy(json!({})), Value::Null).await;
    let out = out_addr(&server);
    let client = h1_client();

    let pre = send_h1(
        &client,
        out,
        "OPTIONS",
        "svc",
        "/cart",
        &preflight(SHOP),
        "",
    )
    .await;
    assert_eq!(pre.status, StatusCode::OK);
    assert_eq!(pre.headers["access-control-allow-origin"], SHOP);
    assert_eq!(pre.headers["access-control-allow-methods"], "GET,PUT");
    assert_eq!(
        pre.headers["access-control-allow-headers"],
        "x-custom,content-type"
    );
    assert_eq!(pre.headers["access-control-max-age"], "86400");
    assert_eq!(pre.headers["access-control-allow-credentials"], "true");
    assert_eq!(app.requests(), 0, "the proxy answers the preflight itself");

    let put = send_h1(
        &client,
        out,
        "PUT",
        "svc",
        "/cart",
        &[("origin", SHOP), ("x-custom", "1")],
        "{}",
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(put.served_by(), "app/v1");
    assert_eq!(put.headers["access-control-allow-origin"], SHOP);
    assert_eq!(put.headers["access-control-allow-credentials"], "true");
    assert_eq!(put.headers["access-control-expose-headers"], "x-trace");
    assert_eq!(app.requests(), 1);

    // A request without Origin is not a CORS request.
    let plain = get(out, "svc", "/").await;
    assert!(!plain.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn other_origins_get_no_cors_headers_and_their_preflights_go_upstream() {
    let app = echo("app", "v1").await;
    let server = with_cors(&app, policy(json!({})), Value::Null).await;
    let out = out_addr(&server);
    let evil = "https://shop.example.com.evil.io";

    let pre = send_h1(
        &h1_client(),
        out,
        "OPTIONS",
        "svc",
        "/",
        &preflight(evil),
        "",
    )
    .await;
    assert_eq!(
        pre.served_by(),
        "app/v1",
        "forwarded as unmatchedPreflights FORWARD"
    );
    assert!(!pre.headers.contains_key("access-control-allow-origin"));

    let req = get_with(out, "svc", "/", &[("origin", evil)]).await;
    assert_eq!(req.status, StatusCode::OK);
    assert!(!req.headers.contains_key("access-control-allow-origin"));

    // A regex origin is allowed.
    let dev = get_with(out, "svc", "/", &[("origin", "https://a.dev.example.com")]).await;
    assert_eq!(
        dev.headers["access-control-allow-origin"],
        "https://a.dev.example.com"
    );
}

#[tokio::test]
async fn ignored_unmatched_preflights_are_answered_without_cors_headers() {
    let app = echo("app", "v1").await;
    let cors = policy(json!({ "ignoreUnmatchedPreflights": true }));
    let server = with_cors(&app, cors, Value::Null).await;
    let pre = send_h1(
        &h1_client(),
        out_addr(&server),
        "OPTIONS",
        "svc",
        "/",
        &preflight("https://other.example.org"),
        "",
    )
    .await;
    assert_eq!(pre.status, StatusCode::OK);
    assert!(pre.body.is_empty());
    assert!(!pre.headers.contains_key("access-control-allow-origin"));
    assert_eq!(app.requests(), 0);
}

#[tokio::test]
async fn cors_comes_before_a_fault_and_marks_its_abort() {
    let app = echo("app", "v1").await;
    let abort = json!({ "abort": { "httpStatus": 503, "percentage": 100.0 } });
    let server = with_cors(&app, policy(json!({})), abort).await;
    let out = out_addr(&server);
    let pre = send_h1(
        &h1_client(),
        out,
        "OPTIONS",
        "svc",
        "/",
        &preflight(SHOP),
        "",
    )
    .await;
    assert_eq!(pre.status, StatusCode::OK, "the preflight is not aborted");
    let req = get_with(out, "svc", "/", &[("origin", SHOP)]).await;
    assert_eq!(req.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(req.headers["access-control-allow-origin"], SHOP);
    assert_eq!(app.requests(), 0);
}
