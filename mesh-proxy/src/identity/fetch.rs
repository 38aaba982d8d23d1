//! One round trip to citadel: a fresh key, a CSR for it, the signed chain and the trust bundle.

use std::time::SystemTime;

use mesh_identity::SpiffeId;
use mesh_identity::client::{CitadelClient, ClientConfig, ClientIdentity};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Identity, IdentityConfig, IdentityError};

/// Asks citadel for a certificate. `current`, while still valid, authenticates the call (a
/// renewal); the token file, when configured and present, is sent too.
pub(super) async fn fetch(
    cfg: &IdentityConfig,
    current: Option<&Identity>,
) -> Result<Identity, IdentityError> {
    tokio::time::timeout(cfg.request_timeout, round_trip(cfg, current))
        .await
        .map_err(|_| IdentityError::Timeout(cfg.request_timeout))?
}

async fn round_trip(
    cfg: &IdentityConfig,
    current: Option<&Identity>,
) -> Result<Identity, IdentityError> {
    let current = current.filter(|c| !c.is_expired_at(SystemTime::now()));
    let (key, csr) = key_and_csr(cfg)?;
    let token = read_token(cfg, current.is_some()).await?;
    let mut roots = cfg.ca_roots.clone();
    if let Some(c) = current {
        roots.extend(c.trust_bundle().iter().cloned());
    }
    let mut client = CitadelClient::connect(ClientConfig {
        addr: cfg.citadel_addr.clone(),
        server_name: cfg.citadel_server_name.clone(),
        roots,
        client_identity: current.map(|c| ClientIdentity {
            chain: c.chain().to_vec(),
            key: c.key_for_renewal(),
        }),
        token,
    })
    .await?;
    let chain = client
        .create_certificate(&csr, cfg.validity)
        .await
        .map_err(|s| IdentityError::Rpc(Box::new(s)))?;
    let bundle = client
        .trust_bundle()
        .await
        .map_err(|s| IdentityError::Rpc(Box::new(s)))?;
    let identity = Identity::from_parts(ders(&chain)?, key, ders(&bundle)?)?;
    check_issued(cfg, identity.spiffe_id())?;
    Ok(identity)
}

/// The issued identity must be the one asked for, or at least of the expected trust domain.
fn check_issued(cfg: &IdentityConfig, got: &SpiffeId) -> Result<(), IdentityError> {
    let want = match (&cfg.id, &cfg.trust_domain) {
        (Some(id), _) => (id != got).then(|| id.to_string()),
        (None, Some(td)) => (got.trust_domain() != td).then(|| format!("an identity of {td}")),
        (None, None) => None,
    };
    match want {
        None => Ok(()),
        Some(want) => Err(IdentityError::UnexpectedIdentity {
            got: got.clone(),
            want,
        }),
    }
}

/// A P-256 key made here and a CSR naming the identity we expect, if any (citadel ignores the
/// names, they only document the request). The key leaves this function as DER in memory only.
fn key_and_csr(cfg: &IdentityConfig) -> Result<(PrivateKeyDer<'static>, String), IdentityError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    if let Some(id) = &cfg.id {
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
    }
    let csr = params.serialize_request(&key)?.pem()?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((der, csr))
}

/// A missing token file is not an error while a valid certificate can authenticate instead.
async fn read_token(
    cfg: &IdentityConfig,
    have_cert: bool,
) -> Result<Option<String>, IdentityError> {
    let Some(path) = &cfg.token_path else {
        return Ok(None);
    };
    match tokio::fs::read_to_string(path).await {
        Ok(t) => Ok(Some(t.trim().to_owned()).filter(|t| !t.is_empty())),
        Err(e) if have_cert && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Token {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn ders(pems: &[String]) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    pems.iter()
        .map(|p| {
            CertificateDer::from_pem_slice(p.as_bytes())
                .map_err(|e| IdentityError::Parse(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    #[test]
    fn an_identity_asked_for_must_be_the_one_issued() {
        let cfg = IdentityConfig::new("ca:15012", id("spiffe://td/ns/a/sa/b"), vec![]);
        assert!(check_issued(&cfg, &id("spiffe://td/ns/a/sa/b")).is_ok());
        let err = check_issued(&cfg, &id("spiffe://td/ns/a/sa/c")).unwrap_err();
        assert!(
            matches!(&err, IdentityError::UnexpectedIdentity { want, .. } if want == "spiffe://td/ns/a/sa/b"),
            "{err}"
        );
    }

    #[test]
    fn a_token_identity_must_be_of_the_trust_domain() {
        let cfg = IdentityConfig::for_token_identity("ca:15012", "cluster.local", vec![]);
        assert!(check_issued(&cfg, &id("spiffe://cluster.local/ns/a/sa/b")).is_ok());
        // A domain that merely starts like ours is another one.
        for other in [
            "spiffe://cluster.local.evil/ns/a/sa/b",
            "spiffe://cluster.loca/ns/a/sa/b",
        ] {
            assert!(check_issued(&cfg, &id(other)).is_err(), "{other}");
        }
    }
}
