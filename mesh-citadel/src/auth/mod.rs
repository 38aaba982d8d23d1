//! Who is calling: the identity the CA will sign is decided here, never by the CSR.
//!
//! Each [`Authenticator`] looks for one kind of credential. `Ok(None)` means "no credential of
//! my kind", so several can be chained; `Err` means a credential was presented and is bad.
//! [`TokenReviewAuthenticator`] asks the Kubernetes API server about a service-account token.

mod cert;
mod token;
mod token_review;

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_identity::{SpiffeId, SpiffeIdError};
use rustls_pki_types::CertificateDer;
use tonic::metadata::MetadataMap;

pub use cert::CertAuthenticator;
pub use token::{TokenAuthenticator, write_token};
pub use token_review::{TokenReviewAuthenticator, identity_of_review};

/// What a caller presented with its request.
pub struct Caller<'a> {
    pub metadata: &'a MetadataMap,
    /// The TLS client certificate chain, leaf first, not yet verified.
    pub peer_certs: Option<&'a [CertificateDer<'static>]>,
    pub remote_addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `authorization: Bearer <token>` or a client certificate")]
    NoCredentials,
    #[error("authorization metadata is not `Bearer <token>`")]
    MalformedAuthorization,
    #[error("unknown token")]
    UnknownToken,
    #[error("token store {path}: {reason}")]
    TokenStore { path: String, reason: String },
    #[error("client certificate rejected: {0}")]
    Certificate(String),
    #[error("client certificate identity: {0}")]
    Identity(#[from] SpiffeIdError),
    #[error("client certificate is for trust domain {got}, this CA serves {want}")]
    ForeignTrustDomain { got: String, want: String },
    #[error("TokenReview failed: {0}")]
    TokenReview(String),
    #[error("token rejected by the Kubernetes API server: {0}")]
    TokenRejected(String),
    #[error("token is not for audience {want} (TokenReview audiences: {got:?})")]
    WrongAudience { want: String, got: Vec<String> },
    #[error("token is not a service account's: user {0:?}")]
    NotServiceAccount(String),
}

#[tonic::async_trait]
pub trait Authenticator: Send + Sync {
    /// Short name for logs ("token", "certificate").
    fn name(&self) -> &'static str;

    async fn authenticate(&self, caller: &Caller<'_>) -> Result<Option<SpiffeId>, AuthError>;
}

/// Tries each authenticator in order; the first that recognises the caller wins. When none
/// does, the first error is returned, so a bad token is reported as such.
pub struct AnyOf(Vec<Arc<dyn Authenticator>>);

impl AnyOf {
    pub fn new(authenticators: Vec<Arc<dyn Authenticator>>) -> Self {
        Self(authenticators)
    }
}

#[tonic::async_trait]
impl Authenticator for AnyOf {
    fn name(&self) -> &'static str {
        "any-of"
    }

    async fn authenticate(&self, caller: &Caller<'_>) -> Result<Option<SpiffeId>, AuthError> {
        let mut first_error = None;
        for auth in &self.0 {
            match auth.authenticate(caller).await {
                Ok(Some(id)) => return Ok(Some(id)),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(authenticator = auth.name(), error = %e, "authentication failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }
}
