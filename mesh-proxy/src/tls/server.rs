//! The inbound side: presents the workload certificate and requires one from the client.

use std::fmt;
use std::sync::Arc;

use mesh_identity::{SpiffeId, spiffe_id_of};
use rustls::DistinguishedName;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerConfig, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::peer_exchange::ALPN_PEER_EXCHANGE;
use super::{ALPN_H2, ALPN_HTTP11, PeerIdentityError, provider};
use crate::identity::{CurrentIdentity, IdentityHandle};

/// TLS 1.3, client certificate mandatory and verified against the current trust bundle,
/// ALPN `h2`, `http/1.1` and the TCP peer metadata exchange (picked only when a mesh client
/// offers it, see [`super::peer_exchange`]). Read the client's identity with [`super::peer_spiffe_id`].
pub fn server_config(source: IdentityHandle) -> Result<Arc<ServerConfig>, rustls::Error> {
    server_config_with(Arc::new(source))
}

/// [`server_config`] for an identity that may not exist yet: until it does, every handshake
/// fails (nothing to present, no roots to verify with).
pub fn server_config_with(
    source: Arc<dyn CurrentIdentity>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = provider();
    let verifier = LatestRootsVerifier {
        source: source.clone(),
        provider: provider.clone(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(CurrentCert(source)));
    config.alpn_protocols = vec![
        ALPN_H2.to_vec(),
        ALPN_HTTP11.to_vec(),
        ALPN_PEER_EXCHANGE.to_vec(),
    ];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Presents whatever identity is current when the handshake starts.
pub(super) struct CurrentCert(pub(super) Arc<dyn CurrentIdentity>);

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current_identity()?.certified_key())
    }
}

/// WebPKI client verification against the roots in force at handshake time, plus a SPIFFE ID
/// of our own trust domain (policy and telemetry need one; a mesh certificate without it is
/// not a workload's).
struct LatestRootsVerifier {
    source: Arc<dyn CurrentIdentity>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for LatestRootsVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LatestRootsVerifier")
    }
}

/// A peer of another trust domain is refused even if a shared root vouches for it.
pub(super) fn check_trust_domain(own: &SpiffeId, peer: SpiffeId) -> Result<(), PeerIdentityError> {
    if peer.trust_domain() == own.trust_domain() {
        Ok(())
    } else {
        Err(PeerIdentityError::ForeignTrustDomain {
            want: own.trust_domain().to_owned(),
            got: peer,
        })
    }
}

impl ClientCertVerifier for LatestRootsVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    // No CA names in the CertificateRequest: the client has one certificate to offer anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let own = self
            .source
            .current_identity()
            .ok_or(PeerIdentityError::NoLocalIdentity)?;
        WebPkiClientVerifier::builder_with_provider(own.roots().clone(), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_client_cert(end_entity, intermediates, now)?;
        let got = spiffe_id_of(end_entity).map_err(PeerIdentityError::NoSpiffeId)?;
        check_trust_domain(own.spiffe_id(), got)?;
        Ok(ClientCertVerified::assertion())
    }

    mesh_identity::provider_signature_checks!();
}
