//! The workload identity against a real citadel served in-process on 127.0.0.1, and mTLS
//! connections that live through a renewal.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_citadel::auth::{
    AnyOf, Authenticator, CertAuthenticator, TokenAuthenticator, write_token,
};
use mesh_citadel::{Ca, ServeOptions, SpiffeId};
use mesh_proxy::identity::{IdentityConfig, IdentityHandle, IdentitySource};
use mesh_proxy::retry::{Backoff, Jitter};
use mesh_proxy::tls::{client_config, peer_spiffe_id, server_config};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::GeneralName;

const TD: &str = "cluster.local";
const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";
const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";

/// A citadel with token and certificate authentication, and a token per workload.
struct Citadel {
    ca: Arc<Ca>,
    tokens: PathBuf,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Citadel {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        for sa in ["reviews", "productpage"] {
            write_token(&tokens, "default", sa).unwrap();
        }
        let ca = Arc::new(Ca::self_signed(TD).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut citadel = Self {
            ca,
            tokens,
            addr,
            stop: None,
            _dir: dir,
        };
        citadel.serve(listener);
        citadel
    }

    fn serve(&mut self, listener: TcpListener) {
        let auth: Vec<Arc<dyn Authenticator>> = vec![
            Arc::new(CertAuthenticator::new(self.ca.clone())),
            Arc::new(TokenAuthenticator::new(&self.tokens, TD)),
        ];
        let (tx, rx) = oneshot::channel();
        tokio::spawn(mesh_citadel::serve_with_shutdown(
            listener,
            self.ca.clone(),
            Arc::new(AnyOf::new(auth)),
            ServeOptions::default(),
            async {
                let _ = rx.await;
            },
        ));
        self.stop = Some(tx);
    }

    fn stop(&mut self) {
        self.stop.take();
    }

    /// Serves again on the same address, as a restarted citadel would.
    async fn restart(&mut self) {
        let listener = bind_again(self.addr).await;
        self.serve(listener);
    }

    fn token_path(&self, sa: &str) -> PathBuf {
        self.tokens.join("default").join(sa)
    }

    fn config(&self, sa: &str, validity: Option<Duration>) -> IdentityConfig {
        let mut cfg = IdentityConfig::new(
            self.addr.to_string(),
            SpiffeId::new(TD, "default", sa).unwrap(),
            self.ca.roots().to_vec(),
        );
        cfg.token_path = Some(self.token_path(sa));
        cfg.validity = validity;
        cfg.retry = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(400),
            Jitter::None,
        );
        cfg.request_timeout = Duration::from_secs(3);
        cfg
    }
}

/// The old listener goes away when its task is aborted, which may take a moment.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} stayed busy");
}

async fn start(cfg: IdentityConfig) -> IdentityHandle {
    tokio::time::timeout(Duration::from_secs(10), IdentitySource::start(cfg))
        .await
        .expect("first certificate")
}

fn uri_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => (*u).to_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn spki(cert: &CertificateDer<'_>) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).unwrap();
    cert.public_key().raw.to_vec()
}

/// Collects every log line at TRACE level.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_proxy_gets_exactly_its_spiffe_id_and_its_key_stays_in_memory() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    // Global, not `set_default`: a thread-local subscriber misses events at call sites whose
    // interest another test's thread cached as "never" while no subscriber was set.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");

    let citadel = Citadel::start().await;
    let files_before = std::fs::read_dir(citadel.tokens.join("default"))
        .unwrap()
        .count();
    let handle = start(citadel.config("reviews", None)).await;
    let id = handle.current();

    assert_eq!(id.spiffe_id(), REVIEWS);
    assert_eq!(uri_sans(&id.chain()[0]), vec![REVIEWS.to_owned()]);
    assert_eq!(id.trust_bundle(), citadel.ca.roots());
    // The signer rustls uses holds the key the CA certified: the CSR carried its public half.
    id.certified_key().keys_match().unwrap();

    // A second proxy of the same workload makes its own key.
    let again = start(citadel.config("reviews", None)).await.current();
    assert_ne!(spki(&again.chain()[0]), spki(&id.chain()[0]));

    // Nothing that prints or logs the identity shows a key, and nothing was written to disk.
    let printed = format!("{id:?} {handle:?}");
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("workload certificate issued"), "{logged}");
    for text in [&printed, &logged] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(!text.contains("Pkcs8"), "{text}");
    }
    let files_after = std::fs::read_dir(citadel.tokens.join("default"))
        .unwrap()
        .count();
    assert_eq!(files_before, files_after);
}

/// Accepts mTLS connections and echoes on each.
async fn echo_server(handle: IdentityHandle) -> SocketAddr {
    let acceptor = TlsAcceptor::from(server_config(handle).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                assert_eq!(
                    peer_spiffe_id(tls.get_ref().1)
                        .as_ref()
                        .map(SpiffeId::as_str),
                    Some(PRODUCTPAGE)
                );
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test]
async fn renews_at_half_life_and_open_connections_outlive_the_renewal() {
    let citadel = Citadel::start().await;
    let server = start(citadel.config("reviews", Some(Duration::from_secs(4)))).await;
    let started = Instant::now();
    let first = server.current();
    let client = start(citadel.config("productpage", None)).await;

    let addr = echo_server(server.clone()).await;
    let config = client_config(client, vec![REVIEWS.into()]).unwrap();
    let connector = TlsConnector::from(config);
    let connect = async || {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let sni = ServerName::try_from("reviews.default.svc").unwrap();
        connector.connect(sni, tcp).await.unwrap()
    };
    let mut before = connect().await;
    round_trip(&mut before, b"before").await;
    let presented = |tls: &tokio_rustls::client::TlsStream<TcpStream>| {
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(presented(&before), first.chain()[0]);

    let mut changes = server.changes();
    tokio::time::timeout(Duration::from_secs(4), changes.changed())
        .await
        .expect("renewed within the lifetime")
        .unwrap();
    let elapsed = started.elapsed();
    let renewed = server.current();
    assert_ne!(renewed.serial(), first.serial());
    assert_eq!(renewed.spiffe_id(), REVIEWS);
    // 45-55 % of the 3-4 s left (notAfter has whole seconds), with slack for a loaded machine.
    assert!(
        (Duration::from_millis(1200)..Duration::from_millis(3200)).contains(&elapsed),
        "renewed after {elapsed:?}"
    );

    // The open connection is untouched; a new one is served the renewed certificate.
    round_trip(&mut before, b"after").await;
    let mut after = connect().await;
    round_trip(&mut after, b"new").await;
    assert_eq!(presented(&after), renewed.chain()[0]);
    assert_eq!(presented(&before), first.chain()[0]);
}

#[tokio::test]
async fn renewal_is_authenticated_by_the_current_certificate() {
    let citadel = Citadel::start().await;
    let handle = start(citadel.config("reviews", Some(Duration::from_secs(3)))).await;
    let first = handle.current();
    // Without the token only the certificate can prove who is asking.
    std::fs::remove_file(citadel.token_path("reviews")).unwrap();
    let mut changes = handle.changes();
    tokio::time::timeout(Duration::from_secs(3), changes.changed())
        .await
        .expect("renewed with the certificate alone")
        .unwrap();
    assert_ne!(handle.current().serial(), first.serial());
    assert_eq!(handle.current().spiffe_id(), REVIEWS);
}

#[tokio::test]
async fn citadel_down_keeps_the_certificate_retries_with_backoff_and_recovers() {
    let mut citadel = Citadel::start().await;
    let handle = start(citadel.config("reviews", Some(Duration::from_secs(4)))).await;
    let first = handle.current();
    citadel.stop();

    // In citadel's place, a socket that counts connections and closes them.
    let attempts = Arc::new(AtomicUsize::new(0));
    let impostor = bind_again(citadel.addr).await;
    let counter = tokio::spawn({
        let attempts = attempts.clone();
        async move {
            loop {
                let (tcp, _) = impostor.accept().await.unwrap();
                attempts.fetch_add(1, Ordering::SeqCst);
                drop(tcp);
            }
        }
    });

    // Renewal is due after about 2 s; let it fail for a while.
    let deadline = Instant::now() + Duration::from_secs(8);
    while attempts.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "no renewal attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_three = attempts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_a_second = attempts.load(Ordering::SeqCst) - at_three;
    // Backing off (100, 200, 400, 400 ms...), not spinning; and still retrying.
    assert!(
        (1..=5).contains(&in_a_second),
        "{in_a_second} attempts in 1 s"
    );
    assert_eq!(
        handle.current().serial(),
        first.serial(),
        "current cert kept"
    );

    counter.abort();
    let _ = counter.await;
    citadel.restart().await;
    let mut changes = handle.changes();
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("recovered once citadel is back")
        .unwrap();
    assert_ne!(handle.current().serial(), first.serial());
}
