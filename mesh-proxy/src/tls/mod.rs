//! mTLS between proxies: TLS 1.3 only, SPIFFE identities instead of host names.
//!
//! Both configs read the latest [`crate::identity::Identity`] at each handshake (certificate
//! and roots), so a renewal or a root rotation needs no rebuild and leaves open connections
//! alone. Session resumption is off on both sides: a resumed session would skip the
//! certificate exchange, and with it the identity checks and the rotated certificate.

mod client;
mod error;
mod origination;
mod peer;
pub mod peer_exchange;
mod server;
mod sniff;
mod termination;
mod xfcc;

pub use client::{client_config, client_config_with};
pub use error::PeerIdentityError;
pub use origination::{Origination, OriginationError, origination_config};
pub use peer::peer_spiffe_id;
pub use server::{server_config, server_config_with};
pub use sniff::{SNIFF_TIMEOUT, looks_like_tls, sniff_tls};
pub use termination::{RELOAD_CHECK, Termination, TerminationError};
pub use xfcc::{XFCC, xfcc};

use mesh_identity::ring_provider as provider;

/// ALPN the inbound side offers; the client picks per upstream protocol.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
