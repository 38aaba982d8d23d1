//! The real Prometheus server (Debian's `prometheus`, installed by tests/setup.sh) scrapes the
//! proxies of a local bookinfo mesh from their `/stats/prometheus`, and the questions Istio's
//! dashboards ask are answered through its HTTP query API: the request rate per source and
//! destination workload, the success rate, and a p99 from `histogram_quantile` over the
//! duration histogram. Everything on loopback; every wait is bounded.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_e2e::*;
use serde_json::Value;

/// The bookinfo proxies' admin addresses (the example's `local.mesh.dev/admin-port`).
const PRODUCTPAGE_ADMIN: &str = "127.0.0.1:15100";
const REVIEWS_V1_ADMIN: &str = "127.0.0.1:15102";
const REVIEWS_V3_ADMIN: &str = "127.0.0.1:15104";

fn prometheus_config(targets: &[&str]) -> String {
    let targets = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: mesh-proxies\n    metrics_path: /stats/prometheus\n\
         \x20   static_configs:\n      - targets: [{targets}]\n"
    )
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's result vector; empty on any failure (the caller polls).
fn query(prometheus: SocketAddr, promql: &str) -> Vec<Value> {
    let path = format!("/api/v1/query?query={}", encode(promql));
    let Ok((200, body)) = http_get(prometheus, "localhost", &path) else {
        return Vec::new();
    };
    let json: Value = serde_json::from_str(&body).unwrap_or_default();
    json["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The sample value of one result element.
fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Polls `promql` until `accept` holds for its result; bounded.
fn query_until(
    prometheus: SocketAddr,
    promql: &str,
    accept: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut last = Vec::new();
    let ok = eventually(Duration::from_secs(60), || {
        last = query(prometheus, promql);
        accept(&last)
    });
    assert!(ok, "{promql}: never as expected, last result {last:?}");
    last
}

#[test]
fn prometheus_answers_rate_success_and_p99_per_workload_pair() {
    let mesh = LocalMesh::up("bookinfo", Stdio::null());
    let outbound: SocketAddr = "127.0.0.1:15001".parse().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || {
            http_get(outbound, "reviews:9080", "/").is_ok_and(|(s, _)| s == 200)
        }),
        "the local mesh came up"
    );

    let web = format!("127.0.0.1:{}", free_port());
    let config = mesh.state.path().join("prometheus.yml");
    std::fs::write(
        &config,
        prometheus_config(&[PRODUCTPAGE_ADMIN, REVIEWS_V1_ADMIN, REVIEWS_V3_ADMIN]),
    )
    .unwrap();
    let _prometheus = Proc::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                mesh.state.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let prometheus: SocketAddr = web.parse().unwrap();
    // Every target scraped successfully before traffic starts, so rates have a baseline.
    query_until(prometheus, "up == 1", |r| r.len() == 3);

    // Steady traffic from productpage to reviews for a few scrape intervals.
    for _ in 0..60 {
        let (status, _) = http_get(outbound, "reviews:9080", "/").unwrap();
        assert_eq!(status, 200);
        std::thread::sleep(Duration::from_millis(50));
    }

    let pair_rate = query_until(
        prometheus,
        "sum by (source_workload, source_app, destination_workload, destination_app) \
         (rate(istio_requests_total{reporter=\"destination\"}[1m]))",
        |r| {
            r.iter().any(|s| {
                s["metric"]["source_workload"] == "productpage-v1"
                    && s["metric"]["destination_workload"] == "reviews-v1"
                    && value(s) > 0.0
            })
        },
    );
    for s in &pair_rate {
        assert_eq!(s["metric"]["source_app"], "productpage", "{s}");
        assert_eq!(s["metric"]["destination_app"], "reviews", "{s}");
    }

    // The source side agrees on the pair and on mTLS.
    query_until(
        prometheus,
        "sum by (destination_workload) (rate(istio_requests_total{reporter=\"source\",\
         source_workload=\"productpage-v1\",connection_security_policy=\"mutual_tls\"}[1m]))",
        |r| {
            r.iter()
                .any(|s| s["metric"]["destination_workload"] == "reviews-v1" && value(s) > 0.0)
        },
    );

    let success = query_until(
        prometheus,
        "sum(rate(istio_requests_total{reporter=\"destination\",destination_app=\"reviews\",\
         response_code!~\"5..\"}[1m])) / sum(rate(istio_requests_total{reporter=\"destination\",\
         destination_app=\"reviews\"}[1m]))",
        |r| r.len() == 1 && value(&r[0]).is_finite(),
    );
    assert_eq!(value(&success[0]), 1.0, "every call succeeded");

    let p99 = query_until(
        prometheus,
        "histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket\
         {reporter=\"source\",source_workload=\"productpage-v1\"}[1m])))",
        |r| r.len() == 1 && value(&r[0]).is_finite(),
    );
    let p99 = value(&p99[0]);
    eprintln!("per pair: {pair_rate:?}\np99 productpage -> reviews: {p99} ms");
    // Loopback calls through two debug-build proxies: well under Istio's 10 s bucket.
    assert!(p99 > 0.0 && p99 <= 10000.0, "p99 {p99} ms");
}
