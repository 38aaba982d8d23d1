//! Renewal: a workload proves who it is with a still-valid certificate from this CA, presented
//! as its TLS client certificate. The TLS layer only checks possession of the key; the chain,
//! expiry and identity are checked here against the trust bundle in force, so a stale or
//! foreign certificate is answered with UNAUTHENTICATED and a reason instead of a failed
//! handshake.

use std::sync::Arc;

use mesh_identity::{SpiffeId, spiffe_id_of};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::UnixTime;

use super::{AuthError, Authenticator, Caller};
use crate::ca::Ca;

pub struct CertAuthenticator {
    ca: Arc<Ca>,
    provider: Arc<CryptoProvider>,
}

impl CertAuthenticator {
    pub fn new(ca: Arc<Ca>) -> Self {
        Self {
            ca,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }
}

#[tonic::async_trait]
impl Authenticator for CertAuthenticator {
    fn name(&self) -> &'static str {
        "certificate"
    }

    async fn authenticate(&self, caller: &Caller<'_>) -> Result<Option<SpiffeId>, AuthError> {
        let Some((leaf, intermediates)) = caller.peer_certs.and_then(|c| c.split_first()) else {
            return Ok(None);
        };
        let mut roots = RootCertStore::empty();
        for root in self.ca.roots() {
            roots
                .add(root.clone())
                .map_err(|e| AuthError::Certificate(format!("trust bundle: {e}")))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| AuthError::Certificate(e.to_string()))?;
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| AuthError::Certificate(e.to_string()))?;

        let id = spiffe_id_of(leaf).map_err(|e| AuthError::Certificate(e.to_string()))?;
        if id.trust_domain() != self.ca.trust_domain() {
            return Err(AuthError::ForeignTrustDomain {
                got: id.trust_domain().to_owned(),
                want: self.ca.trust_domain().to_owned(),
            });
        }
        Ok(Some(id))
    }
}
