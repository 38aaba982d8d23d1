//! mTLS between proxies over real sockets on 127.0.0.1: identities from test CAs made with
//! rcgen, configs from `mesh_proxy::tls`, handshakes with tokio-rustls.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::SpiffeId;
use mesh_proxy::identity::{Identity, IdentityHandle};
use mesh_proxy::tls::{
    client_config, looks_like_tls, peer_spiffe_id, server_config, sniff_tls, xfcc,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";
const RATINGS: &str = "spiffe://cluster.local/ns/default/sa/ratings";

struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn root(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A workload certificate as citadel makes them, valid from `from` to `until` (from now).
    fn leaf_valid(
        &self,
        spiffe_id: &str,
        from: time::Duration,
        until: time::Duration,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + from;
        params.not_after = now + until;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone(), self.root()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }

    fn leaf(&self, spiffe_id: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        self.leaf_valid(
            spiffe_id,
            -time::Duration::minutes(1),
            time::Duration::hours(1),
        )
    }

    /// An identity of this CA that trusts `roots`.
    fn identity(&self, spiffe_id: &str, roots: &[&TestCa]) -> IdentityHandle {
        let (chain, key) = self.leaf(spiffe_id);
        IdentityHandle::fixed(Identity::from_parts(chain, key, trust(roots)).unwrap())
    }
}

fn trust(roots: &[&TestCa]) -> Vec<CertificateDer<'static>> {
    roots.iter().map(|ca| ca.root()).collect()
}

/// What the server saw of one connection.
#[derive(Debug)]
struct Seen {
    client_id: Option<SpiffeId>,
    alpn: Option<Vec<u8>>,
}

/// Accepts TLS connections, reports each, then echoes until the client closes.
async fn serve(
    handle: IdentityHandle,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<Seen, String>>,
) {
    let acceptor = TlsAcceptor::from(server_config(handle).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let (_, conn) = tls.get_ref();
                        let _ = tx.send(Ok(Seen {
                            client_id: peer_spiffe_id(conn),
                            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                        }));
                        let mut buf = [0u8; 1024];
                        while let Ok(n @ 1..) = tls.read(&mut buf).await {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    // SNI only: the SPIFFE ID is what the verifier checks.
    let name = ServerName::try_from("reviews.default.svc.cluster.local").unwrap();
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    // TLS 1.3 lets the client finish first; a round trip shows whether the server agreed.
    tls.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    Ok(tls)
}

#[tokio::test]
async fn mutual_tls_between_two_identities_of_one_root() {
    let ca = TestCa::new("mesh root");
    let (addr, mut seen) = serve(ca.identity(REVIEWS, &[&ca])).await;
    let mut config =
        (*client_config(ca.identity(PRODUCTPAGE, &[&ca]), vec![REVIEWS.into()]).unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];

    let tls = connect(Arc::new(config), addr).await.unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(
        peer_spiffe_id(conn).as_ref().map(SpiffeId::as_str),
        Some(REVIEWS)
    );
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let server_side = seen.recv().await.unwrap().unwrap();
    assert_eq!(
        server_side.client_id.as_ref().map(SpiffeId::as_str),
        Some(PRODUCTPAGE)
    );
    assert_eq!(server_side.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(
        xfcc(
            REVIEWS,
            server_side
                .client_id
                .as_ref()
                .map(SpiffeId::as_str)
                .unwrap()
        )
        .unwrap(),
        format!("By={REVIEWS};URI={PRODUCTPAGE}").as_str()
    );
}

#[tokio::test]
async fn any_of_several_expected_identities_and_empty_means_any_of_the_mesh() {
    let ca = TestCa::new("mesh root");
    let (addr, _seen) = serve(ca.identity(REVIEWS, &[&ca])).await;
    let client = ca.identity(PRODUCTPAGE, &[&ca]);
    let two = client_config(client.clone(), vec![RATINGS.into(), REVIEWS.into()]).unwrap();
    connect(two, addr).await.unwrap();
    let any = client_config(client, Vec::new()).unwrap();
    connect(any, addr).await.unwrap();
}

#[tokio::test]
async fn server_with_the_wrong_identity_is_refused() {
    let ca = TestCa::new("mesh root");
    let (addr, mut seen) = serve(ca.identity(RATINGS, &[&ca])).await;
    let config = client_config(ca.identity(PRODUCTPAGE, &[&ca]), vec![REVIEWS.into()]).unwrap();
    let err = connect(config, addr).await.unwrap_err().to_string();
    assert!(
        err.contains(RATINGS) && err.contains("not one of the expected"),
        "{err}"
    );
    assert!(seen.recv().await.unwrap().is_err(), "server saw an alert");
}

#[tokio::test]
async fn server_with_an_expired_certificate_is_refused() {
    let ca = TestCa::new("mesh root");
    let (chain, key) = ca.leaf_valid(REVIEWS, -time::Duration::days(2), -time::Duration::days(1));
    let expired = IdentityHandle::fixed(Identity::from_parts(chain, key, trust(&[&ca])).unwrap());
    let (addr, _seen) = serve(expired).await;
    let config = client_config(ca.identity(PRODUCTPAGE, &[&ca]), vec![REVIEWS.into()]).unwrap();
    let err = connect(config, addr).await.unwrap_err().to_string();
    assert!(err.contains("expired"), "{err}");
}

#[tokio::test]
async fn server_certificate_from_another_root_is_refused() {
    let (mesh, other) = (TestCa::new("mesh root"), TestCa::new("other root"));
    // Right name, wrong issuer: the server trusts the mesh root, so only the client can object.
    let (chain, key) = other.leaf(REVIEWS);
    let forged = IdentityHandle::fixed(Identity::from_parts(chain, key, trust(&[&mesh])).unwrap());
    let (addr, _seen) = serve(forged).await;
    let config = client_config(mesh.identity(PRODUCTPAGE, &[&mesh]), vec![REVIEWS.into()]).unwrap();
    let err = connect(config, addr).await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn client_certificate_from_another_root_is_refused() {
    let (mesh, other) = (TestCa::new("mesh root"), TestCa::new("other root"));
    let (addr, mut seen) = serve(mesh.identity(REVIEWS, &[&mesh])).await;
    // The client trusts the mesh root, so the server is fine to it; its own cert is not.
    let (chain, key) = other.leaf(PRODUCTPAGE);
    let client = IdentityHandle::fixed(Identity::from_parts(chain, key, trust(&[&mesh])).unwrap());
    let config = client_config(client, vec![REVIEWS.into()]).unwrap();
    assert!(connect(config, addr).await.is_err());
    let err = seen.recv().await.unwrap().unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[derive(Debug)]
struct NoClientCert;

impl ResolvesClientCert for NoClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() {
    let ca = TestCa::new("mesh root");
    let (addr, mut seen) = serve(ca.identity(REVIEWS, &[&ca])).await;
    let mut config =
        (*client_config(ca.identity(PRODUCTPAGE, &[&ca]), vec![REVIEWS.into()]).unwrap()).clone();
    config.client_auth_cert_resolver = Arc::new(NoClientCert);
    assert!(connect(Arc::new(config), addr).await.is_err());
    let err = seen.recv().await.unwrap().unwrap_err();
    assert!(err.contains("no certificates"), "{err}");
}

/// Presents one chain, whatever it names.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn client_certificate_whose_spiffe_uri_names_no_workload_is_refused() {
    let ca = TestCa::new("mesh root");
    let (addr, mut seen) = serve(ca.identity(REVIEWS, &[&ca])).await;
    // Our root and trust domain, but a path that is no `ns/<ns>/sa/<sa>`.
    let (chain, key) = ca.leaf("spiffe://cluster.local/ns/default/sa/productpage/extra");
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .unwrap();
    let mut config =
        (*client_config(ca.identity(PRODUCTPAGE, &[&ca]), vec![REVIEWS.into()]).unwrap()).clone();
    config.client_auth_cert_resolver =
        Arc::new(FixedClientCert(Arc::new(CertifiedKey::new(chain, signer))));
    assert!(connect(Arc::new(config), addr).await.is_err());
    let err = seen.recv().await.unwrap().unwrap_err();
    assert!(err.contains("names no workload"), "{err}");
}

#[tokio::test]
async fn a_bundle_of_two_roots_accepts_both_during_rotation() {
    let (old, new) = (TestCa::new("old root"), TestCa::new("new root"));
    let (old_addr, mut old_seen) = serve(old.identity(REVIEWS, &[&old, &new])).await;
    let (new_addr, mut new_seen) = serve(new.identity(REVIEWS, &[&old, &new])).await;

    // A client still on the old root but trusting both reaches servers of either root, and
    // both servers accept it.
    let both = client_config(
        old.identity(PRODUCTPAGE, &[&old, &new]),
        vec![REVIEWS.into()],
    )
    .unwrap();
    connect(both.clone(), old_addr).await.unwrap();
    connect(both, new_addr).await.unwrap();
    assert!(old_seen.recv().await.unwrap().is_ok());
    assert!(new_seen.recv().await.unwrap().is_ok());

    // Without the new root in its bundle the same client refuses the new server.
    let old_only = client_config(old.identity(PRODUCTPAGE, &[&old]), vec![REVIEWS.into()]).unwrap();
    let err = connect(old_only, new_addr).await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn a_new_identity_serves_new_connections_without_rebuilding_the_config() {
    let ca = TestCa::new("mesh root");
    let (chain, key) = ca.leaf(REVIEWS);
    let first = Arc::new(Identity::from_parts(chain, key, trust(&[&ca])).unwrap());
    let (tx, rx) = watch::channel(first.clone());
    let (addr, _seen) = serve(IdentityHandle::from_watch(rx)).await;
    let config = client_config(ca.identity(PRODUCTPAGE, &[&ca]), vec![REVIEWS.into()]).unwrap();

    let mut before = connect(config.clone(), addr).await.unwrap();
    let (chain, key) = ca.leaf(REVIEWS);
    let second = Arc::new(Identity::from_parts(chain, key, trust(&[&ca])).unwrap());
    tx.send_replace(second.clone());

    let after = connect(config, addr).await.unwrap();
    let leaf = |c: &rustls::ClientConnection| c.peer_certificates().unwrap()[0].clone();
    assert_eq!(leaf(after.get_ref().1), second.chain()[0]);
    assert_eq!(leaf(before.get_ref().1), first.chain()[0]);
    // The connection made before the change still carries data.
    before.write_all(b"more").await.unwrap();
    let mut buf = [0u8; 4];
    before.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"more");
}

/// The bytes a rustls client writes first, captured without a socket.
fn client_hello() -> Vec<u8> {
    let ca = TestCa::new("mesh root");
    let config = client_config(ca.identity(PRODUCTPAGE, &[&ca]), Vec::new()).unwrap();
    let name = ServerName::try_from("reviews").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

#[test]
fn looks_like_tls_on_a_real_client_hello_and_not_on_plaintext() {
    let hello = client_hello();
    assert!(looks_like_tls(&hello));
    assert!(looks_like_tls(&hello[..6]));
    assert!(!looks_like_tls(
        b"GET /productpage HTTP/1.1\r\nHost: x\r\n\r\n"
    ));
    assert!(!looks_like_tls(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    assert!(!looks_like_tls(b"SSH-2.0-OpenSSH_9.6\r\n"));
}

/// A listener whose first accepted stream is sniffed and handed back.
async fn sniffed_stream(
    first: impl AsyncFnOnce(TcpStream) -> TcpStream,
) -> (bool, TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let client = first(client).await;
    let (server, _) = listener.accept().await.unwrap();
    let tls = sniff_tls(&server, Duration::from_millis(200))
        .await
        .unwrap();
    (tls, server, client)
}

#[tokio::test]
async fn sniffing_a_socket_leaves_its_bytes_to_the_reader() {
    // A real mTLS client: sniffed as TLS, then the same stream completes the handshake.
    let ca = TestCa::new("mesh root");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = client_config(ca.identity(PRODUCTPAGE, &[&ca]), vec![REVIEWS.into()]).unwrap();
    let client = tokio::spawn(connect(config, addr));
    let (tcp, _) = listener.accept().await.unwrap();
    assert!(sniff_tls(&tcp, Duration::from_secs(1)).await.unwrap());
    let acceptor = TlsAcceptor::from(server_config(ca.identity(REVIEWS, &[&ca])).unwrap());
    let mut tls = acceptor.accept(tcp).await.unwrap();
    assert_eq!(
        peer_spiffe_id(tls.get_ref().1)
            .as_ref()
            .map(SpiffeId::as_str),
        Some(PRODUCTPAGE)
    );
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.unwrap();
    tls.write_all(&buf).await.unwrap();
    client.await.unwrap().unwrap();

    // Plaintext HTTP/1.1 and HTTP/2: not TLS, and every byte still there to read.
    for plain in [
        &b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
    ] {
        let (tls, mut server, _client) = sniffed_stream(async |mut c: TcpStream| {
            c.write_all(plain).await.unwrap();
            c
        })
        .await;
        assert!(!tls);
        let mut got = vec![0u8; plain.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, plain);
    }

    // A client that says nothing (server-first protocol) is plaintext once the deadline passes.
    let (tls, _server, _client) = sniffed_stream(async |c: TcpStream| c).await;
    assert!(!tls);
}
