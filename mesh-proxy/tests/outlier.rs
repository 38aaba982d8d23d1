//! Outlier detection under load: three replicas, one gone (nothing listens) and one answering
//! 503, Istio's default retries and `outlierDetection`; a fixed-rate client through a real
//! proxy on loopback.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use mesh_test_support::RefusedAddr;
use serde_json::json;

const RATE_PER_SEC: u64 = 200;
const SECONDS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replicas_are_ejected_and_almost_nothing_fails() {
    let healthy = echo("svc", "healthy").await;
    let broken = echo_with("svc", "broken", Some(503)).await;
    let gone = RefusedAddr::new();
    let c = json!({
        "name": "svc", "lbPolicy": "ROUND_ROBIN",
        "endpoints": [
            {"address": gone.addr().to_string()},
            {"address": broken.addr().to_string()},
            {"address": healthy.addr().to_string()},
        ],
        // What pilot sends for `consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s,
        // maxEjectionPercent: 100`.
        "outlierDetection": {
            "consecutive5xx": 3, "intervalMs": 1000, "baseEjectionTimeMs": 30000,
            "maxEjectionPercent": 100,
        },
    });
    // No retry policy on the route: Istio's default (2 retries, 503 and connect failures).
    let server = proxy(
        table(json!([{ "name": "svc", "domains": ["svc"], "routes": [to("svc")] }])),
        json!([c]),
    )
    .await;
    let out = out_addr(&server);

    let client = Arc::new(h1_client());
    let total = RATE_PER_SEC * SECONDS;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for _ in 0..total {
        tick.tick().await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get(format!("http://{out}/"))
                .header("host", "svc")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            resp.status().as_u16()
        }));
    }
    let mut failed = 0u64;
    for t in tasks {
        if t.await.unwrap() != 200 {
            failed += 1;
        }
    }
    let took = start.elapsed();
    let text = metrics_text(&server);
    let ejections = metric(
        &text,
        "mesh_proxy_outlier_ejections_total",
        "cluster=\"svc\"",
    );
    let connect_failures = metric(
        &text,
        "mesh_proxy_upstream_connect_failures_total",
        "cluster=\"svc\"",
    );
    let fraction = failed as f64 / total as f64;
    println!(
        "outlier detection: {total} requests in {took:?}, {failed} failed ({:.3}%), ejections {ejections}, \
         503 replica saw {} requests, {connect_failures} connect failures to the gone replica, healthy saw {}",
        fraction * 100.0,
        broken.requests(),
        healthy.requests()
    );
    assert!(fraction < 0.001, "{failed} of {total} failed");
    assert_eq!(ejections, 2.0, "both bad replicas ejected, once each");
    // Three in a row eject: each bad replica saw a handful of attempts, then nothing (the
    // ejection lasts longer than the test).
    assert!(broken.requests() <= 6, "503 replica: {}", broken.requests());
    assert!(connect_failures <= 6.0, "gone replica: {connect_failures}");
    assert!(healthy.requests() >= total - failed);
}
