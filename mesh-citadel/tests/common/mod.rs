//! Helpers shared by the integration tests: CSRs, chain checks, a CA served on 127.0.0.1:0.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_citadel::auth::{AnyOf, Authenticator, CertAuthenticator, TokenAuthenticator};
use mesh_citadel::client::{CitadelClient, ClientConfig, ClientIdentity};
use mesh_citadel::{Ca, ServeOptions};
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::sync::oneshot;
use x509_parser::extensions::GeneralName;

pub const TD: &str = "cluster.local";

/// A CSR from a fresh key, asking for `uris` as URI SANs and `dns` as DNS SANs.
pub fn csr(uris: &[&str], dns: &[&str]) -> (KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(dns.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI((*uri).try_into().unwrap()));
    }
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, pem)
}

pub fn ders(pems: &[String]) -> Vec<CertificateDer<'static>> {
    pems.iter()
        .map(|p| CertificateDer::from_pem_slice(p.as_bytes()).unwrap())
        .collect()
}

/// Verifies `chain` (leaf first) up to one of `roots_pem` with webpki, as a peer would.
pub fn verify_chain(chain: &[String], roots_pem: &[String]) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    for root in ders(roots_pem) {
        roots.add(root).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let certs = ders(chain);
    verifier
        .verify_client_cert(&certs[0], &certs[1..], UnixTime::now())
        .map(|_| ())
}

/// All SANs of a PEM certificate, as strings prefixed by their kind.
pub fn sans(cert_pem: &str) -> Vec<String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let Some(san) = cert.subject_alternative_name().unwrap() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Seconds from now until the certificate's notAfter.
pub fn seconds_left(cert_pem: &str) -> i64 {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp()
}

pub struct Running {
    pub addr: SocketAddr,
    pub ca: Arc<Ca>,
    _stop: oneshot::Sender<()>,
}

/// Serves `ca` on 127.0.0.1:0 with certificate renewal and, if given, a token store.
pub async fn start(ca: Arc<Ca>, tokens: Option<&std::path::Path>) -> Running {
    let mut auths: Vec<Arc<dyn Authenticator>> = vec![Arc::new(CertAuthenticator::new(ca.clone()))];
    if let Some(tokens) = tokens {
        auths.push(Arc::new(TokenAuthenticator::new(tokens, TD)));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(mesh_citadel::serve_with_shutdown(
        listener,
        ca.clone(),
        Arc::new(AnyOf::new(auths)),
        ServeOptions::default(),
        async {
            let _ = rx.await;
        },
    ));
    Running {
        addr,
        ca,
        _stop: tx,
    }
}

pub async fn client(
    running: &Running,
    token: Option<&str>,
    identity: Option<(Vec<String>, &KeyPair)>,
) -> CitadelClient {
    CitadelClient::connect(ClientConfig {
        addr: running.addr.to_string(),
        server_name: "mesh-citadel".into(),
        roots: ders(running.ca.trust_bundle_pem()),
        client_identity: identity.map(|(chain, key)| ClientIdentity {
            chain: ders(&chain),
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }),
        token: token.map(str::to_owned),
    })
    .await
    .unwrap()
}
