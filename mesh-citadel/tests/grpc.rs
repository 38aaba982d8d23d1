//! The CA over real gRPC, real TLS, real sockets on 127.0.0.1:0.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_citadel::Ca;
use mesh_citadel::auth::write_token;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::Code;

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";

struct Mesh {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    token: String,
    running: Running,
}

/// A CA persisted in a temp dir, with one workload token for default/productpage.
async fn mesh() -> Mesh {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let ca = Arc::new(Ca::load_or_create(&dir.join("ca"), TD).unwrap());
    let token_path = write_token(&dir.join("tokens"), "default", "productpage").unwrap();
    let token = std::fs::read_to_string(token_path)
        .unwrap()
        .trim()
        .to_owned();
    let running = start(ca, Some(&dir.join("tokens"))).await;
    Mesh {
        _dir: tmp,
        dir,
        token,
        running,
    }
}

#[tokio::test]
async fn issued_chain_verifies_to_root_and_carries_only_the_callers_id() {
    let m = mesh().await;
    let mut c = client(&m.running, Some(&m.token), None).await;
    let (_key, csr) = csr(&[], &[]);
    let chain = c.create_certificate(&csr, None).await.unwrap();

    assert_eq!(chain.len(), 2, "leaf then root");
    let roots = c.trust_bundle().await.unwrap();
    assert_eq!(chain.last(), roots.first(), "root last");
    verify_chain(&chain, &roots).unwrap();
    assert_eq!(sans(&chain[0]), vec![format!("URI:{PRODUCTPAGE}")]);

    let der = CertificateDer::from_pem_slice(chain[0].as_bytes()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!leaf.is_ca());
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let left = seconds_left(&chain[0]);
    assert!(
        (24 * 3600 - 60..=24 * 3600).contains(&left),
        "default 24h, got {left}s"
    );
}

#[tokio::test]
async fn csr_asking_for_another_identity_gets_the_callers() {
    let m = mesh().await;
    let mut c = client(&m.running, Some(&m.token), None).await;
    let (_key, csr) = csr(
        &["spiffe://cluster.local/ns/kube-system/sa/admin"],
        &["admin.kube-system.svc"],
    );
    let chain = c.create_certificate(&csr, None).await.unwrap();
    assert_eq!(sans(&chain[0]), vec![format!("URI:{PRODUCTPAGE}")]);
}

#[tokio::test]
async fn csr_with_ca_rights_is_invalid_argument() {
    let m = mesh().await;
    let mut c = client(&m.running, Some(&m.token), None).await;

    let key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_csr = ca_params.serialize_request(&key).unwrap().pem().unwrap();
    let err = c.create_certificate(&ca_csr, None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let mut sign_params = CertificateParams::default();
    sign_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let sign_csr = sign_params.serialize_request(&key).unwrap().pem().unwrap();
    let err = c.create_certificate(&sign_csr, None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let err = c.create_certificate("not a csr", None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn call_without_credentials_is_unauthenticated() {
    let m = mesh().await;
    let mut c = client(&m.running, None, None).await;
    let (_key, csr) = csr(&[PRODUCTPAGE], &[]);
    let err = c.create_certificate(&csr, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test]
async fn bad_token_is_unauthenticated() {
    let m = mesh().await;
    let (_key, csr) = csr(&[PRODUCTPAGE], &[]);
    let mut c = client(&m.running, Some("0123456789abcdef0123456789abcdef"), None).await;
    let err = c.create_certificate(&csr, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Not a bearer token at all.
    let mut c = client(&m.running, None, None).await;
    let mut req = tonic::Request::new(mesh_proto::ca::v1::CreateCertificateRequest {
        csr: csr.clone(),
        validity_duration: 0,
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Basic {}", m.token).parse().unwrap(),
    );
    let err = c.raw().create_certificate(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test]
async fn renewal_with_a_still_valid_certificate() {
    let m = mesh().await;
    let (key, first_csr) = csr(&[], &[]);
    let mut c = client(&m.running, Some(&m.token), None).await;
    let first = c.create_certificate(&first_csr, None).await.unwrap();

    // No token: the certificate alone identifies the caller.
    let (new_key, new_csr) = csr(&["spiffe://cluster.local/ns/default/sa/other"], &[]);
    let mut renewing = client(&m.running, None, Some((first.clone(), &key))).await;
    let renewed = renewing
        .create_certificate(&new_csr, Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(sans(&renewed[0]), vec![format!("URI:{PRODUCTPAGE}")]);
    assert_ne!(renewed[0], first[0]);
    verify_chain(&renewed, m.running.ca.trust_bundle_pem()).unwrap();

    // And the renewed one renews in turn.
    let mut again = client(&m.running, None, Some((renewed, &new_key))).await;
    let (_k, csr3) = csr(&[], &[]);
    again.create_certificate(&csr3, None).await.unwrap();
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let m = mesh().await;
    // Forge a correctly signed but expired productpage certificate with the CA's own key.
    let ca_dir = m.dir.join("ca");
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca-key.pem")).unwrap()).unwrap();
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca-cert.pem")).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(PRODUCTPAGE.try_into().unwrap())];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(2);
    params.not_after = now - time::Duration::days(1);
    let expired = params.signed_by(&leaf_key, &issuer).unwrap().pem();

    let mut c = client(&m.running, None, Some((vec![expired, ca_pem], &leaf_key))).await;
    let (_k, csr) = csr(&[], &[]);
    let err = c.create_certificate(&csr, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("xpired"), "{}", err.message());
}

#[tokio::test]
async fn certificate_from_another_root_is_refused() {
    let m = mesh().await;
    let foreign = Ca::self_signed(TD).unwrap();
    let (key, foreign_csr) = csr(&[], &[]);
    let id = PRODUCTPAGE.parse().unwrap();
    let chain = foreign.sign(&foreign_csr, &id, None).unwrap();

    let mut c = client(&m.running, None, Some((chain, &key))).await;
    let (_k, csr) = csr(&[], &[]);
    let err = c.create_certificate(&csr, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test]
async fn validity_is_capped_at_90_days() {
    let m = mesh().await;
    let mut c = client(&m.running, Some(&m.token), None).await;
    let (_k, csr) = csr(&[], &[]);

    let year = c
        .create_certificate(&csr, Some(Duration::from_secs(365 * 24 * 3600)))
        .await
        .unwrap();
    let left = seconds_left(&year[0]);
    assert!(
        (90 * 24 * 3600 - 60..=90 * 24 * 3600).contains(&left),
        "{left}"
    );

    let hour = c
        .create_certificate(&csr, Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    let left = seconds_left(&hour[0]);
    assert!((3600 - 60..=3600).contains(&left), "{left}");
}

#[tokio::test]
async fn trust_bundle_is_served() {
    let m = mesh().await;
    let mut c = client(&m.running, None, None).await;
    let roots = c.trust_bundle().await.unwrap();
    assert_eq!(roots, m.running.ca.trust_bundle_pem());
    assert_eq!(roots.len(), 1);
    let on_disk = std::fs::read_to_string(m.dir.join("ca/root-cert.pem")).unwrap();
    assert_eq!(roots[0], on_disk);
}

#[tokio::test]
async fn server_presents_a_certificate_for_its_name_from_the_mesh_root() {
    let m = mesh().await;
    // A client trusting another root cannot connect at all.
    let other = Ca::self_signed(TD).unwrap();
    let result = mesh_citadel::client::CitadelClient::connect(mesh_citadel::client::ClientConfig {
        addr: m.running.addr.to_string(),
        server_name: "mesh-citadel".into(),
        roots: ders(other.trust_bundle_pem()),
        client_identity: None,
        token: Some(m.token.clone()),
    })
    .await;
    assert!(result.is_err());
}
