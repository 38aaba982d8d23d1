//! The CA's material: creation, persistence, plug-in CAs, the trust bundle, key hygiene.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::*;
use mesh_citadel::{Ca, CaError, SpiffeId};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

fn productpage() -> SpiffeId {
    SpiffeId::new(TD, "default", "productpage").unwrap()
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// An operator's root and intermediate in Istio's `cacerts` layout.
fn write_plugin_ca(dir: &std::path::Path) -> (String, String) {
    let root_key = KeyPair::generate().unwrap();
    let root = ca_params("operator root").self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(ca_params("operator root"), root_key);
    let inter_key = KeyPair::generate().unwrap();
    let inter = ca_params("operator intermediate")
        .signed_by(&inter_key, &root_issuer)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), inter.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), inter_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root.pem()).unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        format!("{}{}", inter.pem(), root.pem()),
    )
    .unwrap();
    (root.pem(), inter.pem())
}

#[test]
fn root_is_created_once_and_reused_on_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let first = Ca::load_or_create(&dir, TD).unwrap();
    let (_k, csr_pem) = csr(&[], &[]);
    let issued = first.sign(&csr_pem, &productpage(), None).unwrap();

    let second = Ca::load_or_create(&dir, TD).unwrap();
    assert_eq!(first.trust_bundle_pem(), second.trust_bundle_pem());
    // A certificate from before the restart still verifies against the reloaded bundle.
    verify_chain(&issued, second.trust_bundle_pem()).unwrap();
    for file in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        assert!(dir.join(file).exists(), "{file}");
    }
}

#[test]
fn key_file_is_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    Ca::load_or_create(&dir, TD).unwrap();
    let mode = std::fs::metadata(dir.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn debug_output_never_holds_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let ca = Ca::load_or_create(&dir, TD).unwrap();
    let key_pem = std::fs::read_to_string(dir.join("ca-key.pem")).unwrap();
    let debug = format!("{ca:?} {ca:#?}");
    assert!(!debug.contains("PRIVATE KEY"));
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!debug.contains(line));
    }
}

#[test]
fn plugin_ca_signs_with_the_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cacerts");
    let (root_pem, inter_pem) = write_plugin_ca(&dir);
    let ca = Ca::load(&dir, TD).unwrap();
    assert_eq!(ca.trust_bundle_pem(), std::slice::from_ref(&root_pem));

    let (_k, csr_pem) = csr(&[], &[]);
    let chain = ca.sign(&csr_pem, &productpage(), None).unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(chain[1], inter_pem);
    assert_eq!(chain[2], root_pem);
    verify_chain(&chain, ca.trust_bundle_pem()).unwrap();

    // load_or_create on a plug-in dir uses it rather than making a root.
    let again = Ca::load_or_create(&dir, TD).unwrap();
    assert_eq!(again.trust_bundle_pem(), [root_pem]);
}

#[test]
fn plugin_ca_without_cert_chain_file_is_completed_from_the_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cacerts");
    let (root_pem, inter_pem) = write_plugin_ca(&dir);
    std::fs::remove_file(dir.join("cert-chain.pem")).unwrap();
    let ca = Ca::load(&dir, TD).unwrap();
    assert_eq!(ca.chain_pem(), [inter_pem, root_pem]);
}

#[test]
fn plugin_ca_with_mismatched_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cacerts");
    write_plugin_ca(&dir);
    std::fs::write(
        dir.join("ca-key.pem"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    assert!(matches!(Ca::load(&dir, TD), Err(CaError::KeyMismatch)));
}

#[test]
fn plugin_ca_that_is_not_a_ca_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cacerts");
    std::fs::create_dir_all(&dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["leaf.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("ca-cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), key.serialize_pem()).unwrap();
    assert!(matches!(Ca::load(&dir, TD), Err(CaError::NotCa(_))));
}

#[test]
fn trust_bundle_holds_every_root_for_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let old = Ca::load_or_create(&dir, TD).unwrap();
    let (_k, csr_pem) = csr(&[], &[]);
    let old_cert = old.sign(&csr_pem, &productpage(), None).unwrap();

    // The operator adds the next root beside the current one.
    let next = Ca::self_signed(TD).unwrap();
    let bundle = format!(
        "{}{}",
        old.trust_bundle_pem()[0],
        next.trust_bundle_pem()[0]
    );
    std::fs::write(dir.join("root-cert.pem"), bundle).unwrap();

    let reloaded = Ca::load_or_create(&dir, TD).unwrap();
    assert_eq!(reloaded.trust_bundle_pem().len(), 2);
    verify_chain(&old_cert, reloaded.trust_bundle_pem()).unwrap();
    let next_cert = next.sign(&csr_pem, &productpage(), None).unwrap();
    verify_chain(&next_cert, reloaded.trust_bundle_pem()).unwrap();
}

#[test]
fn sign_refuses_a_foreign_trust_domain() {
    let ca = Ca::self_signed(TD).unwrap();
    let (_k, csr_pem) = csr(&[], &[]);
    let other = SpiffeId::new("example.org", "default", "x").unwrap();
    assert!(ca.sign(&csr_pem, &other, None).is_err());
}

#[tokio::test]
async fn plugin_ca_served_over_grpc_with_a_token_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cacerts");
    let (root_pem, _) = write_plugin_ca(&dir);
    let tokens = tmp.path().join("tokens.txt");
    std::fs::write(
        &tokens,
        "# token namespace service-account\nreviews-token-0123456789 bookinfo reviews\n",
    )
    .unwrap();
    let running = start(Arc::new(Ca::load(&dir, TD).unwrap()), Some(&tokens)).await;
    let mut c = client(&running, Some("reviews-token-0123456789"), None).await;
    let (_k, csr_pem) = csr(&[], &[]);
    let chain = c.create_certificate(&csr_pem, None).await.unwrap();
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[2], root_pem);
    assert_eq!(
        sans(&chain[0]),
        vec!["URI:spiffe://cluster.local/ns/bookinfo/sa/reviews".to_owned()]
    );
    verify_chain(&chain, &[root_pem]).unwrap();
}

#[test]
fn a_certificate_without_its_key_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cacerts");
    write_plugin_ca(&dir);
    std::fs::remove_file(dir.join("ca-key.pem")).unwrap();
    let before = std::fs::read(dir.join("ca-cert.pem")).unwrap();
    assert!(matches!(
        Ca::load_or_create(&dir, TD),
        Err(CaError::Incomplete { .. })
    ));
    assert_eq!(std::fs::read(dir.join("ca-cert.pem")).unwrap(), before);
}
