//! Identity checks made during a handshake.

use mesh_identity::{CertIdentityError, SpiffeId};

/// Why a verified peer certificate is still refused. Carried in
/// `rustls::CertificateError::Other`, so the handshake error names the identity.
#[derive(thiserror::Error)]
pub enum PeerIdentityError {
    #[error("peer certificate names no workload: {0}")]
    NoSpiffeId(CertIdentityError),
    #[error("peer identity {got} is not one of the expected {expected:?}")]
    Unexpected {
        got: SpiffeId,
        expected: Vec<String>,
    },
    #[error("peer identity {got} is not of the trust domain {want}")]
    ForeignTrustDomain { got: SpiffeId, want: String },
    #[error("this proxy has no workload certificate yet")]
    NoLocalIdentity,
}

impl From<PeerIdentityError> for rustls::Error {
    fn from(e: PeerIdentityError) -> Self {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(e),
        )))
    }
}

// rustls shows an `OtherError` with `{:?}`: make that the readable message.
impl std::fmt::Debug for PeerIdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
