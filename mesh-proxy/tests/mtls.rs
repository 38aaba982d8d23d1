//! mTLS between two real proxies on 127.0.0.1: PeerAuthentication modes on the inbound side,
//! auto mTLS and identity checks on the outbound side, certificates from a real citadel (or
//! from rcgen when citadel would never issue them), and the protocols carried over mTLS.

mod common;

use std::time::Duration;

use common::mesh::*;
use common::*;
use http::StatusCode;
use mesh_proto::echo::v1::EchoRequest;
use mesh_proto::echo::v1::echo_client::EchoClient;
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::net::TcpStream;

const XFCC: &str = "x-forwarded-client-cert";

#[tokio::test]
async fn strict_refuses_plaintext_and_the_client_proxy_gets_through_with_mtls() {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v1").await;
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await;
    let inbound_addr = in_addr(&server);

    // A plaintext client is cut off without an answer, and the app never sees it.
    assert_eq!(raw_plaintext_get(inbound_addr).await, None);
    assert_eq!(app.requests(), 0);

    // Through the client proxy (auto mTLS to a sidecar endpoint) the same call succeeds.
    let client = sidecar(
        Some(citadel.identity("productpage").await),
        outbound(
            vec![endpoint(inbound_addr, true, &[&spiffe("reviews")])],
            json!({}),
        ),
    )
    .await;
    let forged = "By=spiffe://cluster.local/ns/default/sa/reviews;\
                  URI=spiffe://cluster.local/ns/default/sa/admin";
    let reply = get_with(out_addr(&client), "reviews", "/", &[(XFCC, forged)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.upstream_header(XFCC).as_deref(),
        Some(
            "By=spiffe://cluster.local/ns/default/sa/reviews;\
             URI=spiffe://cluster.local/ns/default/sa/productpage"
        ),
        "the app sees the client's verified identity, not the forged header"
    );
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn permissive_takes_mtls_and_plaintext_on_one_port_and_strips_forged_xfcc() {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v1").await;
    // UNSET is PERMISSIVE.
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        inbound(app.addr(), json!({})),
    )
    .await;
    let inbound_addr = in_addr(&server);

    let plain = get_with(
        inbound_addr,
        "reviews",
        "/",
        &[(XFCC, "URI=spiffe://x/ns/a/sa/b")],
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(
        plain.upstream_header(XFCC),
        None,
        "a plaintext client proves nothing"
    );

    let client = sidecar(
        Some(citadel.identity("productpage").await),
        outbound(vec![endpoint(inbound_addr, true, &[])], json!({})),
    )
    .await;
    let mtls = get(out_addr(&client), "reviews", "/").await;
    assert_eq!(mtls.status, StatusCode::OK);
    assert!(
        mtls.upstream_header(XFCC)
            .unwrap()
            .ends_with(";URI=spiffe://cluster.local/ns/default/sa/productpage")
    );
}

#[tokio::test]
async fn disable_refuses_tls_and_port_level_mode_overrides_the_listener() {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v1").await;
    let reviews = citadel.identity("reviews").await;
    let productpage = citadel.identity("productpage").await;

    // DISABLE: plaintext works, mTLS does not.
    let disabled = sidecar(
        Some(reviews.clone()),
        inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_DISABLE" })),
    )
    .await;
    assert_eq!(
        get(in_addr(&disabled), "reviews", "/").await.status,
        StatusCode::OK
    );
    let mutual = sidecar(
        Some(productpage.clone()),
        outbound(
            vec![endpoint(in_addr(&disabled), false, &[])],
            json!({ "tls": { "mode": "ISTIO_MUTUAL" } }),
        ),
    )
    .await;
    assert_eq!(
        get(out_addr(&mutual), "reviews", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Listener STRICT, this port DISABLE: plaintext is let in.
    let port = free_port().await;
    let address = format!("127.0.0.1:{port}");
    let strict_but_port_disabled = sidecar(
        Some(reviews.clone()),
        config(inbound_json(
            &address,
            app.addr(),
            json!({
                "mtlsMode": "MTLS_MODE_STRICT",
                "portMtls": [{ "port": port, "mode": "MTLS_MODE_DISABLE" }]
            }),
        )),
    )
    .await;
    let addr = in_addr(&strict_but_port_disabled);
    assert_eq!(get(addr, "reviews", "/").await.status, StatusCode::OK);

    // The reverse, live: listener DISABLE, this port STRICT: plaintext is refused.
    strict_but_port_disabled
        .apply(config(inbound_json(
            &address,
            app.addr(),
            json!({
                "mtlsMode": "MTLS_MODE_DISABLE",
                "portMtls": [{ "port": port, "mode": "MTLS_MODE_STRICT" }]
            }),
        )))
        .await
        .unwrap();
    assert_eq!(raw_plaintext_get(addr).await, None);
    // An override for another port leaves this one at the listener's mode.
    strict_but_port_disabled
        .apply(config(inbound_json(
            &address,
            app.addr(),
            json!({
                "mtlsMode": "MTLS_MODE_DISABLE",
                "portMtls": [{ "port": port.wrapping_add(1), "mode": "MTLS_MODE_STRICT" }]
            }),
        )))
        .await
        .unwrap();
    assert!(
        raw_plaintext_get(addr)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
}

/// A STRICT sidecar of `spiffe_id` with a fixed identity of `ca`, valid from/until.
async fn strict_server(
    ca: &TestCa,
    spiffe_id: &str,
    valid: (time::Duration, time::Duration),
    app: std::net::SocketAddr,
) -> std::sync::Arc<mesh_proxy::Server> {
    let identity = ca.identity_valid(spiffe_id, valid.0, valid.1, &[ca]);
    sidecar(
        Some(identity),
        inbound(app, json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await
}

#[tokio::test]
async fn wrong_identity_expired_and_foreign_root_server_certificates_are_refused() {
    let mesh = TestCa::new("mesh root");
    let other = TestCa::new("other root");
    let app = echo("reviews", "v1").await;
    let now = (-time::Duration::minutes(1), time::Duration::hours(1));
    let expired = (-time::Duration::hours(2), -time::Duration::hours(1));

    let good = strict_server(&mesh, &spiffe("reviews"), now, app.addr()).await;
    let wrong_identity = strict_server(&mesh, &spiffe("ratings"), now, app.addr()).await;
    let stale = strict_server(&mesh, &spiffe("reviews"), expired, app.addr()).await;
    // Signed by another root, but trusting ours (so only the client's check can refuse it).
    let foreign = sidecar(
        Some(other.identity(&spiffe("reviews"), &[&mesh])),
        inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await;

    let client_identity = mesh.identity(&spiffe("productpage"), &[&mesh]);
    let status_via_client = async |server: &mesh_proxy::Server| {
        let client = sidecar(
            Some(client_identity.clone()),
            outbound(
                vec![endpoint(in_addr(server), true, &[&spiffe("reviews")])],
                json!({}),
            ),
        )
        .await;
        get(out_addr(&client), "reviews", "/").await.status
    };
    assert_eq!(status_via_client(&good).await, StatusCode::OK, "control");
    for (what, server) in [
        ("wrong identity", &wrong_identity),
        ("expired", &stale),
        ("another root", &foreign),
    ] {
        assert_eq!(
            status_via_client(server).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}"
        );
    }
    assert_eq!(app.requests(), 1, "only the good server reached the app");

    // The server side checks clients the same way: another root, an expired certificate and
    // a SPIFFE ID of another trust domain are refused.
    for (what, identity) in [
        (
            "another root",
            other.identity(&spiffe("productpage"), &[&mesh]),
        ),
        (
            "expired",
            mesh.identity_valid(&spiffe("productpage"), expired.0, expired.1, &[&mesh]),
        ),
        (
            "foreign trust domain",
            mesh.identity("spiffe://evil.example/ns/default/sa/productpage", &[&mesh]),
        ),
    ] {
        let client = sidecar(
            Some(identity),
            outbound(vec![endpoint(in_addr(&good), true, &[])], json!({})),
        )
        .await;
        assert_eq!(
            get(out_addr(&client), "reviews", "/").await.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}"
        );
    }
    assert_eq!(app.requests(), 1);
}

/// The serial of the certificate the server at `addr` presents to a new mTLS connection.
async fn presented_serial(
    addr: std::net::SocketAddr,
    client: mesh_proxy::identity::IdentityHandle,
) -> String {
    let config = mesh_proxy::tls::client_config(client, vec![]).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("reviews").unwrap(), tcp)
        .await
        .unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    parsed.raw_serial_as_string()
}

#[tokio::test]
async fn certificates_rotate_while_requests_flow_without_a_failure() {
    // Four-second certificates: each side renews about every two seconds.
    let citadel = Citadel::start(Some(Duration::from_secs(4))).await;
    let app = echo("reviews", "v1").await;
    let reviews = citadel.identity("reviews").await;
    let server = sidecar(
        Some(reviews.clone()),
        inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await;
    let productpage = citadel.identity("productpage").await;
    // A short idle timeout makes the client proxy open new connections along the way.
    let client = sidecar(
        Some(productpage.clone()),
        outbound(
            vec![endpoint(in_addr(&server), true, &[&spiffe("reviews")])],
            json!({ "idleTimeoutMs": 300 }),
        ),
    )
    .await;
    let first_serial = reviews.current().serial().to_owned();
    let first_client_serial = productpage.current().serial().to_owned();
    assert_eq!(
        presented_serial(in_addr(&server), productpage.clone()).await,
        first_serial
    );

    let out = out_addr(&client);
    let h1 = h1_client();
    let (mut ok, mut failed) = (0, 0);
    let started = std::time::Instant::now();
    for i in 1.. {
        if started.elapsed() >= Duration::from_secs(6) {
            break;
        }
        match send_h1(&h1, out, "GET", "reviews", "/", &[], "")
            .await
            .status
        {
            StatusCode::OK => ok += 1,
            _ => failed += 1,
        }
        // Now and then a pause longer than the idle timeout, so new connections are made.
        let pause = if i % 25 == 0 { 600 } else { 20 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > 50, "{ok} requests");

    // Both sides renewed (more than once), and a new connection is served the current one.
    let now_serial = reviews.current().serial().to_owned();
    assert_ne!(now_serial, first_serial);
    assert_ne!(productpage.current().serial(), first_client_serial);
    // Certificates renew every few hundred milliseconds here, so one may land during the
    // handshake: the one served is the current one from just before or just after it.
    let presented = presented_serial(in_addr(&server), productpage.clone()).await;
    let after = reviews.current().serial().to_owned();
    assert!(
        presented == now_serial || presented == after,
        "served {presented}, current {now_serial} then {after}"
    );
    let accepted = metric(
        &metrics_text(&server),
        "mesh_proxy_downstream_connections_total",
        "listener=\"in\"",
    );
    assert!(accepted > 2.0, "{accepted} mTLS connections during the run");
}

async fn mtls_pair(
    protocol: &str,
) -> (
    mesh_echo::EchoHandle,
    std::sync::Arc<mesh_proxy::Server>,
    std::sync::Arc<mesh_proxy::Server>,
    Citadel,
) {
    let citadel = Citadel::start(None).await;
    let app = echo("grpc", "v1").await;
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await;
    let client = sidecar(
        Some(citadel.identity("productpage").await),
        outbound(
            vec![endpoint(in_addr(&server), true, &[&spiffe("reviews")])],
            json!({ "protocol": protocol }),
        ),
    )
    .await;
    (app, server, client, citadel)
}

#[tokio::test]
async fn http2_over_mtls_multiplexes_on_one_connection() {
    let (app, _server, client, _citadel) = mtls_pair("HTTP2").await;
    let mut h2 = h2_connection(out_addr(&client)).await;
    for _ in 0..5 {
        let reply = send_h2(&mut h2, "reviews", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["protocol"], "HTTP/2.0");
        assert!(
            reply
                .upstream_header(XFCC)
                .unwrap()
                .contains("sa/productpage")
        );
    }
    // HTTP/1.1 from the app's caller, HTTP/2 over mTLS between the proxies.
    let reply = get(out_addr(&client), "reviews", "/").await;
    assert_eq!(reply.json()["protocol"], "HTTP/2.0");
    assert_eq!(app.connections(), 1);
}

#[tokio::test]
async fn grpc_streams_over_mtls() {
    let (_app, _server, client, _citadel) = mtls_pair("SAME_AS_DOWNSTREAM").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", out_addr(&client)))
        .unwrap()
        .origin("http://echo.grpc:50051".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut grpc = EchoClient::new(channel);
    let mut stream = grpc
        .server_stream(EchoRequest {
            message: "s".into(),
            count: 3,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    while let Some(m) = stream.message().await.unwrap() {
        assert_eq!(m.message, "s");
        got += 1;
    }
    assert_eq!(got, 3);

    assert_bidi_echo(&mut grpc).await;
}

#[tokio::test]
async fn raw_tcp_over_mtls() {
    let citadel = Citadel::start(None).await;
    let backend = tcp_echo().await;
    let server = sidecar(
        Some(citadel.identity("reviews").await),
        inbound_tcp(backend, json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await;
    // Plaintext to the STRICT TCP listener is closed before anything reaches the backend.
    assert!(!tcp_round_trip(in_addr(&server), b"plain").await);
    let client = sidecar(
        Some(citadel.identity("productpage").await),
        outbound_tcp(
            vec![endpoint(in_addr(&server), true, &[&spiffe("reviews")])],
            json!({}),
        ),
    )
    .await;
    let msg = b"bytes over mutual TLS";
    assert!(tcp_round_trip(out_addr(&client), msg).await);
}

#[tokio::test]
async fn auto_mtls_speaks_plaintext_to_endpoints_without_a_sidecar() {
    let citadel = Citadel::start(None).await;
    // A bare application: TLS bytes would make it answer 400 or close.
    let bare = echo("legacy", "v1").await;
    let client = sidecar(
        Some(citadel.identity("productpage").await),
        outbound(vec![endpoint(bare.addr(), false, &[])], json!({})),
    )
    .await;
    let reply = get(out_addr(&client), "legacy", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.served_by(), "legacy/v1");
    assert_eq!(reply.upstream_header(XFCC), None);

    // The same endpoint marked as a sidecar gets TLS, which a bare app cannot answer.
    let wrong = sidecar(
        Some(citadel.identity("productpage").await),
        outbound(vec![endpoint(bare.addr(), true, &[])], json!({})),
    )
    .await;
    assert_eq!(
        get(out_addr(&wrong), "legacy", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // And DISABLE forces plaintext even to a sidecar endpoint.
    let disabled = sidecar(
        Some(citadel.identity("productpage").await),
        outbound(
            vec![endpoint(bare.addr(), true, &[])],
            json!({ "tls": { "mode": "DISABLE" } }),
        ),
    )
    .await;
    assert_eq!(
        get(out_addr(&disabled), "legacy", "/").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn without_a_ca_strict_refuses_everything_and_auto_mtls_is_plaintext() {
    let app = echo("reviews", "v1").await;
    let server = sidecar(
        None,
        inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
    )
    .await;
    assert!(server.is_ready());
    assert_eq!(raw_plaintext_get(in_addr(&server)).await, None);

    let client = sidecar(
        None,
        outbound(vec![endpoint(app.addr(), true, &[])], json!({})),
    )
    .await;
    assert_eq!(
        get(out_addr(&client), "reviews", "/").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn readiness_waits_for_the_first_certificate() {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v1").await;
    let server = mesh_proxy::Server::new();
    server.expect_identity();
    server
        .apply(inbound(
            app.addr(),
            json!({ "mtlsMode": "MTLS_MODE_STRICT" }),
        ))
        .await
        .unwrap();
    assert!(!server.is_ready());
    assert_eq!(server.waiting_for(), Some("no workload certificate yet"));
    server.set_identity(citadel.identity("reviews").await);
    assert!(server.is_ready());
}

/// Polls the admin `/ready` of a proxy process until 200, for up to 10 s.
async fn wait_ready(admin: std::net::SocketAddr, child: &mut std::process::Child) {
    for _ in 0..200 {
        assert!(child.try_wait().unwrap().is_none(), "the proxy exited");
        if let Ok(mut s) = TcpStream::connect(admin).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s
                .write_all(b"GET /ready HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
                .await;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            if out.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not ready within 10 s");
}

#[tokio::test]
async fn the_binary_takes_its_identity_from_the_environment_and_survives_a_closed_stderr() {
    let citadel = Citadel::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("root-cert.pem");
    let pem: String = citadel.ca.trust_bundle_pem().concat();
    std::fs::write(&roots, pem).unwrap();
    let app = echo("reviews", "v1").await;
    let port = free_port().await;
    let cfg = inbound_json(
        &format!("127.0.0.1:{port}"),
        app.addr(),
        json!({ "mtlsMode": "MTLS_MODE_STRICT" }),
    );
    let cfg_path = dir.path().join("config.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port().await).parse().unwrap();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
        .args(["--config", cfg_path.to_str().unwrap()])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--workload", "reviews-1.default"])
        .env("CA_ADDR", format!("https://{}", citadel.addr))
        .env("TRUST_DOMAIN", TD)
        .env("MESH_TOKEN_FILE", citadel.token("reviews"))
        .env("MESH_ROOT_CERT_FILE", &roots)
        .env("SERVICE_ACCOUNT", "reviews")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads the proxy's stderr any more: every log write fails from now on.
    drop(child.stderr.take());
    wait_ready(admin, &mut child).await;

    let client = sidecar(
        Some(citadel.identity("productpage").await),
        outbound(
            vec![endpoint(
                format!("127.0.0.1:{port}").parse().unwrap(),
                true,
                &[&spiffe("reviews")],
            )],
            json!({}),
        ),
    )
    .await;
    for _ in 0..3 {
        let reply = get(out_addr(&client), "reviews", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.upstream_header(XFCC).as_deref(),
            Some(
                "By=spiffe://cluster.local/ns/default/sa/reviews;\
                 URI=spiffe://cluster.local/ns/default/sa/productpage"
            )
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// An HTTPS server outside the mesh answering "tls-ok", with a certificate for `dns_name` from
/// `ca`; when `client_ca` is given it requires a client certificate of that CA.
async fn external_https(
    ca: &TestCa,
    dns_name: &str,
    client_ca: Option<&TestCa>,
) -> std::net::SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = ca.dns_leaf_pem(dns_name);
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(client_ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(client_ca.root()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"tls-ok")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn simple_and_mutual_tls_origination_check_the_server_and_present_files() {
    let external_ca = TestCa::new("external root");
    let client_ca = TestCa::new("client root");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, external_ca.root_pem()).unwrap();
    let (client_cert, client_key) = client_ca.dns_leaf_pem("client.example");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, client_cert).unwrap();
    std::fs::write(&key_file, client_key).unwrap();

    let simple = external_https(&external_ca, "api.external.example", None).await;
    let mutual = external_https(&external_ca, "api.external.example", Some(&client_ca)).await;
    let status = async |addr, tls: serde_json::Value| {
        let client = sidecar(
            None,
            outbound(vec![endpoint(addr, false, &[])], json!({ "tls": tls })),
        )
        .await;
        let reply = get(out_addr(&client), "api.external.example", "/").await;
        (reply.status, reply.body)
    };
    let ca = ca_file.to_str().unwrap();
    let ok = (StatusCode::OK, bytes::Bytes::from_static(b"tls-ok"));
    assert_eq!(
        status(
            simple,
            json!({ "mode": "SIMPLE", "sni": "api.external.example", "caCertificates": ca })
        )
        .await,
        ok
    );
    // Verified against subjectAltNames instead of the SNI.
    assert_eq!(
        status(
            simple,
            json!({
                "mode": "SIMPLE", "caCertificates": ca,
                "subjectAltNames": ["api.external.example"]
            })
        )
        .await,
        ok
    );
    for (what, tls) in [
        (
            "name mismatch",
            json!({ "mode": "SIMPLE", "sni": "other.example", "caCertificates": ca }),
        ),
        (
            "wrong SAN",
            json!({
                "mode": "SIMPLE", "sni": "api.external.example", "caCertificates": ca,
                "subjectAltNames": ["nope.example"]
            }),
        ),
        ("plaintext to TLS", json!({ "mode": "DISABLE" })),
        (
            "no client certificate",
            json!({ "mode": "SIMPLE", "sni": "api.external.example", "caCertificates": ca }),
        ),
    ] {
        let addr = if what == "no client certificate" {
            mutual
        } else {
            simple
        };
        assert_ne!(status(addr, tls).await.0, StatusCode::OK, "{what}");
    }
    let mutual_tls = json!({
        "mode": "MUTUAL", "sni": "api.external.example", "caCertificates": ca,
        "clientCertificate": cert_file.to_str().unwrap(), "privateKey": key_file.to_str().unwrap()
    });
    assert_eq!(status(mutual, mutual_tls).await, ok);

    // A file that cannot be read is a config error naming the field; nothing is applied.
    let server = mesh_proxy::Server::new();
    let err = server
        .apply(outbound(
            vec![endpoint(simple, false, &[])],
            json!({ "tls": { "mode": "SIMPLE", "caCertificates": "/nonexistent/ca.pem" } }),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.field(), "clusters[0].tls.caCertificates");
}
