//! Fault injection (VirtualService `fault`) through a real proxy to a real app: aborts with an
//! HTTP or gRPC status, delays that do not count against the route timeout, and shares of
//! requests.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use mesh_proto::echo::v1::EchoRequest;
use mesh_proto::echo::v1::echo_client::EchoClient;
use serde_json::{Value, json};

/// A proxy whose only route sends host `svc` to `app` with `fault` and `action` extras.
async fn faulty(
    app: &mesh_echo::EchoHandle,
    fault: Value,
    action: Value,
) -> std::sync::Arc<mesh_proxy::Server> {
    let mut route = json!({ "clusters": [{ "cluster": "app", "weight": 100 }] });
    for (k, v) in action.as_object().unwrap() {
        route[k] = v.clone();
    }
    proxy(
        table(
            json!([{ "name": "svc", "domains": ["svc", "echo.grpc:50051"],
            "routes": [{ "route": route, "fault": fault }] }]),
        ),
        json!([cluster("app", &[app])]),
    )
    .await
}

#[tokio::test]
async fn abort_answers_without_reaching_the_app() {
    let app = echo("app", "v1").await;
    let server = faulty(
        &app,
        json!({ "abort": { "httpStatus": 503, "percentage": 100.0 } }),
        json!({}),
    )
    .await;
    for _ in 0..5 {
        let r = get(out_addr(&server), "svc", "/").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&r.body[..], b"fault filter abort");
    }
    assert_eq!(app.requests(), 0, "aborted requests never reach the app");
    assert_eq!(
        metric(
            &metrics_text(&server),
            "mesh_proxy_requests_total",
            "response_code=\"503\""
        ),
        5.0
    );
}

#[tokio::test]
async fn delay_holds_the_request_outside_the_route_timeout() {
    let app = echo("app", "v1").await;
    let server = faulty(
        &app,
        json!({ "delay": { "fixedDelayMs": 400, "percentage": 100.0 } }),
        json!({ "timeoutMs": 200 }),
    )
    .await;
    let start = Instant::now();
    let r = get(out_addr(&server), "svc", "/").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the timeout starts after the delay"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn a_share_of_requests_is_aborted() {
    let app = echo("app", "v1").await;
    let server = faulty(
        &app,
        json!({ "abort": { "httpStatus": 500, "percentage": 25.0 } }),
        json!({ "retryPolicy": { "numRetries": 0 } }),
    )
    .await;
    const N: usize = 400;
    let mut aborted = 0;
    for _ in 0..N {
        match get(out_addr(&server), "svc", "/").await.status {
            StatusCode::INTERNAL_SERVER_ERROR => aborted += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
    }
    // Binomial(400, 0.25): mean 100, sd 8.7; the bounds are more than 4 sd away.
    assert!((60..=140).contains(&aborted), "{aborted} of {N} aborted");
    assert_eq!(
        app.requests() as usize,
        N - aborted,
        "aborts are not retried"
    );
}

#[tokio::test]
async fn grpc_abort_is_a_grpc_status() {
    let app = echo("grpc", "v1").await;
    let server = faulty(
        &app,
        json!({ "abort": { "grpcStatus": "UNAVAILABLE", "percentage": 100.0 } }),
        json!({}),
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", out_addr(&server)))
        .unwrap()
        .origin("http://echo.grpc:50051".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let status = EchoClient::new(channel)
        .unary(EchoRequest {
            message: "hi".into(),
            count: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "fault filter abort");
    assert_eq!(app.requests(), 0);
}

#[tokio::test]
async fn an_invalid_fault_is_rejected_and_the_last_config_keeps_serving() {
    let app = echo("app", "v1").await;
    let server = faulty(&app, json!({}), json!({})).await;
    let mut bad = server.snapshot().source.clone();
    bad.version = "2".into();
    bad.route_tables[0].virtual_hosts[0].routes[0].fault = Some(config_fault(json!({
        "abort": { "httpStatus": 700, "percentage": 100.0 }
    })));
    let err = server.apply(bad).await.unwrap_err();
    assert_eq!(
        err.field(),
        "routeTables[0].virtualHosts[0].routes[0].fault.abort.httpStatus"
    );
    assert!(err.reason().contains("700"), "{err}");
    assert_eq!(
        get(out_addr(&server), "svc", "/").await.status,
        StatusCode::OK
    );
}

fn config_fault(v: Value) -> mesh_proto::config::v1::FaultInjection {
    serde_json::from_value(v).unwrap()
}
