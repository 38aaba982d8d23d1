//! mesh-identity: what the sidecar (mesh-proxy) and the CA (mesh-citadel) share about workload
//! identity, kept apart from both so the sidecar links neither the CA nor its Kubernetes client.
//!
//! - [`SpiffeId`]: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, parsed and
//!   checked in one place.
//! - [`spiffe_id_of`]: the one SPIFFE ID a certificate carries (its `spiffe://` URI SAN).
//! - [`client::CitadelClient`]: the CA's gRPC client (CSR and trust bundle over TLS).
//! - [`provider_signature_checks!`] and [`ring_provider`]: what every certificate verifier of
//!   the mesh shares.

#![forbid(unsafe_code)]

mod cert;
pub mod client;
mod spiffe;
mod verifier;

pub use cert::{CertIdentityError, spiffe_id_in, spiffe_id_of};
pub use spiffe::{SpiffeId, SpiffeIdError, check_trust_domain};
pub use verifier::ring_provider;

// The verifier macro names rustls through this path, so its callers need not depend on it.
#[doc(hidden)]
pub use rustls as __rustls;
