//! What the identity worker needs to know: where citadel is, who the workload is, and how to
//! prove it.

use std::path::PathBuf;
use std::time::Duration;

use mesh_identity::SpiffeId;
use rustls_pki_types::CertificateDer;

use crate::retry::{Backoff, Jitter};

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
    /// `None`: whatever identity the token proves (the CSR names none).
    pub id: Option<SpiffeId>,
    /// When set, an issued identity of another trust domain is refused.
    pub trust_domain: Option<String>,
    /// A file holding the workload's bearer token, read at each call so it may be replaced.
    /// Renewals also present the current certificate, so the token is needed only at first.
    pub token_path: Option<PathBuf>,
    /// Lifetime to ask for; `None` takes citadel's default (24 h).
    pub validity: Option<Duration>,
    /// Between failed calls to citadel.
    pub retry: Backoff,
    /// Bound on one connect + CSR + trust bundle round trip.
    pub request_timeout: Duration,
}

impl IdentityConfig {
    /// Asks for exactly `id`.
    pub fn new(
        citadel_addr: impl Into<String>,
        id: SpiffeId,
        ca_roots: Vec<CertificateDer<'static>>,
    ) -> Self {
        let trust_domain = id.trust_domain().to_owned();
        let mut cfg = Self::for_token_identity(citadel_addr, trust_domain, ca_roots);
        cfg.id = Some(id);
        cfg
    }

    /// Asks for the identity the caller's token proves, which must be of `trust_domain`.
    pub fn for_token_identity(
        citadel_addr: impl Into<String>,
        trust_domain: impl Into<String>,
        ca_roots: Vec<CertificateDer<'static>>,
    ) -> Self {
        Self {
            citadel_addr: citadel_addr.into(),
            citadel_server_name: "mesh-citadel".into(),
            ca_roots,
            id: None,
            trust_domain: Some(trust_domain.into()),
            token_path: None,
            validity: None,
            retry: CITADEL_RETRY,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The default wait between failed calls to citadel: 500 ms doubling to 30 s.
pub const CITADEL_RETRY: Backoff = Backoff::new(
    Duration::from_millis(500),
    Duration::from_secs(30),
    Jitter::None,
);
