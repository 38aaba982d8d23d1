//! `jwksUri` key sets against a JWKS server on loopback: first fetch, periodic refresh, last
//! good keys kept, early refetch for an unknown `kid` and its rate limit.

use std::time::Duration;

use super::alg::Algorithm;
use super::fetch::{FetchError, TlsRoots, fetch};
use super::remote::{FetchSettings, RemoteJwks};
use super::test_keys::{JwksServer, Signer, jwks_of};

/// A key set with its worker running.
fn started(uri: String, settings: FetchSettings) -> std::sync::Arc<RemoteJwks> {
    let remote = RemoteJwks::new(uri, settings, TlsRoots::default());
    remote.start();
    remote
}

fn settings(refresh_ms: u64, min_refetch_ms: u64) -> FetchSettings {
    FetchSettings {
        timeout: Duration::from_secs(2),
        refresh: Duration::from_millis(refresh_ms),
        min_refetch: Duration::from_millis(min_refetch_ms),
    }
}

fn kids(remote: &RemoteJwks) -> Vec<String> {
    remote
        .current()
        .map(|s| s.keys.iter().filter_map(|k| k.kid.clone()).collect())
        .unwrap_or_default()
}

/// Polls `cond` every 20 ms, for at most 5 s.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test]
async fn a_request_waits_for_the_first_fetch() {
    let k1 = Signer::es256("k1");
    let server = JwksServer::start(Some(k1.jwks())).await;
    let remote = started(server.uri(), settings(60_000, 60_000));
    let keys = remote
        .keys_for(Algorithm::Es256, Some("k1"))
        .await
        .expect("keys");
    assert!(keys.has_key_for(Algorithm::Es256, Some("k1")));
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn refreshes_and_keeps_the_last_good_keys() {
    let k1 = Signer::es256("k1");
    let k2 = Signer::es256("k2");
    let server = JwksServer::start(Some(k1.jwks())).await;
    let remote = started(server.uri(), settings(100, 60_000));
    assert!(eventually(|| kids(&remote) == ["k1"]).await);
    server.set(None);
    let hits = server.hits();
    assert!(
        eventually(|| server.hits() >= hits + 2).await,
        "refreshes go on"
    );
    assert_eq!(kids(&remote), ["k1"], "server away: last good keys kept");
    server.set(Some("not a key set".into()));
    let hits = server.hits();
    assert!(eventually(|| server.hits() >= hits + 2).await);
    assert_eq!(kids(&remote), ["k1"], "garbage never replaces good keys");
    server.set(Some(k2.jwks()));
    assert!(
        eventually(|| kids(&remote) == ["k2"]).await,
        "the refresh picks up rotation"
    );
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_interval() {
    let k1 = Signer::es256("k1");
    let k2 = Signer::es256("k2");
    let server = JwksServer::start(Some(k1.jwks())).await;
    let remote = started(server.uri(), settings(3_600_000, 60_000));
    assert!(
        remote
            .keys_for(Algorithm::Es256, Some("k1"))
            .await
            .is_some()
    );
    assert_eq!(server.hits(), 1);
    server.set(Some(jwks_of(&[&k1, &k2])));
    let keys = remote.keys_for(Algorithm::Es256, Some("k2")).await.unwrap();
    assert!(
        keys.has_key_for(Algorithm::Es256, Some("k2")),
        "rotation seen at once"
    );
    assert_eq!(server.hits(), 2);
    // Forged kids cannot make the proxy hammer the issuer.
    for _ in 0..5 {
        let keys = remote
            .keys_for(Algorithm::Es256, Some("forged"))
            .await
            .unwrap();
        assert!(!keys.has_key_for(Algorithm::Es256, Some("forged")));
    }
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn no_keys_when_the_server_never_answers() {
    let server = JwksServer::start(None).await;
    let remote = started(
        server.uri(),
        FetchSettings {
            timeout: Duration::from_millis(300),
            ..settings(60_000, 0)
        },
    );
    assert!(remote.keys_for(Algorithm::Es256, None).await.is_none());
}

#[tokio::test]
async fn the_worker_stops_with_its_handle() {
    let server = JwksServer::start(Some(Signer::es256("k").jwks())).await;
    let remote = started(server.uri(), settings(50, 0));
    assert!(eventually(|| server.hits() >= 2).await);
    drop(remote);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hits = server.hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.hits(), hits);
}

#[tokio::test]
async fn fetch_errors() {
    let server = JwksServer::start(None).await;
    let roots = TlsRoots::default();
    let t = Duration::from_secs(2);
    assert!(
        matches!(fetch(&server.uri(), t, &roots).await, Err(FetchError::Status(s)) if s == 503)
    );
    server.set(Some("{}".into()));
    assert_eq!(fetch(&server.uri(), t, &roots).await.unwrap(), "{}");
    assert!(matches!(
        fetch("ftp://x/", t, &roots).await,
        Err(FetchError::BadUri(_))
    ));
    // A listener that never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/", silent.local_addr().unwrap());
    assert!(matches!(
        fetch(&uri, Duration::from_millis(200), &roots).await,
        Err(FetchError::Timeout(_))
    ));
}

/// A JWKS server over TLS for `localhost`, with a certificate of a CA made here; returns
/// its port and the CA certificate.
async fn https_jwks(document: String) -> (u16, rustls_pki_types::CertificateDer<'static>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, document) = (acceptor.clone(), document.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let body = bytes::Bytes::from(document.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(body),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca.der().clone())
}

fn roots_of(ca: rustls_pki_types::CertificateDer<'static>) -> TlsRoots {
    let mut store = rustls::RootCertStore::empty();
    store.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    TlsRoots::with_config(std::sync::Arc::new(config))
}

#[tokio::test]
async fn https_checks_the_server_certificate() {
    let key = Signer::ed25519("k");
    let (port, ca) = https_jwks(key.jwks()).await;
    let uri = format!("https://localhost:{port}/jwks.json");
    let t = Duration::from_secs(2);
    assert_eq!(fetch(&uri, t, &roots_of(ca)).await.unwrap(), key.jwks());
    let (_, other_ca) = https_jwks(String::new()).await;
    assert!(matches!(
        fetch(&uri, t, &roots_of(other_ca)).await,
        Err(FetchError::Tls(_))
    ));
}

#[tokio::test]
async fn nothing_is_fetched_before_start_and_start_is_once() {
    let server = JwksServer::start(Some(Signer::es256("k").jwks())).await;
    let remote = RemoteJwks::new(
        server.uri(),
        settings(3_600_000, 60_000),
        TlsRoots::default(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.hits(), 0, "compiling a config does no I/O");
    remote.start();
    remote.start();
    assert!(eventually(|| remote.current().is_some()).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.hits(), 1, "one worker");
}
