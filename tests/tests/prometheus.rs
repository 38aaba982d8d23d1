//! `meshctl up --prometheus` runs the real Prometheus server (Debian's `prometheus`, installed
//! by tests/setup.sh) scraping every proxy of a local bookinfo mesh (plus a TCP service) and
//! pilot. Through its HTTP query API: the questions Istio's dashboards ask are answered (the
//! request rate per source and destination workload, the success rate, a p99 from
//! `histogram_quantile`, TCP bytes); every query of the Grafana dashboard in charts/ returns
//! data; and `meshctl dashboard` draws the graph of the calls the traffic made, checked in
//! headless Chromium (Debian's `chromium`) from the page's DOM, with a screenshot kept under
//! target/e2e-artifacts/. One mesh and one Prometheus for all of it; everything on loopback;
//! every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_e2e::*;
use serde_json::Value;

/// A TCP service beside bookinfo: `sleep-v1` calls `tcp-echo` through its Sidecar's egress
/// listener on 127.0.0.1:9000 (ports clear of the example's).
const TCP_ECHO: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: tcp-echo, namespace: default }
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9000, name: tcp, protocol: TCP }]
  workloadSelector: { labels: { app: tcp-echo } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: tcp-echo-v1
  namespace: default
  annotations: { local.mesh.dev/app-port: "29190", local.mesh.dev/admin-port: "15120" }
spec:
  address: 127.0.0.1
  ports: { tcp: 19190 }
  labels: { app: tcp-echo, version: v1 }
  serviceAccount: tcp-echo
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: sleep, namespace: default }
spec:
  hosts: [sleep.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: sleep } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: sleep-v1
  namespace: default
  annotations: { local.mesh.dev/app-port: "29192", local.mesh.dev/admin-port: "15121" }
spec:
  address: 127.0.0.1
  ports: { http: 19192 }
  labels: { app: sleep, version: v1 }
  serviceAccount: sleep
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: sleep, namespace: default }
spec:
  workloadSelector: { labels: { app: sleep } }
  egress:
  - port: { number: 9000, name: tcp-echo, protocol: TCP }
    captureMode: NONE
    hosts: [./tcp-echo.default.svc.cluster.local]
"#;

/// bookinfo's seven proxies, the two above, and pilot.
const SCRAPE_TARGETS: usize = 10;
const OUTBOUND: &str = "127.0.0.1:15001";
const GATEWAY: &str = "127.0.0.1:18080";
const TCP_EGRESS: &str = "127.0.0.1:9000";

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
    let ok = eventually(Duration::from_secs(30), || {
        last = query(prometheus, promql);
        accept(&last)
    });
    assert!(ok, "{promql}: never as expected, last result {last:?}");
    last
}

/// Whether `program` is an executable file on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// Collects a child's stdout in the background (the mesh's processes log there too, so it
/// must be drained).
fn drain(stdout: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    text
}

/// One round of bookinfo's calls: the gateway to productpage, productpage to its three
/// backends, and a TCP exchange from sleep to tcp-echo.
fn traffic_round() {
    let gateway: SocketAddr = GATEWAY.parse().unwrap();
    let outbound: SocketAddr = OUTBOUND.parse().unwrap();
    let (status, _) = http_get(gateway, "bookinfo.example.com", "/productpage").unwrap();
    assert_eq!(status, 200, "gateway -> productpage");
    for host in ["reviews:9080", "details:9080", "ratings:9080"] {
        let (status, _) = http_get(outbound, host, "/").unwrap();
        assert_eq!(status, 200, "productpage -> {host}");
    }
    let mut tcp = TcpStream::connect(TCP_EGRESS).expect("sleep's egress listener");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"hello\n").unwrap();
    let mut line = String::new();
    BufReader::new(&tcp).read_line(&mut line).unwrap();
    assert!(line.ends_with("hello\n"), "tcp-echo answered {line:?}");
}

/// The PromQL of every panel of a Grafana dashboard, with its template variables replaced as
/// Grafana would with "All" selected.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL target");
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("${service}", ".*")
                .replace("$service", ".*");
            assert!(!expr.contains('$'), "a variable left in {expr}");
            out.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    out
}

/// The workspace's target directory (the test binary is target/<profile>/deps/<test>).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// Headless Chromium on `url` with `mode` (`--dump-dom` or `--screenshot=FILE`), after five
/// seconds of the page's time; its stdout.
fn chromium(url: &str, mode: &str, profile: &Path) -> String {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut browser = Proc::spawn(
        "chromium",
        Command::new("chromium")
            .args([
                "--headless",
                // Root (CI) cannot use Chromium's sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1400,1100",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(mode)
            .arg(url)
            .stdout(out.reopen().unwrap())
            .stderr(Stdio::null()),
    );
    let status = browser.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "chromium {mode}: {status:?}"
    );
    std::fs::read_to_string(out.path()).unwrap()
}

/// The cell texts of the page's edge-table row from `source` to `target`, if shown.
fn edge_row(dom: &str, source: &str, target: &str) -> Option<Vec<String>> {
    let key = format!("data-source=\"{source}\" data-target=\"{target}\"");
    let row = dom
        .split("<tr ")
        .find(|r| r.starts_with("class=\"edge-row\"") && r.contains(&key))?;
    let row = &row[..row.find("</tr>")?];
    Some(
        row.split("<td")
            .skip(1)
            .map(|cell| {
                let text = &cell[cell.find('>').map_or(0, |i| i + 1)..];
                text[..text.find("</td>").unwrap_or(text.len())].to_owned()
            })
            .collect(),
    )
}

#[test]
fn without_prometheus_on_path_meshctl_up_says_so_before_starting_anything() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo");
    let started = Instant::now();
    let out = Command::new(binary("meshctl"))
        .arg("up")
        .arg(&example)
        .arg("--prometheus")
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--prometheus needs the `prometheus` binary on PATH"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "nothing started"
    );
}

#[test]
fn prometheus_of_meshctl_up_answers_istio_queries_the_grafana_panels_and_the_service_graph() {
    if !mesh_test_support::require(on_path("prometheus"), "the prometheus binary on PATH") {
        return;
    }
    let started = Instant::now();
    let port = free_port();
    let prometheus: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut mesh = LocalMesh::up_with(
        "bookinfo",
        &[("tcp-echo.yaml", TCP_ECHO)],
        &["--prometheus", "--prometheus-port", &port.to_string()],
        Stdio::piped(),
    );
    let banner = drain(mesh.meshctl.child.stdout.take().unwrap());
    let outbound: SocketAddr = OUTBOUND.parse().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || {
            http_get(outbound, "reviews:9080", "/").is_ok_and(|(s, _)| s == 200)
        }),
        "the local mesh came up"
    );
    assert!(
        eventually(Duration::from_secs(10), || banner
            .lock()
            .unwrap()
            .contains("meshctl dashboard --prometheus")),
        "the banner: {}",
        banner.lock().unwrap()
    );
    let text = banner.lock().unwrap().clone();
    assert!(
        text.contains(&format!(
            "prometheus: http://{prometheus} (scraping 9 proxies and pilot"
        )),
        "{text}"
    );
    assert!(
        text.contains("istio_requests_total"),
        "a query to try: {text}"
    );
    assert!(
        mesh.state.path().join("prometheus/prometheus.yml").exists(),
        "config in the state directory"
    );

    // Every proxy and pilot scraped before traffic starts, so rates have a baseline.
    query_until(prometheus, "up == 1", |r| r.len() == SCRAPE_TARGETS);
    query_until(prometheus, "up{job=\"mesh-pilot\"} == 1", |r| r.len() == 1);

    // Steady traffic along bookinfo's paths for a few scrape intervals.
    let traffic_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < traffic_until {
        traffic_round();
        std::thread::sleep(Duration::from_millis(50));
    }

    istio_queries(prometheus);
    grafana_panels(prometheus);
    service_graph(prometheus);
    eprintln!("whole test: {:?}", started.elapsed());
}

/// The questions Istio's dashboards ask, answered from the proxies' metrics.
fn istio_queries(prometheus: SocketAddr) {
    let pair_rate = query_until(
        prometheus,
        "sum by (source_workload, source_app, destination_workload, destination_app) \
         (rate(istio_requests_total{reporter=\"destination\",destination_app=\"reviews\"}[1m]))",
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
    // Loopback calls through two debug-build proxies: well under Istio's 10 s bucket.
    assert!(p99 > 0.0 && p99 <= 10000.0, "p99 {p99} ms");

    // TCP bytes per service, as the calling proxy counted them.
    query_until(
        prometheus,
        "sum by (source_workload, destination_service_name) \
         (rate(istio_tcp_sent_bytes_total{reporter=\"source\",connection_security_policy=\"mutual_tls\"}[1m]))",
        |r| {
            r.iter().any(|s| {
                s["metric"]["source_workload"] == "sleep-v1"
                    && s["metric"]["destination_service_name"] == "tcp-echo"
                    && value(s) > 0.0
            })
        },
    );
    eprintln!("per pair: {pair_rate:?}\np99 productpage -> reviews: {p99} ms");
}

/// Every query of charts/mesh/dashboards/mesh-service-dashboard.json returns data.
fn grafana_panels(prometheus: SocketAddr) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/mesh/dashboards/mesh-service-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
        .expect("the dashboard is JSON");
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 10, "{queries:?}");
    for (title, expr) in &queries {
        let result = query_until(prometheus, expr, |r| !r.is_empty());
        eprintln!("panel {title:?}: {} series", result.len());
    }
}

/// `meshctl dashboard`: the graph's JSON and the page in headless Chromium show the edges
/// the traffic took.
fn service_graph(prometheus: SocketAddr) {
    let port = free_port();
    let page = format!("http://127.0.0.1:{port}/");
    let _dashboard = Proc::spawn(
        "meshctl dashboard",
        Command::new(binary("meshctl"))
            .args(["dashboard", "--prometheus", &format!("http://{prometheus}")])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null()),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut graph = Value::Null;
    let has_edge =
        |g: &Value, source: &str, target: &str| {
            g["edges"].as_array().into_iter().flatten().any(|e| {
                e["source"] == source && e["target"] == target && e["mtls"] == "mutual_tls"
            })
        };
    let ready = eventually(Duration::from_secs(20), || {
        graph = http_get(addr, "127.0.0.1", "/graph.json")
            .ok()
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default();
        has_edge(
            &graph,
            "workload:default/productpage-v1",
            "service:default/reviews",
        ) && has_edge(
            &graph,
            "workload:default/sleep-v1",
            "service:default/tcp-echo",
        )
    });
    assert!(ready, "the graph: {graph:#}");
    let (status, _) = http_get(addr, "mesh.example.com", "/graph.json").unwrap();
    assert_eq!(status, 403, "only loopback names are served");

    if !mesh_test_support::require(on_path("chromium"), "chromium on PATH (Debian's chromium)") {
        return;
    }
    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(&page, "--dump-dom", profile.path());
    for (source, target) in [
        ("istio-ingressgateway", "productpage"),
        ("productpage", "productpage-v1"),
        ("productpage-v1", "reviews"),
        ("productpage-v1", "details"),
        ("productpage-v1", "ratings"),
        ("reviews", "reviews-v1"),
        ("reviews", "reviews-v3"),
    ] {
        let cells = edge_row(&dom, source, target)
            .unwrap_or_else(|| panic!("no edge {source} -> {target} on the page:\n{dom}"));
        let rate: f64 = cells[3]
            .strip_suffix(" rps")
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("{source} -> {target}: rate {:?}", cells[3]));
        assert!(rate > 0.0, "{source} -> {target}: {cells:?}");
        assert_eq!(cells[4], "100.0%", "{source} -> {target}: {cells:?}");
        assert!(cells[5].ends_with(" ms"), "p99 {cells:?}");
        assert_eq!(cells[6], "mTLS", "{source} -> {target}: {cells:?}");
        let drawn = format!(
            "<g class=\"edge\" data-source=\"{source}\" data-target=\"{target}\" data-mtls=\"mutual_tls\">"
        );
        assert!(dom.contains(&drawn), "{source} -> {target} drawn");
    }
    let tcp = edge_row(&dom, "sleep-v1", "tcp-echo").expect("the TCP edge");
    assert_eq!(
        [tcp[2].as_str(), tcp[6].as_str()],
        ["tcp", "mTLS"],
        "{tcp:?}"
    );
    assert!(tcp[3].ends_with("B/s"), "{tcp:?}");
    assert!(
        edge_row(&dom, "reviews", "reviews-v2").is_none(),
        "no traffic went to reviews-v2"
    );

    let dir = target_dir().join("e2e-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("mesh-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &page,
        &format!("--screenshot={}", shot.display()),
        profile.path(),
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    eprintln!("screenshot of the service graph: {}", shot.display());
}
