//! An upstream endpoint as the balancer sees it, with its count of requests in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One upstream endpoint as the balancer sees it.
#[derive(Debug)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// Relative share of traffic; 0 is treated as 1.
    pub weight: u32,
    /// In-flight requests, read by LEAST_REQUEST.
    active_requests: AtomicUsize,
    /// How connections to it are secured (plaintext unless the cluster's TLS says otherwise).
    pub transport: crate::upstream::Transport,
}

impl Endpoint {
    pub fn new(address: SocketAddr, weight: u32) -> Self {
        Self {
            address,
            weight: weight.max(1),
            active_requests: AtomicUsize::new(0),
            transport: crate::upstream::Transport::Plain,
        }
    }

    pub fn with_transport(mut self, transport: crate::upstream::Transport) -> Self {
        self.transport = transport;
        self
    }

    pub fn active_requests(&self) -> usize {
        // Relaxed: the count is a load hint, it orders nothing else.
        self.active_requests.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard {
            endpoint: Arc::clone(self),
        }
    }

    /// The weight the algorithms use; the field is public, so 0 is guarded here too.
    pub(super) fn effective_weight(&self) -> u64 {
        u64::from(self.weight.max(1))
    }
}

/// Keeps one request counted on its endpoint while alive.
#[must_use = "the request only counts as in flight while the guard is alive"]
#[derive(Debug)]
pub struct RequestGuard {
    endpoint: Arc<Endpoint>,
}

impl RequestGuard {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

/// An endpoint a balancer chose, counted in flight while this lives.
#[must_use = "the request only counts as in flight while the pick is alive"]
#[derive(Debug)]
pub struct Picked {
    /// The endpoint's index in the balancer, so a retry can prefer another one.
    pub index: usize,
    guard: RequestGuard,
}

impl Picked {
    pub(super) fn new(index: usize, guard: RequestGuard) -> Self {
        Self { index, guard }
    }

    /// A pick outside any balancer (an original destination): counted on `endpoint` alike.
    pub fn single(endpoint: &Arc<Endpoint>) -> Self {
        Self {
            index: 0,
            guard: endpoint.start_request(),
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        self.guard.endpoint()
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.endpoint
            .active_requests
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "198.18.0.1:8080".parse().unwrap()
    }

    #[test]
    fn zero_weight_counts_as_one() {
        assert_eq!(Endpoint::new(addr(), 0).weight, 1);
        assert_eq!(Endpoint::new(addr(), 7).weight, 7);
        let mut e = Endpoint::new(addr(), 3);
        e.weight = 0;
        assert_eq!(e.effective_weight(), 1);
    }

    #[test]
    fn guards_count_requests_in_flight() {
        let e = Arc::new(Endpoint::new(addr(), 1));
        assert_eq!(e.active_requests(), 0);
        let a = e.start_request();
        let b = e.start_request();
        assert_eq!(e.active_requests(), 2);
        assert!(Arc::ptr_eq(a.endpoint(), &e));
        drop(a);
        assert_eq!(e.active_requests(), 1);
        drop(b);
        assert_eq!(e.active_requests(), 0);
    }
}
