//! Endpoints for the unit tests, in the range the project reserves for test hosts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::endpoint::Endpoint;

pub(super) fn addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8);
    SocketAddr::new(IpAddr::V4(ip), 8080)
}

/// Endpoint `i` at `addr(i)` with weight `weights[i]`.
pub(super) fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Arc::new(Endpoint::new(addr(i), w)))
        .collect()
}
