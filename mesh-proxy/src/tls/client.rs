//! The outbound side: presents the workload certificate and checks the server's SPIFFE ID.

use std::fmt;
use std::sync::Arc;

use mesh_identity::spiffe_id_of;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::server::check_trust_domain;
use super::{PeerIdentityError, provider};
use crate::identity::{CurrentIdentity, IdentityHandle};

/// TLS 1.3 with the workload certificate, the server verified against the current trust
/// bundle and required to be one of `expected` (the SPIFFE IDs pilot gives for the endpoint).
/// An empty `expected` accepts any identity of our trust domain that the roots vouch for, as
/// Istio does when no service account is known. The server name passed to `connect` is only
/// SNI: SPIFFE IDs replace host names. No ALPN is offered; set `alpn_protocols` on a clone per
/// upstream.
pub fn client_config(
    source: IdentityHandle,
    expected: Vec<String>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    client_config_with(Arc::new(source), expected)
}

/// [`client_config`] for an identity that may not exist yet: until it does, handshakes fail.
pub fn client_config_with(
    source: Arc<dyn CurrentIdentity>,
    expected: Vec<String>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = SpiffeServerVerifier {
        source: source.clone(),
        expected,
        provider: provider.clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(CurrentClientCert(source)));
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

struct CurrentClientCert(Arc<dyn CurrentIdentity>);

impl fmt::Debug for CurrentClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentClientCert")
    }
}

impl ResolvesClientCert for CurrentClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current_identity()?.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// WebPKI chain validation (signature, validity period, serverAuth usage) against the roots
/// in force at handshake time, then the SPIFFE ID instead of a host name.
struct SpiffeServerVerifier {
    source: Arc<dyn CurrentIdentity>,
    expected: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let identity = self
            .source
            .current_identity()
            .ok_or(PeerIdentityError::NoLocalIdentity)?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            identity.roots(),
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let got = spiffe_id_of(end_entity).map_err(PeerIdentityError::NoSpiffeId)?;
        if self.expected.is_empty() {
            check_trust_domain(identity.spiffe_id(), got)?;
        } else if !self.expected.iter().any(|e| got == e.as_str()) {
            return Err(PeerIdentityError::Unexpected {
                got,
                expected: self.expected.clone(),
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    mesh_identity::provider_signature_checks!();
}
