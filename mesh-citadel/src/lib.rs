//! mesh-citadel: the certificate authority of the mesh.
//!
//! Workloads send a CSR for a key that never leaves them; the CA authenticates the caller
//! ([`auth`]), ignores whatever names the CSR asks for, and signs the caller's SPIFFE identity
//! ([`Ca::sign`]). [`serve`] runs the gRPC service (`mesh.ca.v1.CertificateService`) over TLS.

#![forbid(unsafe_code)]

pub mod auth;
mod ca;
pub mod client;
mod conn;
mod csr;
mod identity;
mod random;
mod server;
mod service;
pub mod store;
mod tls;
pub mod validity;

pub use ca::{Ca, CaError, ServingCert, SignError};
pub use conn::PeerInfo;
pub use csr::CsrError;
pub use identity::{IdentityError, SpiffeId};
pub use server::{DEFAULT_SERVER_NAMES, ServeError, ServeOptions, serve, serve_with_shutdown};
pub use service::CaService;
pub use validity::ValidityPolicy;
