//! Load balancing: which endpoint of a cluster (or subset) a request attempt goes to.
//!
//! Pure decision code, on every request's hot path: a `Balancer` is built once per endpoint
//! list, off the request path, and `pick` then takes `&self` from any thread without locks or
//! allocation. The algorithms and their defaults follow Envoy, as Istio configures it.

#![forbid(unsafe_code)]

mod endpoint;
mod exclude;
mod hash;
mod least_request;
mod maglev;
mod random;
mod ring_hash;
mod rng;
mod round_robin;
mod weights;

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

pub use endpoint::{Endpoint, Picked, RequestGuard};
pub use hash::hash_key;

use exclude::Exclude;
use maglev::Maglev;
use ring_hash::Ring;
use rng::Rng;
use round_robin::RoundRobin;
use weights::Weights;

/// The load-balancing algorithm of a cluster (Istio's `simple` and `consistentHash` policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    Maglev,
}

/// A balancer over a fixed endpoint list (rebuilt when the list changes).
pub struct Balancer {
    policy: Policy,
    endpoints: Vec<Arc<Endpoint>>,
    rng: Rng,
    state: State,
}

/// What each algorithm precomputes from the list.
enum State {
    RoundRobin(RoundRobin),
    LeastRequest(Weights),
    Random(Weights),
    RingHash(Ring),
    Maglev(Maglev),
    /// No endpoints, or one: nothing to decide.
    Trivial,
}

impl Balancer {
    pub fn new(policy: Policy, endpoints: Vec<Arc<Endpoint>>) -> Self {
        Self::with_seed(policy, endpoints, Rng::entropy_seed())
    }

    /// Like `new`, with a fixed seed for the random draws and the round-robin start, so that a
    /// test sees the same picks on every run.
    pub fn with_seed(policy: Policy, endpoints: Vec<Arc<Endpoint>>, seed: u64) -> Self {
        let weights = || Weights::new(endpoints.iter().map(|e| e.effective_weight()));
        let state = match policy {
            _ if endpoints.len() < 2 => State::Trivial,
            Policy::RoundRobin => {
                let w: Vec<u64> = endpoints.iter().map(|e| e.effective_weight()).collect();
                State::RoundRobin(RoundRobin::new(&w, seed as usize))
            }
            Policy::LeastRequest => State::LeastRequest(weights()),
            Policy::Random => State::Random(weights()),
            Policy::RingHash => State::RingHash(Ring::new(&endpoints)),
            Policy::Maglev => State::Maglev(Maglev::new(&endpoints)),
        };
        Self {
            policy,
            endpoints,
            rng: Rng::new(seed),
            state,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Picks an endpoint and counts the request (or connection) in flight on it until the
    /// returned [`Picked`] drops: the one entry point of every caller, so LEAST_REQUEST sees
    /// HTTP attempts, upgraded streams and TCP connections alike. `hash` and `exclude` as for `pick`.
    pub fn start(&self, hash: Option<u64>, exclude: &[usize]) -> Option<Picked> {
        let index = self.pick(hash, exclude)?;
        Some(Picked::new(index, self.endpoints[index].start_request()))
    }

    /// Picks an endpoint index, without counting it in flight (callers go through `start`).
    /// `hash` is the request's hash key (Some for RingHash/Maglev when
    /// the request carries the configured header/cookie/query param/source ip; None falls back
    /// to a random point of the ring or table, which keeps the weights).
    /// `exclude` lists indexes already tried by earlier attempts of this request: a retry
    /// prefers another endpoint, but when every endpoint is excluded it may return an excluded
    /// one. None only when there are no endpoints.
    fn pick(&self, hash: Option<u64>, exclude: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        let exclude = Exclude::new(exclude, n);
        let key = || hash.unwrap_or_else(|| self.rng.next_u64());
        Some(match &self.state {
            State::Trivial if n == 0 => return None,
            State::Trivial => 0,
            State::RoundRobin(rr) => rr.pick(exclude),
            State::LeastRequest(w) => least_request::pick(&self.endpoints, w, &self.rng, exclude),
            State::Random(w) => random::pick(w, &self.rng, exclude),
            State::RingHash(ring) => ring.pick(key(), exclude),
            State::Maglev(maglev) => maglev.pick(key(), exclude),
        })
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("policy", &self.policy)
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}
