//! A local mesh in one process: a real pilot serving a directory of Istio YAML, real proxies
//! connected over the discovery protocol, and real sample apps, all on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_echo::{EchoConfig, EchoHandle};
use mesh_pilot::server::Pilot;
use mesh_pilot::watch::Debounce;
use mesh_proto::discovery::v1::{GatewayAddresses, Node, ProxyAddresses};
use mesh_proxy::Server;
use mesh_proxy::discovery::DiscoveryClient;
use tokio_util::sync::CancellationToken;

const SAMPLES: &str = "../tests/conformance/istio/samples/bookinfo/networking";

fn fast() -> Debounce {
    Debounce {
        poll: Duration::from_millis(20),
        quiet: Duration::from_millis(30),
        max: Duration::from_secs(1),
    }
}

fn free_addr() -> SocketAddr {
    mesh_echo::ports::free_loopback_addr()
}

/// One workload: its app, its proxy, and where they listen.
struct Workload {
    /// None for a gateway, which has no application.
    _app: Option<EchoHandle>,
    proxy: Arc<Server>,
    outbound: Option<SocketAddr>,
    stop: CancellationToken,
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Mesh {
    dir: tempfile::TempDir,
    pilot: Option<Pilot>,
    grpc: SocketAddr,
    workloads: Vec<Workload>,
    expected_generation: std::sync::atomic::AtomicU64,
}

/// ServiceEntry + WorkloadEntry YAML for (service, version, inbound port) triples.
fn services_yaml(entries: &[(&str, &str, u16)]) -> String {
    let mut docs = Vec::new();
    let mut services: Vec<&str> = entries.iter().map(|e| e.0).collect();
    services.dedup();
    for s in services {
        docs.push(format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: {s}, namespace: default }}\nspec:\n  hosts: [{s}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{ number: 9080, name: http, protocol: HTTP }}]\n  workloadSelector: {{ labels: {{ app: {s} }} }}\n"
        ));
    }
    for (s, v, port) in entries {
        docs.push(format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: {s}-{v}, namespace: default }}\nspec:\n  address: 127.0.0.1\n  ports: {{ http: {port} }}\n  labels: {{ app: {s}, version: {v} }}\n  serviceAccount: bookinfo-{s}\n"
        ));
    }
    docs.join("---\n")
}

impl Mesh {
    /// Pilot plus productpage (with an outbound listener), reviews v1/v2/v3 and ratings v1.
    async fn bookinfo() -> Self {
        let workloads = [
            ("productpage", "v1"),
            ("reviews", "v1"),
            ("reviews", "v2"),
            ("reviews", "v3"),
            ("ratings", "v1"),
        ];
        let ports: Vec<(&str, &str, u16)> = workloads
            .iter()
            .map(|(s, v)| (*s, *v, free_addr().port()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("services.yaml"), services_yaml(&ports)).unwrap();
        std::fs::copy(
            Path::new(SAMPLES).join("destination-rule-all.yaml"),
            dir.path().join("destination-rule-all.yaml"),
        )
        .unwrap();
        let grpc = free_addr();
        let mut mesh = Self {
            dir,
            pilot: None,
            grpc,
            workloads: Vec::new(),
            expected_generation: std::sync::atomic::AtomicU64::new(0),
        };
        mesh.start_pilot().await;
        for (service, version, port) in ports {
            mesh.add_workload(service, version, port, service == "productpage")
                .await;
        }
        mesh.wait_synced().await;
        mesh
    }

    async fn start_pilot(&mut self) {
        let grpc = bind_retrying(self.grpc).await;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.pilot = Some(
            Pilot::start(self.dir.path(), grpc, http, fast())
                .await
                .unwrap(),
        );
        self.expected_generation
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }

    async fn add_workload(
        &mut self,
        service: &str,
        version: &str,
        inbound_port: u16,
        outbound: bool,
    ) {
        let app = mesh_echo::spawn(
            "127.0.0.1:0",
            EchoConfig {
                name: service.into(),
                version: version.into(),
                fail_status: None,
            },
        )
        .await
        .unwrap();
        let proxy = Server::new();
        let outbound = outbound.then(free_addr);
        let node = Node {
            id: format!("{service}-{version}.default"),
            workload: format!("{service}-{version}"),
            namespace: "default".into(),
            addresses: Some(ProxyAddresses {
                outbound: outbound.map(|a| a.to_string()).unwrap_or_default(),
                inbound: format!("127.0.0.1:{inbound_port}"),
                application: app.addr().to_string(),
                transparent: false,
                gateway: None,
            }),
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let client = DiscoveryClient::new(proxy.clone(), format!("http://{}", self.grpc), node);
        tokio::spawn(client.run(stop.clone()));
        self.workloads.push(Workload {
            _app: Some(app),
            proxy,
            outbound,
            stop,
        });
    }

    /// An ingress gateway proxy for WorkloadEntry `name.namespace`, its server port 80 bound
    /// at a free loopback port (returned).
    async fn add_gateway(&mut self, name: &str, namespace: &str) -> SocketAddr {
        self.add_gateway_with(name, namespace, 80, Server::new())
            .await
    }

    /// A gateway proxy `proxy` for WorkloadEntry `name.namespace`, its server port `port`
    /// bound at a free loopback port (returned).
    async fn add_gateway_with(
        &mut self,
        name: &str,
        namespace: &str,
        port: u32,
        proxy: Arc<Server>,
    ) -> SocketAddr {
        let port80 = free_addr();
        let node = Node {
            id: format!("{name}.{namespace}"),
            workload: name.into(),
            namespace: namespace.into(),
            addresses: Some(ProxyAddresses {
                gateway: Some(GatewayAddresses {
                    ports: [(port, port80.to_string())].into(),
                    bind_host: "127.0.0.1".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let client = DiscoveryClient::new(proxy.clone(), format!("http://{}", self.grpc), node);
        tokio::spawn(client.run(stop.clone()));
        self.workloads.push(Workload {
            _app: None,
            proxy,
            outbound: None,
            stop,
        });
        port80
    }

    fn pilot(&self) -> &Pilot {
        self.pilot.as_ref().expect("pilot running")
    }

    /// Waits until pilot has taken in the last change and every proxy has ACKed it.
    async fn wait_synced(&self) {
        let start = Instant::now();
        loop {
            let syncz = mesh_pilot::debug::syncz(&self.pilot().discovery);
            let generation = syncz["generation"].as_u64().unwrap();
            if generation
                < self
                    .expected_generation
                    .load(std::sync::atomic::Ordering::SeqCst)
            {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "pilot did not see the change"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let proxies = syncz["proxies"].as_array().unwrap();
            let ready = self.workloads.iter().all(|w| w.proxy.is_ready());
            if ready
                && proxies.len() == self.workloads.len()
                && proxies.iter().all(|p| p["synced"] == true)
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mesh did not sync: {syncz:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes a config file; the next `wait_synced` waits for the generation it causes.
    fn write(&self, name: &str, text: &str) {
        let generation = self.pilot().discovery.mesh().generation;
        self.expected_generation
            .store(generation + 1, std::sync::atomic::Ordering::SeqCst);
        let path: PathBuf = self.dir.path().join(name);
        // Written beside the watched directory and renamed in, so pilot never reads a
        // half-written file (a truncated one would be a generation of its own, with no
        // VirtualService, and satisfy `wait_synced` too early).
        let staging = self.dir.path().with_extension(format!("{name}.staging"));
        std::fs::write(&staging, text).unwrap();
        std::fs::rename(&staging, &path).unwrap();
    }

    fn use_sample(&self, sample: &str) {
        let text = std::fs::read_to_string(Path::new(SAMPLES).join(sample)).unwrap();
        self.write("virtual-service.yaml", &text);
    }

    fn outbound(&self) -> SocketAddr {
        self.workloads
            .iter()
            .find_map(|w| w.outbound)
            .expect("productpage outbound")
    }
}

async fn bind_retrying(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..50 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}");
}

struct Caller {
    client: Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
}

impl Caller {
    fn new(proxy: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            proxy,
        }
    }

    /// GET http://reviews:9080/ through the outbound listener; returns (status, "name/version").
    async fn reviews(&self, headers: &[(&str, &str)]) -> (u16, String) {
        self.call("reviews:9080", headers).await
    }

    /// GET http://HOST/ through the outbound listener; returns (status, "name/version") or,
    /// for a reply that is not the echo app's, (status, body).
    async fn call(&self, host: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = http::Request::builder()
            .uri(format!("http://{}/", self.proxy))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let who = serde_json::from_slice::<serde_json::Value>(&body)
            .map(|j| {
                format!(
                    "{}/{}",
                    j["name"].as_str().unwrap_or("?"),
                    j["version"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).to_string());
        (status, who)
    }

    async fn sample(&self, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            let (status, who) = self.reviews(headers).await;
            assert_eq!(status, 200, "{who}");
            *counts.entry(who).or_default() += 1;
        }
        counts
    }
}

fn share(counts: &HashMap<String, usize>, key: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(key).copied().unwrap_or(0) as f64 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_routing_samples_behave_as_istio_documents() {
    let mesh = Mesh::bookinfo().await;
    let caller = Caller::new(mesh.outbound());

    // No VirtualService yet: round robin over all three versions.
    let counts = caller.sample(90, &[]).await;
    assert_eq!(counts.len(), 3, "{counts:?}");

    mesh.use_sample("virtual-service-all-v1.yaml");
    mesh.wait_synced().await;
    let counts = caller.sample(50, &[]).await;
    assert_eq!(counts.get("reviews/v1"), Some(&50), "{counts:?}");

    // Weighted splits: 600 samples, bounds of about 5 standard deviations.
    for (sample, minor, expected) in [
        ("virtual-service-reviews-50-v3.yaml", "reviews/v3", 0.5_f64),
        ("virtual-service-reviews-80-20.yaml", "reviews/v2", 0.2),
        ("virtual-service-reviews-90-10.yaml", "reviews/v2", 0.1),
    ] {
        mesh.use_sample(sample);
        mesh.wait_synced().await;
        let counts = caller.sample(600, &[]).await;
        let got = share(&counts, minor);
        let sd = (expected * (1.0 - expected) / 600.0_f64).sqrt();
        assert!(
            (got - expected).abs() < 5.0 * sd,
            "{sample}: {minor} share {got}, {counts:?}"
        );
        assert_eq!(counts.len(), 2, "{sample}: {counts:?}");
    }

    mesh.use_sample("virtual-service-reviews-jason-v2-v3.yaml");
    mesh.wait_synced().await;
    let jason = caller.sample(30, &[("end-user", "jason")]).await;
    assert_eq!(jason.get("reviews/v2"), Some(&30), "{jason:?}");
    let others = caller.sample(30, &[("end-user", "someone")]).await;
    assert_eq!(others.get("reviews/v3"), Some(&30), "{others:?}");

    mesh.use_sample("virtual-service-reviews-v3.yaml");
    mesh.wait_synced().await;
    assert_eq!(caller.sample(20, &[]).await.get("reviews/v3"), Some(&20));
}

/// Istio's fault samples: jason's calls to ratings are delayed 7 s, or aborted with 500;
/// everyone else's go through untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_fault_samples_delay_and_abort_jason() {
    let mesh = Mesh::bookinfo().await;
    let caller = Caller::new(mesh.outbound());
    let jason = [("end-user", "jason")];

    mesh.use_sample("virtual-service-ratings-test-abort.yaml");
    mesh.wait_synced().await;
    for _ in 0..10 {
        assert_eq!(
            caller.call("ratings:9080", &jason).await,
            (500, "fault filter abort".to_string())
        );
        assert_eq!(
            caller.call("ratings:9080", &[]).await,
            (200, "ratings/v1".to_string())
        );
    }

    mesh.use_sample("virtual-service-ratings-test-delay.yaml");
    mesh.wait_synced().await;
    let start = Instant::now();
    assert_eq!(caller.call("ratings:9080", &[]).await.0, 200);
    let undelayed = start.elapsed();
    let start = Instant::now();
    assert_eq!(
        caller.call("ratings:9080", &jason).await,
        (200, "ratings/v1".to_string())
    );
    let delayed = start.elapsed();
    assert!(
        delayed >= Duration::from_secs(7) && undelayed < Duration::from_secs(7),
        "jason {delayed:?}, others {undelayed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_virtual_service_reaches_proxies_within_a_second_without_failed_requests() {
    let mesh = Mesh::bookinfo().await;
    mesh.use_sample("virtual-service-all-v1.yaml");
    mesh.wait_synced().await;
    let caller = Arc::new(Caller::new(mesh.outbound()));

    // Requests flow continuously while the route changes.
    let stop = CancellationToken::new();
    let traffic = {
        let caller = caller.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.is_cancelled() {
                let (status, who) = caller.reviews(&[]).await;
                seen.push((Instant::now(), status, who));
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let changed = Instant::now();
    mesh.use_sample("virtual-service-reviews-v3.yaml");
    let mut switched = None;
    while changed.elapsed() < Duration::from_secs(3) {
        if caller.reviews(&[]).await.1 == "reviews/v3" {
            switched = Some(changed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let seen = traffic.await.unwrap();
    let switched = switched.expect("v3 never answered");
    assert!(switched < Duration::from_secs(1), "took {switched:?}");
    let failed: Vec<_> = seen.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "failed requests during the change: {failed:?}"
    );
    assert!(seen.len() > 20, "traffic kept flowing: {}", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_serving_without_pilot_and_resume_without_a_resend() {
    let mut mesh = Mesh::bookinfo().await;
    mesh.use_sample("virtual-service-reviews-v3.yaml");
    mesh.wait_synced().await;
    let caller = Caller::new(mesh.outbound());
    mesh.pilot.take().unwrap().shutdown().await;

    // Pilot is gone: the last config keeps serving.
    for _ in 0..10 {
        assert_eq!(caller.reviews(&[]).await, (200, "reviews/v3".to_string()));
    }

    // Pilot comes back with the same config: proxies reconnect holding the same versions,
    // so nothing is sent again.
    mesh.start_pilot().await;
    let start = Instant::now();
    while mesh.pilot().discovery.connections().len() < mesh.workloads.len() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "proxies did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mesh.wait_synced().await;
    let pushes: u64 = mesh
        .pilot()
        .discovery
        .metrics
        .pushes
        .get_or_create(&mesh_pilot::metrics::TypeLabels {
            r#type: "CONFIG".into(),
        })
        .get();
    assert_eq!(pushes, 0, "a resumed stream got its config again");
    assert_eq!(caller.reviews(&[]).await, (200, "reviews/v3".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_endpoint_is_pushed_as_an_endpoint_update() {
    let mut mesh = Mesh::bookinfo().await;
    mesh.use_sample("virtual-service-all-v1.yaml");
    mesh.wait_synced().await;
    let config_pushes = || mesh_pilot::metrics::TypeLabels {
        r#type: "CONFIG".into(),
    };
    let endpoint_pushes = || mesh_pilot::metrics::TypeLabels {
        r#type: "ENDPOINTS".into(),
    };
    let metrics = mesh.pilot().discovery.metrics.clone();
    let configs_before = metrics.pushes.get_or_create(&config_pushes()).get();
    let endpoints_before = metrics.pushes.get_or_create(&endpoint_pushes()).get();

    // A second reviews v1 replica joins.
    let port = free_addr().port();
    let text = std::fs::read_to_string(mesh.dir.path().join("services.yaml")).unwrap()
        + "---\n"
        + &services_yaml(&[("reviews", "v1b", port)])
            .split("---\n")
            .last()
            .unwrap()
            .replace("version: v1b", "version: v1");
    mesh.write("services.yaml", &text);
    mesh.add_workload("reviews", "v1b", port, false).await;
    mesh.wait_synced().await;

    let endpoint_updates =
        metrics.pushes.get_or_create(&endpoint_pushes()).get() - endpoints_before;
    let config_updates = metrics.pushes.get_or_create(&config_pushes()).get() - configs_before;
    // Only productpage has an outbound listener, so only its config holds reviews' endpoints:
    // it alone gets the update, and as endpoints, not as a whole config.
    assert_eq!(
        endpoint_updates, 1,
        "endpoint updates (configs: {config_updates})"
    );
    // Only the new proxy (its first config) got a whole config.
    assert_eq!(
        config_updates, 1,
        "endpoint changes went out as whole configs"
    );
    let caller = Caller::new(mesh.outbound());
    // The subset v1 now has both replicas (the new app answers as "v1b").
    let counts = caller.sample(40, &[]).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(
        counts.get("reviews/v1").unwrap() + counts.get("reviews/v1b").unwrap(),
        40
    );
}

/// A TCP server in the manner of Istio's tcp-echo sample: every line it reads comes back
/// prefixed with its name.
async fn tcp_echo(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{name} {line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A line-oriented TCP client connection.
struct LineClient {
    reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl LineClient {
    async fn connect(addr: SocketAddr) -> Self {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        Self {
            reader: tokio::io::BufReader::new(r),
            writer: w,
        }
    }

    /// Sends `line`; the answer without its newline (empty when the connection closed).
    async fn ask(&mut self, line: &str) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut answer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        answer.trim_end().to_string()
    }
}

/// tcp-echo as a mesh service without sidecars (inline endpoints, one per version), a
/// VirtualService `tcp` route with weights, and a client reaching it through its proxy's
/// Sidecar egress port (captureMode NONE: the proxy listens on 127.0.0.1:PORT).
fn tcp_echo_yaml(v1: SocketAddr, v2: SocketAddr, egress_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: tcp-echo, namespace: default }}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: 9000, name: tcp }}]
  endpoints:
  - {{ address: 127.0.0.1, ports: {{ tcp: {} }}, labels: {{ app: tcp-echo, version: v1 }} }}
  - {{ address: 127.0.0.1, ports: {{ tcp: {} }}, labels: {{ app: tcp-echo, version: v2 }} }}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: tcp-echo, namespace: default }}
spec:
  host: tcp-echo
  subsets:
  - {{ name: v1, labels: {{ version: v1 }} }}
  - {{ name: v2, labels: {{ version: v2 }} }}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{ name: client, namespace: default }}
spec:
  workloadSelector: {{ labels: {{ app: client }} }}
  egress:
  - port: {{ number: {egress_port}, name: tcp-echo, protocol: TCP }}
    captureMode: NONE
    hosts: [./tcp-echo.default.svc.cluster.local]
  - hosts: ['./*']
",
        v1.port(),
        v2.port()
    )
}

fn tcp_echo_weights(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: tcp-echo, namespace: default }}
spec:
  hosts: [tcp-echo]
  tcp:
  - route:
    - {{ destination: {{ host: tcp-echo, port: {{ number: 9000 }}, subset: v1 }}, weight: {v1} }}
    - {{ destination: {{ host: tcp-echo, port: {{ number: 9000 }}, subset: v2 }}, weight: {v2} }}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_weighted_route_through_a_sidecar_egress_port_changes_live() {
    let (v1, _v1_task) = tcp_echo("one").await;
    let (v2, _v2_task) = tcp_echo("two").await;
    let egress = free_addr();
    let client_port = free_addr().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("services.yaml"),
        services_yaml(&[("client", "v1", client_port)]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tcp-echo.yaml"),
        tcp_echo_yaml(v1, v2, egress.port()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tcp-echo-vs.yaml"),
        tcp_echo_weights(100, 0),
    )
    .unwrap();
    let mut mesh = Mesh {
        dir,
        pilot: None,
        grpc: free_addr(),
        workloads: Vec::new(),
        expected_generation: std::sync::atomic::AtomicU64::new(0),
    };
    mesh.start_pilot().await;
    mesh.add_workload("client", "v1", client_port, false).await;
    mesh.wait_synced().await;

    // 100/0: every connection reaches v1.
    for i in 0..10 {
        let mut c = LineClient::connect(egress).await;
        assert_eq!(c.ask(&format!("hello {i}")).await, format!("one hello {i}"));
    }
    let mut open = LineClient::connect(egress).await;
    assert_eq!(open.ask("before").await, "one before");

    // 0/100, changed live: new connections reach v2 on the same listener.
    mesh.write("tcp-echo-vs.yaml", &tcp_echo_weights(0, 100));
    mesh.wait_synced().await;
    for i in 0..10 {
        let mut c = LineClient::connect(egress).await;
        assert_eq!(c.ask(&format!("hello {i}")).await, format!("two hello {i}"));
    }
    // A connection opened before the change keeps its upstream.
    assert_eq!(open.ask("after").await, "one after");

    // 50/50 across many connections: both answer, within statistical bounds.
    mesh.write("tcp-echo-vs.yaml", &tcp_echo_weights(50, 50));
    mesh.wait_synced().await;
    let mut ones = 0;
    for _ in 0..200 {
        let mut c = LineClient::connect(egress).await;
        match c.ask("x").await.as_str() {
            "one x" => ones += 1,
            "two x" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // Binomial(200, 0.5): standard deviation about 7; bounds at about 5.
    assert!((65..=135).contains(&ones), "{ones} of 200 to v1");
}

/// Waits until `proxies` are all the proxies pilot knows and each has ACKed its config.
async fn wait_all_synced(mesh: &Mesh, proxies: &[&Arc<Server>]) {
    let start = Instant::now();
    loop {
        let syncz = mesh_pilot::debug::syncz(&mesh.pilot().discovery);
        let known = syncz["proxies"].as_array().unwrap();
        if proxies.iter().all(|p| p.is_ready())
            && known.len() == proxies.len()
            && known.iter().all(|p| p["synced"] == true)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mesh did not sync: {syncz:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_service_behind_a_sidecar_is_reached_through_both_proxies() {
    // tcp-echo v1 runs without a proxy; v2 behind its own proxy, whose inbound listener
    // forwards the workload's port of the TCP service port as TCP to the application.
    let (v1, _v1_task) = tcp_echo("one").await;
    let (v2, _v2_task) = tcp_echo("two").await;
    let v2_inbound = free_addr();
    let egress = free_addr();
    let client_port = free_addr().port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: tcp-echo, namespace: default }}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: 9000, name: tcp }}]
  workloadSelector: {{ labels: {{ app: tcp-echo }} }}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: tcp-echo-v1, namespace: default }}
spec:
  address: 127.0.0.1
  ports: {{ tcp: {} }}
  labels: {{ app: tcp-echo, version: v1, security.istio.io/tlsMode: disabled }}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{ name: tcp-echo-v2, namespace: default }}
spec:
  address: 127.0.0.1
  ports: {{ tcp: {} }}
  labels: {{ app: tcp-echo, version: v2 }}
  serviceAccount: tcp-echo
",
        v1.port(),
        v2_inbound.port()
    );
    let sidecar = tcp_echo_yaml(v1, v2, egress.port());
    // The DestinationRule and Sidecar of the shared YAML; its inline-endpoint ServiceEntry is
    // replaced by the one above.
    let rest = sidecar.split_once("---\n").unwrap().1;
    std::fs::write(
        dir.path().join("tcp-echo.yaml"),
        format!("{yaml}---\n{rest}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("services.yaml"),
        services_yaml(&[("client", "v1", client_port)]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tcp-echo-vs.yaml"),
        tcp_echo_weights(0, 100),
    )
    .unwrap();
    let mut mesh = Mesh {
        dir,
        pilot: None,
        grpc: free_addr(),
        workloads: Vec::new(),
        expected_generation: std::sync::atomic::AtomicU64::new(0),
    };
    mesh.start_pilot().await;
    mesh.add_workload("client", "v1", client_port, false).await;
    let v2_proxy = Server::new();
    let stop = CancellationToken::new();
    let node = Node {
        id: "tcp-echo-v2.default".into(),
        workload: "tcp-echo-v2".into(),
        namespace: "default".into(),
        addresses: Some(ProxyAddresses {
            inbound: v2_inbound.to_string(),
            application: v2.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let client = DiscoveryClient::new(v2_proxy.clone(), format!("http://{}", mesh.grpc), node);
    tokio::spawn(client.run(stop.clone()));
    let _stop = stop.drop_guard();
    wait_all_synced(&mesh, &[&mesh.workloads[0].proxy, &v2_proxy]).await;

    // Through the client's egress listener and v2's inbound listener to v2's application.
    for i in 0..5 {
        let mut c = LineClient::connect(egress).await;
        assert_eq!(c.ask(&format!("hello {i}")).await, format!("two hello {i}"));
    }
    // v1, without a proxy, is reached directly.
    mesh.write("tcp-echo-vs.yaml", &tcp_echo_weights(100, 0));
    let generation = mesh
        .expected_generation
        .load(std::sync::atomic::Ordering::SeqCst);
    let start = Instant::now();
    while mesh.pilot().discovery.mesh().generation < generation {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pilot did not see the change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_all_synced(&mesh, &[&mesh.workloads[0].proxy, &v2_proxy]).await;
    let mut c = LineClient::connect(egress).await;
    assert_eq!(c.ask("again").await, "one again");
}

const INGRESS_GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: istio-ingressgateway, namespace: istio-system }
spec:
  address: 127.0.0.1
  labels: { istio: ingressgateway }
  serviceAccount: istio-ingressgateway
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_gateway_sample_routes_into_the_mesh_and_follows_edits() {
    let mut mesh = Mesh::bookinfo().await;
    mesh.write("ingress-gateway.yaml", INGRESS_GATEWAY);
    mesh.wait_synced().await;
    let text = std::fs::read_to_string(Path::new(SAMPLES).join("bookinfo-gateway.yaml")).unwrap();
    mesh.write("bookinfo-gateway.yaml", &text);
    let gateway = mesh
        .add_gateway("istio-ingressgateway", "istio-system")
        .await;
    mesh.wait_synced().await;

    // Istio's sample as it is: /productpage (and the other listed paths) go to productpage,
    // any host; anything else has no route.
    let client = Caller::new(gateway);
    let productpage = |path: &'static str| {
        let client = &client;
        async move {
            let req = http::Request::builder()
                .uri(format!("http://{gateway}{path}"))
                .header("host", "bookinfo.example.com")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = client.client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = productpage("/productpage").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"name\":\"productpage\""), "{body}");
    assert_eq!(productpage("/api/v1/products/1").await.0, 200);
    assert_eq!(productpage("/reviews").await.0, 404);

    // A VirtualService bound to the gateway later, for one host: it takes that host, the
    // sample keeps the others. A mesh-only one changes nothing at the gateway.
    mesh.write(
        "reviews-edge.yaml",
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews-edge, namespace: default }
spec:
  hosts: [reviews.example.com]
  gateways: [default/bookinfo-gateway]
  http:
  - route: [{ destination: { host: reviews, subset: v2, port: { number: 9080 } } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: mesh-only, namespace: default }
spec:
  hosts: [bookinfo.example.com]
  http:
  - route: [{ destination: { host: ratings, port: { number: 9080 } } }]
",
    );
    mesh.wait_synced().await;
    for _ in 0..5 {
        assert_eq!(
            client.call("reviews.example.com", &[]).await,
            (200, "reviews/v2".to_string())
        );
    }
    assert_eq!(client.call("bookinfo.example.com", &[]).await.0, 404);
    assert_eq!(productpage("/productpage").await.0, 200);
}

/// An in-memory access-log output, shared with the test.
#[derive(Clone, Default)]
struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }

    /// Waits (bounded) for a line with `needle`: lines are written off the request path.
    async fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.text().lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no line with {needle:?} in:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_resources_turn_access_logs_on_live_mesh_wide_then_per_workload() {
    let mesh = Mesh::bookinfo().await;
    let (productpage, reviews_v1) = (Lines::default(), Lines::default());
    for (i, lines) in [(0, &productpage), (1, &reviews_v1)] {
        let output = mesh_proxy::access_log::Output::Writer(Box::new(lines.clone()));
        assert!(mesh.workloads[i].proxy.set_access_log_output(output));
    }
    mesh.use_sample("virtual-service-all-v1.yaml");
    mesh.wait_synced().await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let outbound = mesh.outbound();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let req = http::Request::builder()
                .uri(format!("http://{outbound}{path}"))
                .header("host", "reviews:9080")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            resp.into_body().collect().await.unwrap();
            status
        }
    };

    // No Telemetry: no access log.
    assert_eq!(get("/a").await, 200);
    // Mesh-wide, from the root namespace: both sides of the call log it.
    mesh.write(
        "telemetry-mesh.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
         metadata: {name: mesh-default, namespace: istio-system}\n\
         spec:\n  accessLogging: [{providers: [{name: envoy}]}]\n",
    );
    mesh.wait_synced().await;
    assert_eq!(get("/b").await, 200);
    let client_line = productpage.wait_for("GET /b ").await;
    assert!(
        client_line.contains(" outbound|9080|v1|reviews.default.svc.cluster.local "),
        "{client_line}"
    );
    let server_line = reviews_v1.wait_for("GET /b ").await;
    assert!(server_line.contains("\"reviews:9080\""), "{server_line}");

    // A workload's own Telemetry overrides the mesh's for reviews v1 only: errors only.
    mesh.write(
        "telemetry-reviews.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
         metadata: {name: reviews-v1-errors, namespace: default}\n\
         spec:\n  selector: {matchLabels: {app: reviews, version: v1}}\n\
         \x20 accessLogging:\n  - filter: {expression: 'response.code >= 400'}\n",
    );
    mesh.wait_synced().await;
    assert_eq!(get("/c").await, 200);
    assert_eq!(get("/status/404").await, 404);
    productpage.wait_for("GET /c ").await;
    productpage.wait_for("GET /status/404 ").await;
    // The 404's line comes after where /c's would have been: /c was filtered out.
    reviews_v1.wait_for("GET /status/404 ").await;
    let reviews_text = reviews_v1.text();
    assert!(!reviews_text.contains("GET /c "), "{reviews_text}");
    for lines in [&productpage, &reviews_v1] {
        assert!(!lines.text().contains("GET /a "), "{}", lines.text());
    }
}

/// `GET /stats/prometheus` of `proxy`'s metrics port, scraped until `done` holds (a request
/// is recorded when its response body ends, a moment after the client has it); bounded.
async fn scrape_until(proxy: &Arc<Server>, done: impl Fn(&str) -> bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(mesh_proxy::admin::serve_metrics(listener, proxy.clone()));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut text = String::new();
    for _ in 0..100 {
        let req = http::Request::builder()
            .uri(format!("http://{addr}/stats/prometheus"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let body = client.request(req).await.unwrap().into_body();
        text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        if done(&text) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_metrics_overrides_reach_the_proxies_live() {
    let mesh = Mesh::bookinfo().await;
    mesh.use_sample("virtual-service-all-v1.yaml");
    // The mesh's overrides: the caller's request count without response_code and with a
    // team; a namespace's: the callee's duration off.
    mesh.write(
        "telemetry-metrics.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
         metadata: {name: mesh-default, namespace: istio-system}\n\
         spec:\n  metrics:\n  - overrides:\n\
         \x20   - match: {metric: REQUEST_COUNT, mode: CLIENT}\n\
         \x20     tagOverrides:\n\
         \x20       response_code: {operation: REMOVE}\n\
         \x20       team: {value: \"'books'\"}\n\
         ---\n\
         apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
         metadata: {name: no-server-duration, namespace: default}\n\
         spec:\n  metrics:\n  - overrides:\n\
         \x20   - match: {metric: REQUEST_DURATION, mode: SERVER}\n\
         \x20     disabled: true\n",
    );
    mesh.wait_synced().await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    for (path, code) in [("/a", 200), ("/status/404", 404)] {
        let req = http::Request::builder()
            .uri(format!("http://{}{path}", mesh.outbound()))
            .header("host", "reviews:9080")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), code);
        resp.into_body().collect().await.unwrap();
    }
    let requests = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .map(str::to_owned)
            .collect()
    };

    // productpage's proxy: the 200 and the 404 are one series with the team, no code.
    let text = scrape_until(&mesh.workloads[0].proxy, |t| {
        requests(t).iter().any(|l| l.ends_with(" 2"))
    })
    .await;
    let lines = requests(&text);
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("team=\"books\"") && lines[0].ends_with(" 2"),
        "{text}"
    );
    assert!(!lines[0].contains("response_code"), "{text}");
    assert!(
        text.contains("istio_request_duration_milliseconds_count{"),
        "{text}"
    );

    // reviews v1's proxy: Istio's labels on the request count, no duration histogram.
    let text = scrape_until(&mesh.workloads[1].proxy, |t| requests(t).len() == 2).await;
    let lines = requests(&text);
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines.iter().all(|l| l.contains("reporter=\"destination\"")
            && l.contains("response_code=")
            && !l.contains("team=")),
        "{text}"
    );
    assert!(
        !text.contains("istio_request_duration_milliseconds_count{"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_rate_limit_file_limits_the_selected_workload_live() {
    let mesh = Mesh::bookinfo().await;
    mesh.use_sample("virtual-service-all-v1.yaml");
    mesh.wait_synced().await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let outbound = mesh.outbound();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let req = http::Request::builder()
                .uri(format!("http://{outbound}{path}"))
                .header("host", "reviews:9080")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let limit = resp
                .headers()
                .get("x-ratelimit-limit")
                .map(|v| v.to_str().unwrap().to_string());
            resp.into_body().collect().await.unwrap();
            (status, limit)
        }
    };
    // No LocalRateLimit: nothing is refused.
    for _ in 0..5 {
        assert_eq!(get("/a").await.0, 200);
    }

    let limit = |burst: u32| {
        format!(
            "apiVersion: networking.mesh.dev/v1alpha1\nkind: LocalRateLimit\n\
             metadata: {{name: reviews, namespace: default}}\n\
             spec:\n  workloadSelector: {{matchLabels: {{app: reviews, version: v1}}}}\n\
             \x20 requestsPerUnit: 1\n  unit: HOUR\n  burst: {burst}\n"
        )
    };
    mesh.write("ratelimit.yaml", &limit(2));
    mesh.wait_synced().await;
    assert_eq!(get("/b").await.0, 200);
    assert_eq!(get("/b").await.0, 200);
    // Refused at reviews v1's inbound side, and the caller's proxy passes the 429 on.
    assert_eq!(get("/b").await, (429, Some("2".to_string())));
    let reviews_v1 = &mesh.workloads[1].proxy;
    let text = scrape_until(reviews_v1, |t| t.contains("mesh_proxy_rate_limited_total")).await;
    assert!(
        text.contains(
            "mesh_proxy_rate_limited_total{direction=\"Inbound\",listener=\"inbound\"} 1"
        ),
        "{text}"
    );
    // Another workload is not limited.
    let productpage = &mesh.workloads[0].proxy;
    let text = scrape_until(productpage, |_| true).await;
    assert!(!text.contains("mesh_proxy_rate_limited_total{"), "{text}");

    // An edit replaces the bucket: a larger one, full.
    mesh.write("ratelimit.yaml", &limit(3));
    mesh.wait_synced().await;
    for _ in 0..3 {
        assert_eq!(get("/c").await.0, 200);
    }
    assert_eq!(get("/c").await, (429, Some("3".to_string())));
}

/// A CA and a certificate for `site` it signed, as PEM: (CA, chain, key).
fn site_certificate(
    ca_name: &str,
    site: &str,
) -> (rustls_pki_types::CertificateDer<'static>, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, ca_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![site.to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.der().clone(), cert.pem(), key.serialize_pem())
}

/// An HTTPS GET of `https://{sni}/` at `addr` by a client trusting only `root`.
async fn https_status(
    addr: SocketAddr,
    root: &rustls_pki_types::CertificateDer<'static>,
    sni: &str,
) -> Result<u16, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/productpage")
        .header("host", sni)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_serves_the_certificate_its_credential_name_names_from_its_own_directory() {
    let credentials = tempfile::tempdir().unwrap();
    let write_credential = |ca: &str| {
        let (root, chain, key) = site_certificate(ca, "shop.example.com");
        let dir = credentials.path().join("shop-credential");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), chain).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
        root
    };
    let first_root = write_credential("first");

    let mut mesh = Mesh::bookinfo().await;
    mesh.write("ingress-gateway.yaml", INGRESS_GATEWAY);
    mesh.wait_synced().await;
    mesh.write(
        "shop-gateway.yaml",
        "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: shop, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 443, name: https, protocol: HTTPS }
    hosts: [shop.example.com]
    tls: { mode: SIMPLE, credentialName: shop-credential }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: shop, namespace: default }
spec:
  hosts: [shop.example.com]
  gateways: [shop]
  http:
  - route: [{ destination: { host: productpage, port: { number: 9080 } } }]
",
    );
    let proxy = Server::with_options(mesh_proxy::server::Options {
        credential_dir: Some(credentials.path().to_path_buf()),
        ..Default::default()
    });
    let gateway = mesh
        .add_gateway_with("istio-ingressgateway", "istio-system", 443, proxy.clone())
        .await;
    mesh.wait_synced().await;

    // Pilot sent the credential's name, no file and no key.
    let snapshot = proxy.snapshot();
    let tls = snapshot
        .source
        .listeners
        .iter()
        .find_map(|l| l.downstream_tls.as_ref())
        .expect("a TLS listener");
    assert_eq!(tls.certificates[0].credential_name, "shop-credential");
    assert!(tls.certificates[0].certificate_chain.is_empty());
    assert!(tls.certificates[0].private_key.is_empty());

    assert_eq!(
        https_status(gateway, &first_root, "shop.example.com").await,
        Ok(200)
    );
    // The Secret is replaced: the next connection after the check gets the new certificate.
    let second_root = write_credential("second");
    tokio::time::sleep(mesh_proxy::tls::RELOAD_CHECK + Duration::from_millis(100)).await;
    assert_eq!(
        https_status(gateway, &second_root, "shop.example.com").await,
        Ok(200)
    );
    assert!(
        https_status(gateway, &first_root, "shop.example.com")
            .await
            .is_err()
    );
}
