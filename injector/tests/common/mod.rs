//! A real webhook server on 127.0.0.1:0 and a real TLS client for the wire tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_injector::server::{self, Webhook};
use mesh_injector::tls::CertReloader;
use mesh_injector::{Injector, Template, Values};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// A self-signed serving pair for `localhost`, written to `dir` as `NAME.crt`/`NAME.key`.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

pub fn write_pair(dir: &Path, name: &str) -> Pair {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Pair {
        cert,
        key,
        der: ck.cert.der().clone(),
    }
}

pub struct Running {
    pub addr: std::net::SocketAddr,
    pub certs: Arc<CertReloader>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the webhook serving `cert`/`key` (polled every `poll`).
pub async fn start(cert: &Path, key: &Path, values: Values, poll: Duration) -> Running {
    let injector = Injector::new(values, Template::default_template()).unwrap();
    let certs = CertReloader::load(cert, key).unwrap();
    let tls = certs.server_config().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tokio::spawn(server::serve(listener, tls, Arc::new(Webhook { injector })));
    let watch = certs.clone().watch(poll);
    Running {
        addr,
        certs,
        tasks: vec![serve, watch],
    }
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The leaf certificate the server presented.
    pub peer: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
}

/// One request over a fresh TLS connection that trusts `roots`; `h2` picks HTTP/2 by ALPN.
pub async fn request(
    addr: std::net::SocketAddr,
    roots: &[CertificateDer<'static>],
    h2: bool,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Reply {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    let peer = session.peer_certificates().unwrap()[0].to_vec();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        body,
        peer,
        alpn,
    }
}
