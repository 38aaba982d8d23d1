//! The workload's own certificate, in the manner of Istio's SecretManager.
//!
//! The proxy makes its P-256 key in memory, sends a CSR for its SPIFFE ID to citadel, and
//! publishes the issued chain, the key and the trust bundle as one immutable [`Identity`]
//! through a `watch` channel ([`IdentityHandle`]). TLS configs read the latest value at each
//! handshake, so a renewed certificate serves new connections at once and open connections are
//! left alone. Renewal happens at about half the remaining lifetime; when citadel cannot be
//! reached the current certificate stays in force and the call is retried with backoff.
//!
//! The key is never written, logged or serialized: [`Identity`]'s `Debug` leaves it out and
//! nothing in this module exposes its bytes.

mod cert;
mod config;
mod error;
mod fetch;
mod schedule;
mod slot;
mod source;

pub use cert::Identity;
pub use config::{CITADEL_RETRY, IdentityConfig};
pub use error::IdentityError;
pub use schedule::{jittered_renewal, renewal_delay};
pub use slot::{CurrentIdentity, IdentitySlot};
pub use source::{IdentityHandle, IdentitySource};
