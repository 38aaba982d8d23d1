//! mesh-citadel: the certificate authority of the mesh.
//!
//! Workloads send a CSR for a key that never leaves them; the CA authenticates the caller
//! ([`auth`]), ignores whatever names the CSR asks for, and signs the caller's SPIFFE identity
//! ([`Ca::sign`]). [`serve`] runs the gRPC service (`mesh.ca.v1.CertificateService`) over TLS;
//! [`client::CitadelClient`] (from `mesh-identity`) is the other end, for proxies and tests.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use mesh_citadel::auth::{AnyOf, CertAuthenticator, TokenAuthenticator};
//! use mesh_citadel::Ca;
//!
//! // First start creates a P-256 root in the directory; later starts reuse it.
//! let ca = Arc::new(Ca::load_or_create("/var/lib/citadel".as_ref(), "cluster.local")?);
//! let auth = AnyOf::new(vec![
//!     Arc::new(CertAuthenticator::new(ca.clone())),
//!     Arc::new(TokenAuthenticator::new("/var/lib/citadel-tokens", "cluster.local")),
//! ]);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:15012").await?;
//! mesh_citadel::serve(listener, ca, Arc::new(auth)).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod auth;
mod ca;
mod conn;
mod csr;
pub mod kube;
mod random;
mod server;
mod service;
pub mod store;
mod tls;
pub mod validity;

pub use ca::{Ca, CaError, ServingCert, SignError};
pub use conn::PeerInfo;
pub use csr::CsrError;
pub use mesh_identity::{SpiffeId, SpiffeIdError, client};
pub use server::{DEFAULT_SERVER_NAMES, ServeError, ServeOptions, serve, serve_with_shutdown};
pub use service::CaService;
pub use validity::ValidityPolicy;
