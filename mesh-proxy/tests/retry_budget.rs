//! The retry budget (on by default): an upstream failing every request under concurrent load
//! sees about 3x the client's requests without it (Istio's default 2 retries) and at most
//! about 1.2x with it.

mod common;

use std::sync::Arc;

use common::*;
use mesh_echo::EchoHandle;
use serde_json::{Value, json};

const CALLERS: usize = 20;
const REQUESTS_EACH: usize = 50;

/// Runs the load through a proxy whose cluster "svc" is `cluster`; returns upstream requests
/// per client request.
async fn amplification(upstream: &EchoHandle, cluster: Value) -> f64 {
    // No retry policy on the route: Istio's default, which retries 503.
    let server = proxy(
        table(json!([{ "name": "svc", "domains": ["svc"], "routes": [to("svc")] }])),
        json!([cluster]),
    )
    .await;
    let out = out_addr(&server);
    let before = upstream.requests();
    let client = Arc::new(h1_client());
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..REQUESTS_EACH {
                // Each failure takes 20 ms, so the ratio depends on the budget, not on how
                // busy the machine is.
                let r = send_h1(&client, out, "GET", "svc", "/delay/20", &[], "").await;
                assert_eq!(r.status, http::StatusCode::SERVICE_UNAVAILABLE);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent = (CALLERS * REQUESTS_EACH) as f64;
    (upstream.requests() - before) as f64 / sent
}

fn failing_cluster(upstream: &EchoHandle, extra: Value) -> Value {
    let mut c = cluster("svc", &[upstream]);
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_budget_caps_retry_amplification() {
    let upstream = echo_with("svc", "failing", Some(503)).await;
    let without = amplification(
        &upstream,
        failing_cluster(&upstream, json!({"retryBudget": {"disabled": true}})),
    )
    .await;
    let with_default = amplification(&upstream, failing_cluster(&upstream, json!({}))).await;
    println!(
        "retry budget: upstream/client requests without budget {without:.3}, with the default budget {with_default:.3}"
    );
    assert_eq!(without, 3.0, "every request tried 3 times");
    assert!(with_default <= 1.2, "{with_default}");
    assert!(with_default > 1.0, "retries still happen within the budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_retries_replaces_the_budget() {
    let upstream = echo_with("svc", "failing", Some(503)).await;
    // A generous explicit limit lets every retry through.
    let limited = json!({"circuitBreakers": {"maxRetries": 1000}});
    let ratio = amplification(&upstream, failing_cluster(&upstream, limited)).await;
    assert_eq!(ratio, 3.0);
}
