//! Why an identity could not be built or fetched.

use mesh_identity::SpiffeId;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate chain is empty")]
    EmptyChain,
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("leaf certificate names no workload: {0}")]
    NoSpiffeId(#[from] mesh_identity::CertIdentityError),
    #[error("citadel issued {got}, expected {want}")]
    UnexpectedIdentity { got: SpiffeId, want: String },
    #[error("private key: {0}")]
    Key(String),
    #[error("trust bundle: {0}")]
    Roots(String),
    #[error("making the key or CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("connecting to citadel: {0}")]
    Connect(#[from] mesh_identity::client::ClientError),
    /// Boxed: a `Status` is large and this error travels in every `Result` of the module.
    #[error("citadel refused: {0}")]
    Rpc(Box<tonic::Status>),
    #[error("citadel did not answer within {0:?}")]
    Timeout(std::time::Duration),
}
