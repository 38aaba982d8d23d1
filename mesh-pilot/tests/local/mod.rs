//! A small local mesh for tests of single Istio fields: a real pilot serving a directory of
//! Istio YAML, real proxies connected over the discovery protocol, real echo apps, all on
//! loopback; and a real HTTP client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_citadel::{Ca, SpiffeId};
use mesh_echo::{EchoConfig, EchoHandle};
use mesh_pilot::server::Pilot;
use mesh_pilot::watch::Debounce;
use mesh_proto::discovery::v1::{GatewayAddresses, Node, ProxyAddresses};
use mesh_proxy::Server;
use mesh_proxy::discovery::DiscoveryClient;
use mesh_proxy::identity::{Identity, IdentityHandle};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

pub const SAMPLES: &str = "../tests/conformance/istio/samples/bookinfo/networking";

fn fast() -> Debounce {
    Debounce {
        poll: Duration::from_millis(20),
        quiet: Duration::from_millis(30),
        max: Duration::from_secs(1),
    }
}

pub fn free_addr() -> SocketAddr {
    mesh_echo::ports::free_loopback_addr()
}

struct Workload {
    /// `service-version`, and the inbound (workload) port its WorkloadEntry declares.
    name: String,
    inbound: u16,
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

pub struct Mesh {
    dir: tempfile::TempDir,
    pilot: Pilot,
    grpc: SocketAddr,
    workloads: Vec<Workload>,
    expected_generation: u64,
    /// Signs every workload's certificate when the mesh runs mTLS.
    ca: Option<Ca>,
}

/// ServiceEntry + WorkloadEntry YAML for (service, version, inbound port) triples, every
/// service on port 9080.
pub fn services_yaml(entries: &[(&str, &str, u16)]) -> String {
    let mut docs = Vec::new();
    let mut services: Vec<&str> = entries.iter().map(|e| e.0).collect();
    services.dedup();
    for s in services {
        docs.push(format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: {s}, namespace: default }}\nspec:\n  hosts: [{s}.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{{ number: 9080, name: http, protocol: HTTP }}]\n  workloadSelector: {{ labels: {{ app: {s} }} }}\n"
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
    /// Pilot plus productpage (the caller, with an outbound listener), reviews v1/v2/v3 and
    /// ratings v1, with the bookinfo sample's DestinationRules (subsets v1, v2, v3).
    pub async fn bookinfo() -> Self {
        Self::bookinfo_with(None).await
    }

    /// As [`Mesh::bookinfo`], every proxy with a workload certificate of one CA
    /// (`spiffe://cluster.local/ns/default/sa/bookinfo-<service>`), so auto mTLS is on.
    pub async fn bookinfo_with_mtls() -> Self {
        Self::bookinfo_with(Some(Ca::self_signed(TRUST_DOMAIN).unwrap())).await
    }

    async fn bookinfo_with(ca: Option<Ca>) -> Self {
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
        let listener = tokio::net::TcpListener::bind(grpc).await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pilot = Pilot::start(dir.path(), listener, http, fast())
            .await
            .unwrap();
        let mut mesh = Self {
            dir,
            pilot,
            grpc,
            workloads: Vec::new(),
            expected_generation: 0,
            ca,
        };
        for (service, version, port) in ports {
            mesh.add_workload(service, version, port, service == "productpage")
                .await;
        }
        mesh.wait_synced().await;
        mesh
    }

    async fn add_workload(&mut self, service: &str, version: &str, inbound: u16, outbound: bool) {
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
        let outbound = outbound.then(free_addr);
        let node = Node {
            id: format!("{service}-{version}.default"),
            workload: format!("{service}-{version}"),
            namespace: "default".into(),
            addresses: Some(ProxyAddresses {
                outbound: outbound.map(|a| a.to_string()).unwrap_or_default(),
                inbound: format!("127.0.0.1:{inbound}"),
                application: app.addr().to_string(),
                transparent: false,
                gateway: None,
            }),
            ..Default::default()
        };
        let identity = self
            .ca
            .as_ref()
            .map(|ca| workload_identity(ca, &format!("bookinfo-{service}")));
        self.connect(node, Some(app), outbound, identity);
        let w = self.workloads.last_mut().unwrap();
        w.name = format!("{service}-{version}");
        w.inbound = inbound;
    }

    fn connect(
        &mut self,
        node: Node,
        app: Option<EchoHandle>,
        outbound: Option<SocketAddr>,
        identity: Option<IdentityHandle>,
    ) {
        let proxy = Server::new();
        if let Some(identity) = identity {
            proxy.set_identity(identity);
        }
        let stop = CancellationToken::new();
        let client = DiscoveryClient::new(proxy.clone(), format!("http://{}", self.grpc), node);
        tokio::spawn(client.run(stop.clone()));
        self.workloads.push(Workload {
            name: String::new(),
            inbound: 0,
            _app: app,
            proxy,
            outbound,
            stop,
        });
    }

    /// An ingress gateway proxy for WorkloadEntry `name.namespace`, its server port 80 bound
    /// at a free loopback port (returned).
    pub async fn add_gateway(&mut self, name: &str, namespace: &str) -> SocketAddr {
        let port80 = free_addr();
        let node = Node {
            id: format!("{name}.{namespace}"),
            workload: name.into(),
            namespace: namespace.into(),
            addresses: Some(ProxyAddresses {
                gateway: Some(GatewayAddresses {
                    ports: [(80, port80.to_string())].into(),
                    bind_host: "127.0.0.1".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.connect(node, None, None, None);
        port80
    }

    /// Waits until pilot has taken in the last change and every proxy has ACKed it.
    pub async fn wait_synced(&self) {
        let start = Instant::now();
        loop {
            let syncz = mesh_pilot::debug::syncz(&self.pilot.discovery);
            let generation = syncz["generation"].as_u64().unwrap();
            let proxies = syncz["proxies"].as_array().unwrap();
            let ready = self.workloads.iter().all(|w| w.proxy.is_ready());
            if generation >= self.expected_generation
                && ready
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

    /// The warnings pilot reports for the proxies (`problems` in `/debug/syncz`).
    pub fn problems(&self) -> String {
        let syncz = mesh_pilot::debug::syncz(&self.pilot.discovery);
        syncz["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["problems"].to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes a config file; the next `wait_synced` waits for the generation it causes.
    pub fn write(&mut self, name: &str, text: &str) {
        let (resources, errors) = mesh_api::load_str(name, text);
        assert!(errors.is_empty(), "{name}: {errors:?}\n{text}");
        for r in &resources {
            let errors = mesh_api::validate(r);
            assert!(errors.is_empty(), "{name}: {errors:?}\n{text}");
        }
        self.expected_generation = self.pilot.discovery.mesh().generation + 1;
        // Renamed into the watched directory, so pilot never reads a half-written file.
        let staging = self.dir.path().with_extension(format!("{name}.staging"));
        std::fs::write(&staging, text).unwrap();
        std::fs::rename(&staging, self.dir.path().join(name)).unwrap();
    }

    /// The workload port of `service-version` (its WorkloadEntry's `http` port).
    pub fn inbound_port(&self, service: &str, version: &str) -> u16 {
        let name = format!("{service}-{version}");
        self.workloads
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.inbound)
            .expect("workload")
    }

    /// The caller's (productpage's) outbound listener.
    pub fn outbound(&self) -> SocketAddr {
        self.workloads
            .iter()
            .find_map(|w| w.outbound)
            .expect("productpage outbound")
    }
}

pub const TRUST_DOMAIN: &str = "cluster.local";

/// A certificate of `default/<sa>` signed by `ca`, for a proxy's mTLS.
fn workload_identity(ca: &Ca, sa: &str) -> IdentityHandle {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let id = SpiffeId::new(TRUST_DOMAIN, "default", sa).unwrap();
    let chain = ca
        .sign(&csr.pem().unwrap(), &id, None)
        .unwrap()
        .iter()
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
        .collect();
    let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    IdentityHandle::fixed(Identity::from_parts(chain, key, ca.roots().to_vec()).unwrap())
}

/// An answer: status, headers, and the echo app's JSON (`Null` when the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub json: serde_json::Value,
    pub body: String,
}

impl Answer {
    /// `name/version` of the echo app that answered.
    pub fn served_by(&self) -> String {
        format!(
            "{}/{}",
            self.json["name"].as_str().unwrap_or("?"),
            self.json["version"].as_str().unwrap_or("?")
        )
    }

    /// The path and query the app saw.
    pub fn path(&self) -> &str {
        self.json["path"].as_str().unwrap_or("?")
    }
}

/// A plain HTTP/1.1 client sending to one proxy listener, whatever the `Host`.
pub struct Caller {
    client: Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
}

impl Caller {
    pub fn new(proxy: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            proxy,
        }
    }

    pub async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = http::Request::builder()
            .uri(format!("http://{}{path}", self.proxy))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(15),
            self.client
                .request(req.body(Full::new(Bytes::new())).unwrap()),
        )
        .await
        .expect("answer within 15 s")
        .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            json: serde_json::from_slice(&body).unwrap_or_default(),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}
