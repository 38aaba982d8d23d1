//! TLS for the CA's gRPC endpoint: a serving certificate the CA issues to itself (and renews at
//! half its life), and optional client certificates whose chain is judged by
//! [`crate::auth::CertAuthenticator`], not here.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_identity::ring_provider;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DistinguishedName, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use time::OffsetDateTime;

use crate::ca::{Ca, SignError};

/// The CA's own certificate is short-lived like a workload's.
const SERVING_VALIDITY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("serving certificate: {0}")]
    Issue(#[from] SignError),
}

/// Server config for the gRPC endpoint: HTTP/2 only, client certificate optional.
pub fn server_config(ca: Arc<Ca>, server_names: Vec<String>) -> Result<ServerConfig, TlsError> {
    let provider = ring_provider();
    let resolver = RenewingCert::new(ca, server_names, provider.clone())?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(PossessionOnly { provider }))
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts any client certificate whose key signed the handshake. The chain is checked by the
/// certificate authenticator, with the roots in force at call time, and only if it is enabled.
#[derive(Debug)]
struct PossessionOnly {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PossessionOnly {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    mesh_identity::provider_signature_checks!();
}

/// The serving certificate, re-issued on the first handshake past half its lifetime.
struct RenewingCert {
    ca: Arc<Ca>,
    names: Vec<String>,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    renew_at: OffsetDateTime,
}

impl fmt::Debug for RenewingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenewingCert")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl RenewingCert {
    fn new(
        ca: Arc<Ca>,
        names: Vec<String>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let current = issue(&ca, &names, &provider)?;
        Ok(Self {
            ca,
            names,
            provider,
            current: Mutex::new(current),
        })
    }
}

impl ResolvesServerCert for RenewingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if OffsetDateTime::now_utc() >= current.renew_at {
            match issue(&self.ca, &self.names, &self.provider) {
                Ok(fresh) => *current = fresh,
                // Keep serving the old one: it is still valid for the other half of its life.
                Err(e) => tracing::warn!(error = %e, "renewing the serving certificate failed"),
            }
        }
        Some(current.key.clone())
    }
}

fn issue(ca: &Ca, names: &[String], provider: &CryptoProvider) -> Result<Current, TlsError> {
    let serving = ca.issue_serving_cert(names, SERVING_VALIDITY)?;
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(serving.key))?;
    let renew_at = serving.not_before + (serving.not_after - serving.not_before) / 2;
    Ok(Current {
        key: Arc::new(CertifiedKey::new(serving.chain, key)),
        renew_at,
    })
}
