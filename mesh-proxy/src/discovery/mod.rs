//! The proxy's side of the discovery protocol: it connects to pilot with its identity, applies
//! each pushed config atomically, ACKs or NACKs it, and reconnects with backoff. When pilot is
//! gone the proxy keeps serving on its last config.

mod client;
mod merge;

pub use client::{DiscoveryClient, Held};
pub use merge::merge_endpoints;
