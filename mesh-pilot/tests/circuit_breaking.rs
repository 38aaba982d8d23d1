//! Istio's circuit-breaking task on the local mesh: a real pilot serving the task's
//! DestinationRule, a client proxy connected over the discovery protocol, a slow upstream app,
//! and concurrent HTTP/1.1 callers, all on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_echo::{EchoConfig, EchoHandle};
use mesh_pilot::server::Pilot;
use mesh_pilot::watch::Debounce;
use mesh_proto::discovery::v1::{Node, ProxyAddresses};
use mesh_proxy::Server;
use mesh_proxy::discovery::DiscoveryClient;
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "outbound|8000||httpbin.default.svc.cluster.local";

/// The task's DestinationRule, as Istio's docs show it.
const DESTINATION_RULE: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: httpbin, namespace: default }
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
"#;

fn service_yaml(app: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: httpbin, namespace: default }}\nspec:\n  hosts: [httpbin.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{ number: 8000, name: http, protocol: HTTP }}]\n  workloadSelector: {{ labels: {{ app: httpbin }} }}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: httpbin, namespace: default }}\nspec:\n  address: 127.0.0.1\n  ports: {{ http: {} }}\n  labels: {{ app: httpbin }}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: fortio, namespace: default }}\nspec:\n  address: 127.0.0.1\n  labels: {{ app: fortio }}\n",
        app.port()
    )
}

struct Mesh {
    _dir: tempfile::TempDir,
    _pilot: Pilot,
    _app: EchoHandle,
    proxy: Arc<Server>,
    outbound: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Mesh {
    /// Pilot, the slow httpbin stand-in, and fortio's sidecar (an outbound listener).
    async fn start(destination_rule: Option<&str>) -> Self {
        let app = mesh_echo::spawn(
            "127.0.0.1:0",
            EchoConfig {
                name: "httpbin".into(),
                version: "v1".into(),
                fail_status: None,
            },
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("services.yaml"), service_yaml(app.addr())).unwrap();
        if let Some(dr) = destination_rule {
            std::fs::write(dir.path().join("destination-rule.yaml"), dr).unwrap();
        }
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let debounce = Debounce {
            poll: Duration::from_millis(20),
            quiet: Duration::from_millis(30),
            max: Duration::from_secs(1),
        };
        let pilot = Pilot::start(dir.path(), grpc, http, debounce)
            .await
            .unwrap();

        let proxy = Server::new();
        let outbound = mesh_echo::ports::free_loopback_addr();
        let node = Node {
            id: "fortio.default".into(),
            workload: "fortio".into(),
            namespace: "default".into(),
            addresses: Some(ProxyAddresses {
                outbound: outbound.to_string(),
                inbound: mesh_echo::ports::free_loopback_addr().to_string(),
                application: mesh_echo::ports::free_loopback_addr().to_string(),
                transparent: false,
            }),
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let client = DiscoveryClient::new(proxy.clone(), format!("http://{grpc_addr}"), node);
        tokio::spawn(client.run(stop.clone()));
        let start = Instant::now();
        while !proxy.is_ready() {
            assert!(start.elapsed() < Duration::from_secs(10), "proxy not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            _dir: dir,
            _pilot: pilot,
            _app: app,
            proxy,
            outbound,
            stop,
        }
    }

    fn overflow_metric(&self) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, self.proxy.registry()).unwrap();
        text.lines()
            .filter(|l| l.starts_with("mesh_proxy_upstream_overflow_total{") && l.contains(CLUSTER))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    overloaded: usize,
    other: Vec<u16>,
}

/// `callers` concurrent callers, each on its own keep-alive connection, each sending
/// `requests` requests one after the other (fortio's `-c` and `-n`), to a path that answers
/// after 50 ms.
async fn load(outbound: SocketAddr, callers: usize, requests: usize) -> Tally {
    let mut tasks = Vec::new();
    for _ in 0..callers {
        tasks.push(tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut out = Vec::new();
            for _ in 0..requests {
                let req = http::Request::get(format!("http://{outbound}/delay/50"))
                    .header("host", "httpbin:8000")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                let status = resp.status().as_u16();
                let overloaded = resp.headers().get("x-envoy-overloaded").is_some();
                resp.into_body().collect().await.unwrap();
                out.push((status, overloaded));
            }
            out
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        for (status, overloaded) in t.await.unwrap() {
            match (status, overloaded) {
                (200, _) => tally.ok += 1,
                (503, true) => tally.overloaded += 1,
                (s, _) => tally.other.push(s),
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_circuit_breaking_task() {
    let mesh = Mesh::start(Some(DESTINATION_RULE)).await;
    // One connection in use and one request waiting: two callers always fit.
    let two = load(mesh.outbound, 2, 20).await;
    assert_eq!((two.ok, two.overloaded), (40, 0), "{two:?}");
    assert!(two.other.is_empty(), "{two:?}");
    assert_eq!(mesh.overflow_metric(), 0.0);

    // A third caller finds the connection busy and the one pending place taken.
    let three = load(mesh.outbound, 3, 20).await;
    assert!(three.other.is_empty(), "{three:?}");
    assert!(three.overloaded > 0, "{three:?}");
    assert!(three.ok >= 20, "{three:?}");
    assert_eq!(mesh.overflow_metric(), three.overloaded as f64);
    println!("circuit breaking: 2 callers {two:?}, 3 callers {three:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_destination_rule_nothing_overflows() {
    let mesh = Mesh::start(None).await;
    let five = load(mesh.outbound, 5, 10).await;
    assert_eq!((five.ok, five.overloaded), (50, 0), "{five:?}");
    assert!(five.other.is_empty(), "{five:?}");
}
