//! What the identity worker needs to know: where citadel is, who the workload is, and how to
//! prove it.

use std::path::PathBuf;
use std::time::Duration;

use mesh_citadel::SpiffeId;
use rustls_pki_types::CertificateDer;

#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// `host:port` of citadel's gRPC endpoint (Istio: 15012).
    pub citadel_addr: String,
    /// The name citadel's serving certificate must carry.
    pub citadel_server_name: String,
    /// Roots that verify citadel before the first trust bundle arrives (Istio's
    /// `root-cert.pem`); the bundle citadel sends is used as well afterwards.
    pub ca_roots: Vec<CertificateDer<'static>>,
    /// The identity to ask for; citadel decides, and an answer for another one is refused.
    pub id: SpiffeId,
    /// A file holding the workload's bearer token, read at each call so it may be replaced.
    /// Renewals also present the current certificate, so the token is needed only at first.
    pub token_path: Option<PathBuf>,
    /// Lifetime to ask for; `None` takes citadel's default (24 h).
    pub validity: Option<Duration>,
    pub retry: RetryPolicy,
    /// Bound on one connect + CSR + trust bundle round trip.
    pub request_timeout: Duration,
}

impl IdentityConfig {
    pub fn new(
        citadel_addr: impl Into<String>,
        id: SpiffeId,
        ca_roots: Vec<CertificateDer<'static>>,
    ) -> Self {
        Self {
            citadel_addr: citadel_addr.into(),
            citadel_server_name: "mesh-citadel".into(),
            ca_roots,
            id,
            token_path: None,
            validity: None,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Exponential backoff between failed calls to citadel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}
