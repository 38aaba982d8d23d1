//! Layer 4 routes over real sockets on loopback: by destination port, by destination
//! address, by the server name of a real TLS client's ClientHello (passed through
//! unterminated), weighted splits, the fallback, and an invalid route refused while the last
//! good config keeps serving.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::config;
use common::mesh::{TestCa, free_port};
use mesh_proto::config::v1::ProxyConfig;
use mesh_proxy::Server;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A TCP server that greets every connection with its name and a newline, then echoes.
async fn named(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if s.write_all(format!("{name}\n").as_bytes()).await.is_ok() {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    addr
}

/// The name a server greets a new connection to `addr` with; `None` when the connection is
/// closed without one. Sends `first` before reading, if given.
async fn greeting(addr: SocketAddr, first: Option<&[u8]>) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    if let Some(bytes) = first {
        s.write_all(bytes).await.ok()?;
    }
    let mut line = String::new();
    let mut reader = BufReader::new(&mut s);
    let read = reader.read_line(&mut line);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no greeting and no close within 10 s")
        .ok()?;
    line.strip_suffix('\n').map(str::to_string)
}

/// A TLS server for `dns_name` (certificate of `ca`) that writes its name over TLS.
async fn tls_named(ca: &TestCa, dns_name: &str, name: &'static str) -> SocketAddr {
    let (cert, key) = ca.dns_leaf_pem(dns_name);
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tls.write_all(format!("{name}\n").as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Connects with TLS to `addr` for server name `sni`, trusting only `ca`; the greeting read
/// over the session, or the handshake error.
async fn tls_greeting(ca: &TestCa, addr: SocketAddr, sni: &str) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.root()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let connect = TlsConnector::from(Arc::new(config)).connect(name, tcp);
    let tls = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(tls)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    Ok(line.trim_end().to_string())
}

fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({ "name": name, "endpoints": [{ "address": addr.to_string() }] })
}

fn to(cluster: &str, weight: u32) -> Value {
    json!({ "cluster": cluster, "weight": weight })
}

/// A TCP listener `name` on `address` with `routes` and optional fallback cluster.
fn listener(name: &str, address: &str, routes: Value, fallback: &str) -> Value {
    json!({
        "name": name, "address": address, "direction": "OUTBOUND", "protocol": "TCP",
        "tcpCluster": fallback, "tcpRoutes": routes
    })
}

fn proxy_config(version: &str, listeners: Vec<Value>, clusters: Vec<Value>) -> ProxyConfig {
    config(json!({ "version": version, "listeners": listeners, "clusters": clusters }))
}

async fn serving(cfg: ProxyConfig) -> Arc<Server> {
    let server = Server::new();
    server.apply(cfg).await.expect("test config is valid");
    server
}

fn addr_of(server: &Server, listener: &str) -> SocketAddr {
    server.listener_addr(listener).expect("listener is bound")
}

#[tokio::test]
async fn routes_by_destination_port_first_match_wins() {
    let (a, b, c) = (named("a").await, named("b").await, named("c").await);
    let port = free_port().await;
    let other = if port == 65535 { port - 1 } else { port + 1 };
    let routes = json!([
        { "name": "other-port", "matches": [{ "destinationPort": other }], "clusters": [to("b", 1)] },
        { "name": "this-port", "matches": [{ "destinationPort": other }, { "destinationPort": port }],
          "clusters": [to("a", 1)] },
        { "name": "later", "matches": [{ "destinationPort": port }], "clusters": [to("c", 1)] },
    ]);
    let server = serving(proxy_config(
        "1",
        vec![listener("db", &format!("127.0.0.1:{port}"), routes, "")],
        vec![cluster("a", a), cluster("b", b), cluster("c", c)],
    ))
    .await;
    let addr = addr_of(&server, "db");
    for _ in 0..5 {
        assert_eq!(greeting(addr, None).await.as_deref(), Some("a"));
    }
}

#[tokio::test]
async fn routes_by_destination_subnet() {
    let (a, b) = (named("a").await, named("b").await);
    let port = free_port().await;
    // The same routes on listeners at two loopback addresses: the address the client
    // connected to picks the route.
    let routes = json!([
        { "name": "two", "matches": [{ "destinationSubnets": ["127.0.0.2/32"] }], "clusters": [to("a", 1)] },
        { "name": "three", "matches": [{ "destinationSubnets": ["10.0.0.0/8", "127.0.0.3"] }],
          "clusters": [to("b", 1)] },
    ]);
    let server = serving(proxy_config(
        "1",
        vec![
            listener("two", &format!("127.0.0.2:{port}"), routes.clone(), ""),
            listener("three", &format!("127.0.0.3:{port}"), routes.clone(), ""),
            listener("four", &format!("127.0.0.4:{port}"), routes, ""),
        ],
        vec![cluster("a", a), cluster("b", b)],
    ))
    .await;
    assert_eq!(
        greeting(addr_of(&server, "two"), None).await.as_deref(),
        Some("a")
    );
    assert_eq!(
        greeting(addr_of(&server, "three"), None).await.as_deref(),
        Some("b")
    );
    // No route and no fallback: closed.
    assert_eq!(greeting(addr_of(&server, "four"), None).await, None);
}

#[tokio::test]
async fn routes_tls_by_server_name_without_terminating_it() {
    let ca = TestCa::new("sni test root");
    let db = tls_named(&ca, "primary.db.test", "db").await;
    let cache = tls_named(&ca, "cache.test", "cache").await;
    let plain = named("plain").await;
    let routes = json!([
        { "name": "db", "matches": [{ "sniHosts": ["*.db.test"] }], "clusters": [to("db", 1)] },
        { "name": "cache", "matches": [{ "sniHosts": ["cache.test", "cache2.test"] }],
          "clusters": [to("cache", 1)] },
    ]);
    let server = serving(proxy_config(
        "1",
        vec![listener("tls", "127.0.0.1:0", routes, "plain")],
        vec![
            cluster("db", db),
            cluster("cache", cache),
            cluster("plain", plain),
        ],
    ))
    .await;
    let addr = addr_of(&server, "tls");
    // The client verifies the backend's own certificate: the proxy passes TLS through.
    assert_eq!(
        tls_greeting(&ca, addr, "primary.db.test").await.as_deref(),
        Ok("db")
    );
    assert_eq!(
        tls_greeting(&ca, addr, "cache.test").await.as_deref(),
        Ok("cache")
    );
    // A name no route takes goes to the fallback, which does not speak TLS.
    assert!(tls_greeting(&ca, addr, "unknown.test").await.is_err());
    // Plaintext has no server name: the fallback, at once.
    assert_eq!(
        greeting(addr, Some(b"hello\n")).await.as_deref(),
        Some("plain")
    );
    // A client that sends nothing (a server-first protocol) is not held forever: after the
    // peek timeout it goes to the fallback too, which greets it.
    let started = Instant::now();
    assert_eq!(greeting(addr, None).await.as_deref(), Some("plain"));
    assert!(
        started.elapsed() >= mesh_proxy::listener::SNI_PEEK_TIMEOUT - Duration::from_millis(100)
    );
}

#[tokio::test]
async fn weighted_split_within_statistical_bounds() {
    let (a, b) = (named("a").await, named("b").await);
    let routes = json!([{ "name": "split", "clusters": [to("a", 20), to("b", 80)] }]);
    let server = serving(proxy_config(
        "1",
        vec![listener("split", "127.0.0.1:0", routes, "")],
        vec![cluster("a", a), cluster("b", b)],
    ))
    .await;
    let addr = addr_of(&server, "split");
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..400 {
        let name = greeting(addr, None)
            .await
            .expect("every connection is routed");
        *counts.entry(name).or_default() += 1;
    }
    // Binomial(400, 0.2): mean 80, standard deviation 8; bounds at about 5 sigma.
    let a = counts.get("a").copied().unwrap_or(0);
    assert!((40..=120).contains(&a), "{counts:?}");
    assert_eq!(a + counts.get("b").copied().unwrap_or(0), 400, "{counts:?}");
}

#[tokio::test]
async fn unmatched_connections_use_the_fallback_cluster() {
    let (a, fallback) = (named("a").await, named("fallback").await);
    let routes = json!([
        { "name": "elsewhere", "matches": [{ "destinationSubnets": ["198.18.0.0/15"] }],
          "clusters": [to("a", 1)] },
    ]);
    let server = serving(proxy_config(
        "1",
        vec![listener("l", "127.0.0.1:0", routes, "fallback")],
        vec![cluster("a", a), cluster("fallback", fallback)],
    ))
    .await;
    assert_eq!(
        greeting(addr_of(&server, "l"), None).await.as_deref(),
        Some("fallback")
    );
}

#[tokio::test]
async fn invalid_routes_are_refused_and_the_last_config_keeps_serving() {
    let (a, b) = (named("a").await, named("b").await);
    let clusters = || vec![cluster("a", a), cluster("b", b)];
    let routes = |to_cluster: &str| json!([{ "name": "r", "clusters": [to(to_cluster, 100)] }]);
    let server = serving(proxy_config(
        "1",
        vec![listener("l", "127.0.0.1:0", routes("a"), "")],
        clusters(),
    ))
    .await;
    let addr = addr_of(&server, "l");
    assert_eq!(greeting(addr, None).await.as_deref(), Some("a"));

    let bad = [
        (
            json!([{ "name": "r", "matches": [{ "destinationSubnets": ["10.0.0.0/33"] }],
                     "clusters": [to("b", 1)] }]),
            "listeners[0].tcpRoutes[0].matches[0].destinationSubnets[0]",
        ),
        (
            json!([{ "name": "r", "clusters": [to("a", 0), to("b", 0)] }]),
            "listeners[0].tcpRoutes[0].clusters",
        ),
        (
            json!([{ "name": "r", "clusters": [to("nowhere", 1)] }]),
            "listeners[0].tcpRoutes[0].clusters[0].cluster",
        ),
        (
            json!([{ "name": "r", "clusters": [{ "cluster": "a", "subset": "v9", "weight": 1 }] }]),
            "listeners[0].tcpRoutes[0].clusters[0].cluster",
        ),
    ];
    for (routes, field) in bad {
        let cfg = proxy_config(
            "2",
            vec![listener("l", "127.0.0.1:0", routes, "")],
            clusters(),
        );
        let err = server
            .apply(cfg)
            .await
            .expect_err("invalid routes are refused");
        assert_eq!(err.field(), field, "{err}");
        assert_eq!(
            greeting(addr, None).await.as_deref(),
            Some("a"),
            "after {err}"
        );
    }

    // A valid change applies to new connections on the same socket.
    let cfg = proxy_config(
        "3",
        vec![listener("l", "127.0.0.1:0", routes("b"), "")],
        clusters(),
    );
    server.apply(cfg).await.unwrap();
    assert_eq!(addr_of(&server, "l"), addr);
    assert_eq!(greeting(addr, None).await.as_deref(), Some("b"));
}

#[tokio::test]
async fn tcp_route_over_mtls_through_the_inbound_listener_to_a_server_first_app() {
    use common::mesh::{endpoint, inbound_json, sidecar, spiffe};
    let ca = TestCa::new("mesh root");
    // The workload serves TCP (a server that greets first, then echoes) on a port its proxy's
    // inbound listener routes as TCP; the listener is HTTP otherwise.
    let app = named("db-app").await;
    let port = free_port().await;
    let server_cfg = inbound_json(
        &format!("127.0.0.1:{port}"),
        app,
        json!({
            "mtlsMode": "MTLS_MODE_STRICT",
            "tcpRoutes": [{ "name": "inbound|tcp", "matches": [{ "destinationPort": port }],
                            "clusters": [to("app", 100)] }]
        }),
    );
    let server = sidecar(Some(ca.identity(&spiffe("db"), &[&ca])), config(server_cfg)).await;
    let inbound = server.listener_addr("in").unwrap();
    let routes = json!([{ "name": "shop/db", "clusters": [to("db", 100)] }]);
    let cfg = proxy_config(
        "1",
        vec![listener("db", "127.0.0.1:0", routes, "")],
        vec![json!({ "name": "db", "endpoints": [endpoint(inbound, true, &[&spiffe("db")])] })],
    );
    let client = sidecar(Some(ca.identity(&spiffe("cart"), &[&ca])), cfg).await;
    let addr = addr_of(&client, "db");
    // Server-first: the client sends nothing, the greeting comes through both proxies.
    assert_eq!(greeting(addr, None).await.as_deref(), Some("db-app"));
    // Client-first binary bytes, then the echo.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x00\x01ping\n").await.unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, "db-app\n");
    line.clear();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line.as_bytes(), b"\x00\x01ping\n");
    // STRICT: plaintext straight to the inbound listener is refused.
    assert_eq!(greeting(inbound, Some(b"\x00\x01")).await, None);
}

#[tokio::test]
async fn inbound_tcp_route_takes_only_its_port() {
    use common::mesh::{inbound_json, raw_plaintext_get, sidecar};
    let echo = common::echo("web", "v1").await;
    let tcp_app = named("tcp-app").await;
    let (tcp_port, http_port) = (free_port().await, free_port().await);
    let inbound = |port: u16| {
        let mut cfg = inbound_json(
            &format!("127.0.0.1:{port}"),
            echo.addr(),
            json!({ "tcpRoutes": [{ "name": "inbound|tcp",
                "matches": [{ "destinationPort": tcp_port }], "clusters": [to("tcp", 100)] }] }),
        );
        cfg["clusters"]
            .as_array_mut()
            .unwrap()
            .push(cluster("tcp", tcp_app));
        config(cfg)
    };
    let tcp = sidecar(None, inbound(tcp_port)).await;
    let http = sidecar(None, inbound(http_port)).await;
    // The declared TCP port: TCP, whatever the client sends first, HTTP included.
    let tcp_addr = tcp.listener_addr("in").unwrap();
    assert_eq!(greeting(tcp_addr, None).await.as_deref(), Some("tcp-app"));
    assert_eq!(
        greeting(tcp_addr, Some(b"GET / HTTP/1.1\r\n\r\n"))
            .await
            .as_deref(),
        Some("tcp-app")
    );
    // Any other port: HTTP, even for bytes that are not.
    let http_addr = http.listener_addr("in").unwrap();
    let reply = raw_plaintext_get(http_addr)
        .await
        .expect("an HTTP response");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let reply = greeting(http_addr, Some(b"\x00\x01\r\n\r\n"))
        .await
        .unwrap_or_default();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
}

/// Set in the child process that runs a test's body inside its network namespace.
const INSIDE_NETNS: &str = "MESH_PROXY_TEST_INSIDE_NETNS";

/// A network namespace with iptables of its own, deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("mesh-proxy-{tag}-{}", std::process::id());
        // A namespace left by an earlier run that was killed.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ns = Self { name };
        ns.run("ip", &["netns", "add", &ns.name.clone()]);
        ns.exec("ip", &["link", "set", "lo", "up"]);
        ns
    }

    fn run(&self, program: &str, args: &[&str]) {
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(status.success(), "{program} {args:?} failed");
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    fn exec(&self, program: &str, args: &[&str]) {
        let status = self.command(program).args(args).status().unwrap();
        assert!(
            status.success(),
            "{program} {args:?} failed in {}",
            self.name
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// As a captured pod: iptables redirects connections to two service addresses (with no
/// server behind them) to the proxy's transparent listener, which routes each by its
/// original destination from SO_ORIGINAL_DST. Needs root for the network namespace (see
/// mesh-test-support for when it skips). The body runs in a child process inside the namespace.
#[test]
fn redirected_connections_are_routed_by_their_original_destination() {
    const TEST: &str = "redirected_connections_are_routed_by_their_original_destination";
    if std::env::var_os(INSIDE_NETNS).is_some() {
        return redirected_inside();
    }
    if !mesh_test_support::require_root("network namespaces and iptables") {
        return;
    }
    let ns = Netns::new("tcpr");
    // A veth pair gives 198.18.0.0/16 a route, so connections to it reach the nat table.
    ns.exec(
        "ip",
        &[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0-peer",
        ],
    );
    ns.exec("ip", &["addr", "add", "198.18.0.1/16", "dev", "eth0"]);
    ns.exec("ip", &["link", "set", "eth0", "up"]);
    ns.exec("ip", &["link", "set", "eth0-peer", "up"]);
    for vip in ["198.18.10.1", "198.18.10.2"] {
        ns.exec(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                vip,
                "--dport",
                "5432",
                "-j",
                "REDIRECT",
                "--to-ports",
                "15001",
            ],
        );
    }
    let exe = std::env::current_exe().unwrap();
    let status = ns
        .command(exe.to_str().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(INSIDE_NETNS, "1")
        .status()
        .unwrap();
    assert!(status.success(), "the test body failed inside {}", ns.name);
}

fn redirected_inside() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (a, b) = (named("a").await, named("b").await);
        let cfg = config(json!({
            "version": "1",
            "listeners": [{
                "name": "outbound", "address": "127.0.0.1:15001", "direction": "OUTBOUND",
                "protocol": "HTTP", "routeTable": "out", "transparent": true,
                "outboundTrafficPolicy": "REGISTRY_ONLY",
                "tcpRoutes": [
                    { "name": "db-a", "clusters": [to("a", 1)],
                      "matches": [{ "destinationPort": 5432, "destinationSubnets": ["198.18.10.1"] }] },
                    { "name": "db-b", "clusters": [to("b", 1)],
                      "matches": [{ "destinationPort": 5432, "destinationSubnets": ["198.18.10.2/32"] }] },
                ]
            }],
            "routeTables": [{ "name": "out" }],
            "clusters": [cluster("a", a), cluster("b", b)],
        }));
        let _server = serving(cfg).await;
        for _ in 0..3 {
            let to_a = greeting("198.18.10.1:5432".parse().unwrap(), None).await;
            assert_eq!(to_a.as_deref(), Some("a"));
            let to_b = greeting("198.18.10.2:5432".parse().unwrap(), None).await;
            assert_eq!(to_b.as_deref(), Some("b"));
        }
    });
}
