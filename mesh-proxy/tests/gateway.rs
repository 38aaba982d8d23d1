//! The proxy as a standalone ingress gateway, on 127.0.0.1: real clients from outside the
//! mesh, the gateway routing by host into a sidecar over mTLS with its own identity, TLS
//! terminated with certificates from files and picked by SNI, client certificates checked
//! (MUTUAL), and nothing a client sends passing for what only the mesh sets.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::mesh::*;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const XFCC: &str = "x-forwarded-client-cert";

/// A gateway config: listener "gw" (with `listener_extra` merged in) on route table "gw"
/// with `vhosts`, and cluster "app" of `endpoints` with no retries unless a route says so.
fn gateway_config(listener_extra: Value, vhosts: Value, endpoints: Vec<Value>) -> Value {
    let mut listener = json!({
        "name": "gw", "address": "127.0.0.1:0", "direction": "GATEWAY",
        "protocol": "HTTP", "routeTable": "gw"
    });
    for (k, v) in listener_extra.as_object().cloned().unwrap_or_default() {
        listener[k] = v;
    }
    json!({
        "version": "1",
        "listeners": [listener],
        "routeTables": [{ "name": "gw", "virtualHosts": vhosts }],
        "clusters": [{ "name": "app", "endpoints": endpoints }],
    })
}

fn to_app() -> Value {
    json!({ "route": {
        "clusters": [{ "cluster": "app", "weight": 100 }],
        "retryPolicy": { "numRetries": 0 }
    } })
}

fn gw_addr(server: &mesh_proxy::Server) -> SocketAddr {
    server.listener_addr("gw").expect("listener gw is bound")
}

/// The app's sidecar (STRICT mTLS) and a gateway with its own identity routing
/// `shop.example.com` to it; anything else has no virtual host.
struct Edge {
    app: mesh_echo::EchoHandle,
    gateway: Arc<mesh_proxy::Server>,
    _sidecar: Arc<mesh_proxy::Server>,
    _citadel: Citadel,
}

async fn edge(fail_status: Option<u16>) -> Edge {
    let citadel = Citadel::start(None).await;
    let app = echo_with("shop", "v1", fail_status).await;
    let sidecar = sidecar(
        Some(citadel.identity("shop").await),
        inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await;
    let gateway = common::mesh::sidecar(
        Some(citadel.identity("ingressgateway").await),
        config(gateway_config(
            json!({}),
            json!([{ "name": "shop", "domains": ["shop.example.com"], "routes": [to_app()] }]),
            vec![endpoint(in_addr(&sidecar), true, &[&spiffe("shop")])],
        )),
    )
    .await;
    Edge {
        app,
        gateway,
        _sidecar: sidecar,
        _citadel: citadel,
    }
}

#[tokio::test]
async fn http_reaches_a_mesh_workload_over_mtls_with_the_gateways_identity() {
    let e = edge(None).await;
    let reply = get(gw_addr(&e.gateway), "shop.example.com", "/items").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.served_by(), "shop/v1");
    // The sidecar accepts STRICT mTLS only, and names the client it verified: the gateway.
    assert_eq!(
        reply.upstream_header(XFCC).as_deref(),
        Some(
            "By=spiffe://cluster.local/ns/default/sa/shop;\
             URI=spiffe://cluster.local/ns/default/sa/ingressgateway"
        )
    );
    assert_eq!(
        reply.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert!(reply.upstream_header("x-request-id").is_some());
}

#[tokio::test]
async fn hosts_are_matched_and_unknown_hosts_get_404() {
    let e = edge(None).await;
    let addr = gw_addr(&e.gateway);
    assert_eq!(
        get(addr, "shop.example.com:8080", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(addr, "SHOP.example.com", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(addr, "other.example.com", "/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(addr, "example.com", "/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(e.app.requests(), 2);
}

#[tokio::test]
async fn headers_from_outside_are_stripped_and_overrides_not_honoured() {
    let e = edge(Some(500)).await;
    let forged_xfcc = "By=spiffe://cluster.local/ns/default/sa/shop;\
                       URI=spiffe://cluster.local/ns/default/sa/admin";
    let reply = get_with(
        gw_addr(&e.gateway),
        "shop.example.com",
        "/",
        &[
            // Would make an outbound listener retry the 500 three times.
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-max-retries", "3"),
            ("x-envoy-peer-metadata", "Zm9yZ2Vk"),
            ("x-envoy-peer-metadata-id", "sidecar~forged"),
            ("x-envoy-original-path", "/admin"),
            (XFCC, forged_xfcc),
            ("x-request-id", "chosen-by-client"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        e.app.requests(),
        1,
        "the client's retry override was not honoured"
    );
    for name in [
        "x-envoy-peer-metadata",
        "x-envoy-peer-metadata-id",
        "x-envoy-original-path",
        "x-envoy-retry-on",
        "x-envoy-max-retries",
    ] {
        assert_eq!(reply.upstream_header(name), None, "{name} reached the app");
    }
    let xfcc = reply.upstream_header(XFCC).unwrap();
    assert!(
        xfcc.ends_with("URI=spiffe://cluster.local/ns/default/sa/ingressgateway"),
        "{xfcc}"
    );
    assert_ne!(
        reply.upstream_header("x-request-id").as_deref(),
        Some("chosen-by-client")
    );
    assert_eq!(
        reply.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
}

#[tokio::test]
async fn https_redirect_answers_301_to_the_https_url() {
    let app = echo("shop", "v1").await;
    let gateway = common::mesh::sidecar(
        None,
        config(gateway_config(
            json!({}),
            json!([{ "name": "shop", "domains": ["shop.example.com"], "routes": [{
                "match": { "path": { "prefix": "/" } },
                "redirect": { "scheme": "https", "responseCode": 301 }
            }] }]),
            vec![endpoint(app.addr(), false, &[])],
        )),
    )
    .await;
    let addr = gw_addr(&gateway);
    let reply = get(addr, "shop.example.com", "/cart?id=7").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        reply.headers["location"],
        "https://shop.example.com/cart?id=7"
    );
    let reply = get(addr, "shop.example.com:80", "/").await;
    assert_eq!(reply.headers["location"], "https://shop.example.com/");
    assert_eq!(app.requests(), 0);
}

/// Certificate files of two sites and a client CA, in a temporary directory.
struct Certs {
    dir: tempfile::TempDir,
    server_ca: TestCa,
    client_ca: TestCa,
}

impl Certs {
    fn new() -> Self {
        let certs = Certs {
            dir: tempfile::tempdir().unwrap(),
            server_ca: TestCa::new("sites"),
            client_ca: TestCa::new("clients"),
        };
        for site in ["a.example.com", "b.example.com"] {
            let (chain, key) = certs.server_ca.dns_leaf_pem(site);
            std::fs::write(certs.path(&format!("{site}.pem")), chain).unwrap();
            std::fs::write(certs.path(&format!("{site}.key")), key).unwrap();
        }
        std::fs::write(certs.path("clients.pem"), certs.client_ca.root_pem()).unwrap();
        certs
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn site(&self, site: &str, client_ca: bool) -> Value {
        let mut v = json!({
            "sniHosts": [site],
            "certificateChain": self.path(&format!("{site}.pem")),
            "privateKey": self.path(&format!("{site}.key")),
        });
        if client_ca {
            v["caCertificates"] = json!(self.path("clients.pem"));
            v["requireClientCertificate"] = json!(true);
        }
        v
    }
}

/// A TLS client trusting `ca`, with `identity` as its client certificate when given.
fn tls_client(ca: &TestCa, identity: Option<(&Path, &Path)>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.root()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
}

/// One HTTP/1.1 GET over an established TLS session.
async fn https_get(tls: TlsStream<TcpStream>, host: &str, path: &str) -> Reply {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    collect(sender.send_request(req).await.unwrap()).await
}

/// The DNS name of the certificate the server presented.
fn presented_name(tls: &TlsStream<TcpStream>) -> String {
    let cert = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    format!("{:?}", san.value.general_names[0])
}

#[tokio::test]
async fn https_picks_the_certificate_by_sni_among_two_servers() {
    let certs = Certs::new();
    let site_a = echo("site-a", "v1").await;
    let site_b = echo("site-b", "v1").await;
    let gateway = common::mesh::sidecar(
        None,
        config(json!({
            "listeners": [{
                "name": "gw", "address": "127.0.0.1:0", "direction": "GATEWAY",
                "protocol": "HTTP", "routeTable": "gw",
                "downstreamTls": { "certificates": [
                    certs.site("a.example.com", false),
                    certs.site("b.example.com", false),
                ] }
            }],
            "routeTables": [{ "name": "gw", "virtualHosts": [
                { "name": "a", "domains": ["a.example.com"], "routes": [{ "route": {
                    "clusters": [{ "cluster": "a", "weight": 100 }] } }] },
                { "name": "b", "domains": ["b.example.com"], "routes": [{ "route": {
                    "clusters": [{ "cluster": "b", "weight": 100 }] } }] },
            ] }],
            "clusters": [
                { "name": "a", "endpoints": [{ "address": site_a.addr().to_string() }] },
                { "name": "b", "endpoints": [{ "address": site_b.addr().to_string() }] },
            ],
        })),
    )
    .await;
    let addr = gw_addr(&gateway);
    let client = tls_client(&certs.server_ca, None);
    for (site, served_by) in [
        ("a.example.com", "site-a/v1"),
        ("b.example.com", "site-b/v1"),
    ] {
        // The client checks the certificate against the name it asked for.
        let tls = tls_connect(&client, addr, site).await.expect("handshake");
        assert!(
            presented_name(&tls).contains(site),
            "{}",
            presented_name(&tls)
        );
        let reply = https_get(tls, site, "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.served_by(), served_by);
        assert_eq!(
            reply.upstream_header("x-forwarded-proto").as_deref(),
            Some("https")
        );
    }
    // A name no server has: no certificate, the handshake is refused.
    assert!(tls_connect(&client, addr, "c.example.com").await.is_err());
    // Plaintext HTTP on the TLS port gets no answer.
    assert_eq!(raw_plaintext_get(addr).await, None);
}

#[tokio::test]
async fn mutual_tls_takes_clients_with_a_certificate_of_the_client_ca_only() {
    let certs = Certs::new();
    let app = echo("site-a", "v1").await;
    let gateway = common::mesh::sidecar(
        None,
        config(gateway_config(
            json!({ "downstreamTls": { "certificates": [certs.site("a.example.com", true)] } }),
            json!([{ "name": "a", "domains": ["*"], "routes": [to_app()] }]),
            vec![endpoint(app.addr(), false, &[])],
        )),
    )
    .await;
    let addr = gw_addr(&gateway);

    let handshake_and_get = |client: TlsConnector| async move {
        let tls = tls_connect(&client, addr, "a.example.com").await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = Request::builder()
            .uri("/")
            .header("host", "a.example.com")
            .body(Full::new(Bytes::new()))
            .unwrap();
        Some(sender.send_request(req).await.ok()?.status())
    };

    // No client certificate: refused (TLS 1.3 reports it at the first read).
    assert_eq!(
        handshake_and_get(tls_client(&certs.server_ca, None)).await,
        None
    );
    // A certificate of another CA: refused.
    let (other_cert, other_key) = TestCa::new("other").dns_leaf_pem("client.example.com");
    std::fs::write(certs.path("other.pem"), other_cert).unwrap();
    std::fs::write(certs.path("other.key"), other_key).unwrap();
    let other = tls_client(
        &certs.server_ca,
        Some((
            Path::new(&certs.path("other.pem")),
            Path::new(&certs.path("other.key")),
        )),
    );
    assert_eq!(handshake_and_get(other).await, None);
    assert_eq!(app.requests(), 0);
    // A certificate of the client CA: served.
    let (cert, key) = certs.client_ca.dns_leaf_pem("client.example.com");
    std::fs::write(certs.path("client.pem"), cert).unwrap();
    std::fs::write(certs.path("client.key"), key).unwrap();
    let good = tls_client(
        &certs.server_ca,
        Some((
            Path::new(&certs.path("client.pem")),
            Path::new(&certs.path("client.key")),
        )),
    );
    assert_eq!(handshake_and_get(good).await, Some(StatusCode::OK));
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn a_certificate_file_that_cannot_be_read_rejects_the_config() {
    let server = mesh_proxy::Server::new();
    let err = server
        .apply(config(gateway_config(
            json!({ "downstreamTls": { "certificates": [{
                "sniHosts": ["*"],
                "certificateChain": "/nonexistent/site.pem",
                "privateKey": "/nonexistent/site.key",
            }] } }),
            json!([]),
            vec![],
        )))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("listeners[0].downstreamTls") && message.contains("/nonexistent/site.pem"),
        "{message}"
    );
    assert!(server.listener_addr("gw").is_none());
}

/// A TLS server for `name` (certificate of `ca`) that answers every line with `name: line`.
async fn tls_line_server(ca: &TestCa, name: &str) -> SocketAddr {
    let (cert_pem, key_pem) = ca.dns_leaf_pem(name);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let name = name.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut lines = BufReader::new(tls);
                let mut line = String::new();
                while lines.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                    let reply = format!("{name}: {line}");
                    if lines.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn passthrough_routes_tls_by_sni_next_to_terminated_servers() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let certs = Certs::new();
    let db = tls_line_server(&certs.server_ca, "db.example.com").await;
    let site_a = echo("site-a", "v1").await;
    let gateway = common::mesh::sidecar(
        None,
        config(json!({
            "listeners": [{
                "name": "gw", "address": "127.0.0.1:0", "direction": "GATEWAY",
                "protocol": "HTTP", "routeTable": "gw",
                "downstreamTls": { "certificates": [certs.site("a.example.com", false)] },
                "tcpRoutes": [{
                    "name": "db", "matches": [{ "sniHosts": ["db.example.com"] }],
                    "clusters": [{ "cluster": "db", "weight": 100 }]
                }]
            }],
            "routeTables": [{ "name": "gw", "virtualHosts": [
                { "name": "a", "domains": ["*"], "routes": [{ "route": {
                    "clusters": [{ "cluster": "a", "weight": 100 }] } }] },
            ] }],
            "clusters": [
                { "name": "a", "endpoints": [{ "address": site_a.addr().to_string() }] },
                { "name": "db", "endpoints": [{ "address": db.to_string() }] },
            ],
        })),
    )
    .await;
    let addr = gw_addr(&gateway);
    let client = tls_client(&certs.server_ca, None);

    // db.example.com: the client's TLS goes through untouched, to the server holding that
    // name's certificate (the gateway has none for it).
    let tls = tls_connect(&client, addr, "db.example.com")
        .await
        .expect("handshake with db");
    assert!(presented_name(&tls).contains("db.example.com"));
    let mut tls = BufReader::new(tls);
    tls.get_mut().write_all(b"select 1\n").await.unwrap();
    let mut reply = String::new();
    tls.read_line(&mut reply).await.unwrap();
    assert_eq!(reply, "db.example.com: select 1\n");

    // a.example.com on the same port: terminated by the gateway and routed as HTTP.
    let tls = tls_connect(&client, addr, "a.example.com")
        .await
        .expect("handshake with the gateway");
    assert!(presented_name(&tls).contains("a.example.com"));
    assert_eq!(
        https_get(tls, "a.example.com", "/").await.served_by(),
        "site-a/v1"
    );
}

#[tokio::test]
async fn a_renewed_certificate_file_is_served_without_a_config_change() {
    let certs = Certs::new();
    let app = echo("site-a", "v1").await;
    let gateway = common::mesh::sidecar(
        None,
        config(gateway_config(
            json!({ "downstreamTls": { "certificates": [certs.site("a.example.com", false)] } }),
            json!([{ "name": "a", "domains": ["*"], "routes": [to_app()] }]),
            vec![endpoint(app.addr(), false, &[])],
        )),
    )
    .await;
    let addr = gw_addr(&gateway);
    let old_ca_client = tls_client(&certs.server_ca, None);
    assert!(
        tls_connect(&old_ca_client, addr, "a.example.com")
            .await
            .is_ok()
    );

    // The files are replaced in place (as a Kubernetes Secret mount is) by a certificate of
    // another CA; a half-written renewal (a key that does not match) keeps the old one.
    let renewed_ca = TestCa::new("renewed");
    let (chain, key) = renewed_ca.dns_leaf_pem("a.example.com");
    std::fs::write(certs.path("a.example.com.pem"), &chain).unwrap();
    tokio::time::sleep(mesh_proxy::tls::RELOAD_CHECK + std::time::Duration::from_millis(100)).await;
    assert!(
        tls_connect(&old_ca_client, addr, "a.example.com")
            .await
            .is_ok(),
        "a certificate without its key is not taken"
    );
    std::fs::write(certs.path("a.example.com.key"), &key).unwrap();
    tokio::time::sleep(mesh_proxy::tls::RELOAD_CHECK + std::time::Duration::from_millis(100)).await;
    // The check runs at accept: this connection triggers it and already gets the new one.
    let renewed_client = tls_client(&renewed_ca, None);
    let tls = tls_connect(&renewed_client, addr, "a.example.com")
        .await
        .expect("the renewed certificate is served");
    assert_eq!(
        https_get(tls, "a.example.com", "/").await.status,
        StatusCode::OK
    );
    assert!(
        tls_connect(&old_ca_client, addr, "a.example.com")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn https_clients_that_negotiate_h2_are_served_http2() {
    let certs = Certs::new();
    let app = echo("site-a", "v1").await;
    let gateway = common::mesh::sidecar(
        None,
        config(gateway_config(
            json!({ "downstreamTls": { "certificates": [certs.site("a.example.com", false)] } }),
            json!([{ "name": "a", "domains": ["a.example.com"], "routes": [to_app()] }]),
            vec![endpoint(app.addr(), false, &[])],
        )),
    )
    .await;
    let mut roots = RootCertStore::empty();
    roots.add(certs.server_ca.root()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tls_connect(
        &TlsConnector::from(Arc::new(config)),
        gw_addr(&gateway),
        "a.example.com",
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::builder()
            .uri("https://a.example.com/h2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = collect(sender.send_request(req).await.unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK);
        // The cluster keeps the downstream protocol (its default): HTTP/2 end to end.
        assert_eq!(reply.json()["protocol"], "HTTP/2.0");
        assert_eq!(
            reply.upstream_header("x-forwarded-proto").as_deref(),
            Some("https")
        );
    }
    assert_eq!(app.requests(), 3);
}

/// A credential directory as a gateway pod mounts Kubernetes TLS Secrets: one directory per
/// Secret with `tls.crt` and `tls.key`, and `clients-cacert/ca.crt` for a client CA.
struct CredentialDir {
    dir: tempfile::TempDir,
    server_ca: TestCa,
    client_ca: TestCa,
}

impl CredentialDir {
    fn new() -> Self {
        let c = CredentialDir {
            dir: tempfile::tempdir().unwrap(),
            server_ca: TestCa::new("sites"),
            client_ca: TestCa::new("clients"),
        };
        for (secret, site) in [("site-a", "a.example.com"), ("site-b", "b.example.com")] {
            c.write(secret, &c.server_ca, site);
        }
        let ca_dir = c.dir.path().join("site-a-cacert");
        std::fs::create_dir_all(&ca_dir).unwrap();
        std::fs::write(ca_dir.join("ca.crt"), c.client_ca.root_pem()).unwrap();
        c
    }

    /// Writes the Secret `secret`: a certificate for `site` signed by `ca`, and its key.
    fn write(&self, secret: &str, ca: &TestCa, site: &str) {
        let dir = self.dir.path().join(secret);
        std::fs::create_dir_all(&dir).unwrap();
        let (chain, key) = ca.dns_leaf_pem(site);
        std::fs::write(dir.join("tls.crt"), chain).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
    }

    /// A gateway serving `certificates` (proto3 JSON) on listener "gw" with this directory.
    async fn gateway(
        &self,
        certificates: Value,
        app: &mesh_echo::EchoHandle,
    ) -> Arc<mesh_proxy::Server> {
        let server = mesh_proxy::Server::with_options(mesh_proxy::server::Options {
            credential_dir: Some(self.dir.path().to_path_buf()),
            ..Default::default()
        });
        server
            .apply(config(gateway_config(
                json!({ "downstreamTls": { "certificates": certificates } }),
                json!([{ "name": "all", "domains": ["*"], "routes": [to_app()] }]),
                vec![endpoint(app.addr(), false, &[])],
            )))
            .await
            .expect("the credentials load");
        server
    }
}

#[tokio::test]
async fn credentials_by_name_are_read_from_the_credential_dir_and_picked_by_sni() {
    let creds = CredentialDir::new();
    let app = echo("site", "v1").await;
    let gateway = creds
        .gateway(
            json!([
                { "sniHosts": ["a.example.com"], "credentialName": "site-a" },
                { "sniHosts": ["b.example.com"], "credentialName": "site-b" },
            ]),
            &app,
        )
        .await;
    let addr = gw_addr(&gateway);
    let client = tls_client(&creds.server_ca, None);
    for site in ["a.example.com", "b.example.com"] {
        let tls = tls_connect(&client, addr, site).await.expect("handshake");
        assert!(
            presented_name(&tls).contains(site),
            "{}",
            presented_name(&tls)
        );
        assert_eq!(https_get(tls, site, "/").await.status, StatusCode::OK);
    }
    assert!(tls_connect(&client, addr, "c.example.com").await.is_err());
}

#[tokio::test]
async fn a_replaced_credential_is_served_after_the_change_and_a_broken_one_keeps_the_last() {
    let creds = CredentialDir::new();
    let app = echo("site", "v1").await;
    let gateway = creds
        .gateway(
            json!([{ "sniHosts": ["a.example.com"], "credentialName": "site-a" }]),
            &app,
        )
        .await;
    let addr = gw_addr(&gateway);
    let old_client = tls_client(&creds.server_ca, None);
    assert!(
        tls_connect(&old_client, addr, "a.example.com")
            .await
            .is_ok()
    );

    // A broken certificate file: the last good credential stays in use.
    std::fs::write(creds.dir.path().join("site-a/tls.crt"), "not a certificate").unwrap();
    tokio::time::sleep(mesh_proxy::tls::RELOAD_CHECK + std::time::Duration::from_millis(100)).await;
    assert!(
        tls_connect(&old_client, addr, "a.example.com")
            .await
            .is_ok(),
        "a credential that does not load is not taken"
    );

    // The Secret is replaced by a certificate of another CA: served from the next check on.
    let renewed_ca = TestCa::new("renewed");
    creds.write("site-a", &renewed_ca, "a.example.com");
    tokio::time::sleep(mesh_proxy::tls::RELOAD_CHECK + std::time::Duration::from_millis(100)).await;
    let renewed = tls_client(&renewed_ca, None);
    let tls = tls_connect(&renewed, addr, "a.example.com")
        .await
        .expect("the replaced certificate is served");
    assert_eq!(
        https_get(tls, "a.example.com", "/").await.status,
        StatusCode::OK
    );
    assert!(
        tls_connect(&old_client, addr, "a.example.com")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_mutual_credential_verifies_clients_with_its_cacert_secret() {
    let creds = CredentialDir::new();
    let app = echo("site", "v1").await;
    let gateway = creds
        .gateway(
            json!([{
                "sniHosts": ["a.example.com"], "credentialName": "site-a",
                "credentialClientCa": true, "requireClientCertificate": true,
            }]),
            &app,
        )
        .await;
    let addr = gw_addr(&gateway);
    // Without a client certificate: refused (during the handshake or at the first read).
    let anonymous = tls_client(&creds.server_ca, None);
    let refused = match tls_connect(&anonymous, addr, "a.example.com").await {
        Err(_) => true,
        Ok(mut tls) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tls.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
            let mut buf = [0u8; 1];
            !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without certificate is refused");
    // With a certificate of the client CA (from site-a-cacert/ca.crt): served.
    let cert_dir = tempfile::tempdir().unwrap();
    let (chain, key) = creds.client_ca.dns_leaf_pem("client.example.com");
    let (cert_path, key_path) = (cert_dir.path().join("c.pem"), cert_dir.path().join("c.key"));
    std::fs::write(&cert_path, chain).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let client = tls_client(&creds.server_ca, Some((&cert_path, &key_path)));
    let tls = tls_connect(&client, addr, "a.example.com")
        .await
        .expect("handshake");
    assert_eq!(
        https_get(tls, "a.example.com", "/").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_credential_without_a_credential_dir_or_its_files_rejects_the_config() {
    let app = echo("site", "v1").await;
    let cfg = || {
        config(gateway_config(
            json!({ "downstreamTls": { "certificates": [
                { "sniHosts": ["a.example.com"], "credentialName": "missing" }
            ] } }),
            json!([{ "name": "all", "domains": ["*"], "routes": [to_app()] }]),
            vec![endpoint(app.addr(), false, &[])],
        ))
    };
    let e = mesh_proxy::Server::new()
        .apply(cfg())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no credential directory"), "{e}");
    let creds = CredentialDir::new();
    let server = mesh_proxy::Server::with_options(mesh_proxy::server::Options {
        credential_dir: Some(creds.dir.path().to_path_buf()),
        ..Default::default()
    });
    let e = server.apply(cfg()).await.unwrap_err().to_string();
    assert!(e.contains("missing/tls.crt"), "{e}");
}
