//! TLS origination without a configured `sni` (Istio's auto SNI): the request's host is the
//! server name, checked by a real TLS server that records what each handshake named.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mesh::*;
use common::*;
use http::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// Server names of the handshakes so far ("" for none).
type Seen = Arc<Mutex<Vec<String>>>;

/// An HTTPS server outside the mesh with a certificate for `*.external.example`.
async fn recording_https(ca: &TestCa) -> (std::net::SocketAddr, Seen) {
    let (cert, key) = ca.dns_leaf_pem("*.external.example");
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls
                    .get_ref()
                    .1
                    .server_name()
                    .unwrap_or_default()
                    .to_string();
                record.lock().unwrap().push(sni.clone());
                let service = hyper::service::service_fn(move |_req| {
                    let sni = sni.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(sni)),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn ca_file(ca: &TestCa, dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ca.root_pem()).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn each_request_sends_its_own_host_as_the_server_name() {
    let external = TestCa::new("external root");
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(&external, &dir);
    let (server, seen) = recording_https(&external).await;
    let tls = json!({
        "mode": "SIMPLE", "caCertificates": ca,
        "sni": "svc.external.example", "autoSni": true
    });
    let client = sidecar(
        None,
        outbound(vec![endpoint(server, false, &[])], json!({ "tls": tls })),
    )
    .await;
    for (host, name) in [
        ("a.external.example", "a.external.example"),
        ("b.external.example:443", "b.external.example"),
        ("a.external.example:8443", "a.external.example"),
    ] {
        let reply = get(out_addr(&client), host, "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {:?}", reply.body);
        assert_eq!(&reply.body[..], name.as_bytes(), "{host}");
    }
    // One connection per host: the second request to a.external.example reused the first's.
    assert_eq!(
        *seen.lock().unwrap(),
        ["a.external.example", "b.external.example"]
    );

    // A configured name (no auto SNI) is sent whatever the request's host.
    let tls = json!({ "mode": "SIMPLE", "caCertificates": ca, "sni": "svc.external.example" });
    let fixed = sidecar(
        None,
        outbound(vec![endpoint(server, false, &[])], json!({ "tls": tls })),
    )
    .await;
    let reply = get(out_addr(&fixed), "a.external.example", "/").await;
    assert_eq!(&reply.body[..], b"svc.external.example");

    // A host the server certificate does not cover is refused, as Envoy's auto SAN check.
    let reply = get(out_addr(&client), "other.example", "/").await;
    assert_ne!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_tcp_connection_sends_the_configured_service_host() {
    let external = TestCa::new("external root");
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(&external, &dir);
    let (server, seen) = recording_https(&external).await;
    let tls = json!({
        "mode": "SIMPLE", "caCertificates": ca,
        "sni": "svc.external.example", "autoSni": true
    });
    let client = sidecar(
        None,
        outbound_tcp(vec![endpoint(server, false, &[])], json!({ "tls": tls })),
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(out_addr(&client))
        .await
        .unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no handshake");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*seen.lock().unwrap(), ["svc.external.example"]);
}
