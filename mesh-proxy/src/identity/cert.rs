//! One issued identity: chain, key and trust bundle, immutable once built.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_identity::{SpiffeId, spiffe_id_in};
use rustls::RootCertStore;
use rustls::crypto::ring;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::IdentityError;

/// A workload certificate with its key and the roots that verify peers.
///
/// Built either from citadel's answer or, for tests and static setups, by
/// [`Identity::from_parts`]. The key is only reachable as a rustls signer.
pub struct Identity {
    spiffe_id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    /// Kept as DER only to authenticate the renewal call to citadel with this certificate.
    key: PrivateKeyDer<'static>,
    certified: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    trust_bundle: Vec<CertificateDer<'static>>,
    not_after: SystemTime,
    serial: String,
}

// Hand-written so that `{:?}` can never print the key.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("chain_len", &self.chain.len())
            .field("roots", &self.trust_bundle.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Assembles an identity from a chain (leaf first), the leaf's PKCS#8 key and the trust
    /// bundle. The leaf must carry exactly one `spiffe://` URI SAN, a workload's, and match the key. An
    /// expired chain is accepted here: refusing it is the peer's job.
    pub fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        trust_bundle: Vec<CertificateDer<'static>>,
    ) -> Result<Self, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::EmptyChain)?;
        let (spiffe_id, not_after, serial) = {
            let (_, cert) = x509_parser::parse_x509_certificate(leaf)
                .map_err(|e| IdentityError::Parse(e.to_string()))?;
            let spiffe_id = spiffe_id_in(&cert)?;
            let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
            let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            (spiffe_id, not_after, cert.raw_serial_as_string())
        };
        let signer = ring::default_provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        let certified = CertifiedKey::new(chain.clone(), signer);
        certified
            .keys_match()
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for root in &trust_bundle {
            roots
                .add(root.clone())
                .map_err(|e| IdentityError::Roots(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(IdentityError::Roots("no root certificate".into()));
        }
        Ok(Self {
            spiffe_id,
            chain,
            key,
            certified: Arc::new(certified),
            roots: Arc::new(roots),
            trust_bundle,
            not_after,
            serial,
        })
    }

    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// Leaf first, as sent in a TLS `Certificate` message.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf's serial number, colon-separated hex (for logs and tests).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Every root in force; more than one while a root is being rotated.
    pub fn trust_bundle(&self) -> &[CertificateDer<'static>] {
        &self.trust_bundle
    }

    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// The chain and a signer for its key, as rustls presents them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    pub(super) fn key_for_renewal(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert_with_uris(uris: &[&str]) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["ignored.example".to_owned()]).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        (params.self_signed(&key).unwrap().der().clone(), key)
    }

    #[test]
    fn debug_leaves_the_key_out() {
        let (cert, key) = cert_with_uris(&["spiffe://td/ns/a/sa/b"]);
        let der = key.serialize_der();
        let id = Identity::from_parts(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(der.clone().into()),
            vec![cert],
        )
        .unwrap();
        let shown = format!("{id:?}");
        assert!(shown.contains("spiffe://td/ns/a/sa/b"), "{shown}");
        assert!(!shown.contains(&format!("{:?}", &der[..16])), "{shown}");
        assert!(!shown.to_lowercase().contains("key:"), "{shown}");
    }

    #[test]
    fn a_key_that_does_not_match_the_leaf_is_refused() {
        let (cert, _) = cert_with_uris(&["spiffe://td/ns/a/sa/b"]);
        let other = KeyPair::generate().unwrap();
        let err = Identity::from_parts(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(other.serialize_der().into()),
            vec![cert],
        )
        .unwrap_err();
        assert!(matches!(err, IdentityError::Key(_)), "{err}");
    }
}
