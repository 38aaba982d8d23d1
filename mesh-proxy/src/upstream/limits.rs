//! Circuit breakers of one cluster (DestinationRule `connectionPool`, Envoy's thresholds) and
//! its retry budget. Limits never queue beyond the pending limit: a request over a limit is
//! refused at once and answered 503 with `x-envoy-overloaded` by the caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mesh_proto::config::v1 as pb;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Envoy's default circuit-breaker thresholds, applied to every cluster whose config leaves
/// them unset, so no cluster (one HTTP/2 client multiplexing many requests, say) makes the
/// proxy open or queue without bound. Envoy's default of 3 retries at once is replaced by the
/// retry budget (which allows at least 3 too, more under load).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_MAX_PENDING_REQUESTS: usize = 1024;
pub const DEFAULT_MAX_REQUESTS: usize = 1024;

/// Envoy's retry budget defaults.
const DEFAULT_BUDGET_PERCENT: f64 = 20.0;
const DEFAULT_MIN_RETRY_CONCURRENCY: usize = 3;

/// The ceilings in force; `None` is no limit (only `max_requests_per_connection` and
/// `max_retries` are ever unlimited from config).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Thresholds {
    pub max_connections: Option<usize>,
    pub max_pending_requests: Option<usize>,
    pub max_requests: Option<usize>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<usize>,
    /// Used when `max_retries` is unset.
    pub retry_budget: Option<RetryBudget>,
}

/// Retries allowed at once: a share of the active and pending requests, at least a minimum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub percent: f64,
    pub min_concurrency: usize,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            percent: DEFAULT_BUDGET_PERCENT,
            min_concurrency: DEFAULT_MIN_RETRY_CONCURRENCY,
        }
    }
}

impl RetryBudget {
    /// Concurrent retries allowed while `active` requests are in flight or pending.
    pub fn allowed(&self, active: usize) -> usize {
        let share = (active as f64 * self.percent / 100.0).floor() as usize;
        share.max(self.min_concurrency)
    }
}

impl Thresholds {
    pub fn from_spec(
        limits: Option<&pb::CircuitBreakers>,
        budget: Option<&pb::RetryBudget>,
    ) -> Self {
        let limit = |v: u32| (v > 0).then_some(v as usize);
        let l = limits.cloned().unwrap_or_default();
        let retry_budget = match budget {
            Some(b) if b.disabled => None,
            Some(b) => Some(RetryBudget {
                percent: if b.budget_percent > 0.0 {
                    b.budget_percent.min(100.0)
                } else {
                    DEFAULT_BUDGET_PERCENT
                },
                min_concurrency: limit(b.min_retry_concurrency)
                    .unwrap_or(DEFAULT_MIN_RETRY_CONCURRENCY),
            }),
            None => Some(RetryBudget::default()),
        };
        Self {
            max_connections: limit(l.max_connections).or(Some(DEFAULT_MAX_CONNECTIONS)),
            max_pending_requests: limit(l.max_pending_requests)
                .or(Some(DEFAULT_MAX_PENDING_REQUESTS)),
            max_requests: limit(l.max_requests).or(Some(DEFAULT_MAX_REQUESTS)),
            max_requests_per_connection: (l.max_requests_per_connection > 0)
                .then_some(l.max_requests_per_connection),
            max_retries: limit(l.max_retries),
            retry_budget,
        }
    }

    /// Whether one more retry may start with `retries` retries, `active` requests in flight
    /// and `pending` requests waiting. An explicit `max_retries` replaces the budget, as in Envoy.
    pub fn retry_allowed(&self, retries: usize, active: usize, pending: usize) -> bool {
        match (self.max_retries, self.retry_budget) {
            (Some(max), _) => retries < max,
            (None, Some(budget)) => retries < budget.allowed(active + pending),
            (None, None) => true,
        }
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    #[error("too many active requests")]
    Requests,
    #[error("too many pending requests")]
    Pending,
    #[error("too many connections")]
    Connections,
}

/// A count that refuses to go past a ceiling instead of waiting.
#[derive(Debug, Default)]
struct Count(AtomicUsize);

impl Count {
    fn try_add(&self, ceiling: Option<usize>) -> bool {
        let Some(ceiling) = ceiling else {
            self.0.fetch_add(1, Ordering::AcqRel);
            return true;
        };
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < ceiling).then_some(n + 1)
            })
            .is_ok()
    }

    fn sub(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// The live state of a cluster's limits, shared by its requests and its pool.
#[derive(Debug)]
pub struct Limits {
    thresholds: Thresholds,
    requests: Count,
    /// HTTP/1.1 requests under a connection limit, on a connection or waiting for one: at
    /// most `max_connections + max_pending_requests`. One count, given back when the request
    /// ends, so a request let in from the wait never leaves a stale "pending" behind it.
    http1: Count,
    retries: Count,
    connections: Count,
    /// HTTP/2 requests waiting for a stream under `maxConcurrentStreams`: pending as well.
    waiting_for_stream: Count,
    /// HTTP/1.1 requests using a connection at once (one each): `max_connections` of them.
    /// Waiting here is what "pending" means; waiters are served in arrival order.
    h1_slots: Option<Arc<Semaphore>>,
    /// Woken when a connection closes, so a request waiting to open one tries again.
    connection_freed: Notify,
    overflow: Counter,
    retry_overflow: Counter,
}

/// One unit of a limit, given back when dropped.
#[must_use = "the limit is only held while this lives"]
#[derive(Debug)]
pub struct Held {
    limits: Arc<Limits>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Request,
    Http1,
    Retry,
    Connection,
    Pending,
}

impl Drop for Held {
    fn drop(&mut self) {
        match self.kind {
            Kind::Request => self.limits.requests.sub(),
            Kind::Http1 => self.limits.http1.sub(),
            Kind::Retry => self.limits.retries.sub(),
            Kind::Pending => self.limits.waiting_for_stream.sub(),
            Kind::Connection => {
                self.limits.connections.sub();
                self.limits.connection_freed.notify_waiters();
            }
        }
    }
}

/// What one upstream request holds until its response ends: its place among the active
/// requests and, for HTTP/1.1 under a connection limit, its connection slot.
#[must_use = "the request only counts while this lives"]
#[derive(Debug)]
pub struct Admission {
    _request: Held,
    _slot: Option<(Held, OwnedSemaphorePermit)>,
    /// Its stream on an HTTP/2 connection under `maxConcurrentStreams`.
    stream: Option<StreamHeld>,
}

impl Admission {
    /// Keeps `stream` counted on its connection until the response ends.
    pub fn hold_stream(&mut self, stream: StreamHeld) {
        self.stream = Some(stream);
    }
}

/// One stream in flight on an HTTP/2 connection under `maxConcurrentStreams`, given back
/// (and waiters woken) when dropped.
#[must_use = "the stream is only counted while this lives"]
#[derive(Debug)]
pub struct StreamHeld {
    in_flight: Arc<AtomicUsize>,
    freed: Arc<Notify>,
}

impl StreamHeld {
    /// Takes a stream on a connection with `in_flight` streams if fewer than `max` are.
    pub fn try_take(in_flight: &Arc<AtomicUsize>, max: usize, freed: &Arc<Notify>) -> Option<Self> {
        in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Self {
            in_flight: in_flight.clone(),
            freed: freed.clone(),
        })
    }
}

impl Drop for StreamHeld {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

impl Limits {
    pub fn new(thresholds: Thresholds, overflow: Counter, retry_overflow: Counter) -> Arc<Self> {
        Arc::new(Self {
            h1_slots: thresholds
                .max_connections
                .map(|n| Arc::new(Semaphore::new(n))),
            thresholds,
            requests: Count::default(),
            http1: Count::default(),
            retries: Count::default(),
            connections: Count::default(),
            waiting_for_stream: Count::default(),
            connection_freed: Notify::new(),
            overflow,
            retry_overflow,
        })
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Admits one upstream request (every attempt is one). An HTTP/1.1 request waits for a
    /// connection slot when the connections are all busy, if the pending limit has room.
    pub async fn admit(self: &Arc<Self>, http1: bool) -> Result<Admission, Overflow> {
        if !self.requests.try_add(self.thresholds.max_requests) {
            return Err(self.overflowed(Overflow::Requests));
        }
        let request = self.held(Kind::Request);
        let slot = match (&self.h1_slots, http1) {
            (Some(slots), true) => Some(self.h1_slot(slots).await?),
            _ => None,
        };
        Ok(Admission {
            _request: request,
            _slot: slot,
            stream: None,
        })
    }

    async fn h1_slot(
        self: &Arc<Self>,
        slots: &Arc<Semaphore>,
    ) -> Result<(Held, OwnedSemaphorePermit), Overflow> {
        let ceiling = self
            .thresholds
            .max_connections
            .zip(self.thresholds.max_pending_requests)
            .map(|(c, p)| c + p);
        if !self.http1.try_add(ceiling) {
            return Err(self.overflowed(Overflow::Pending));
        }
        let counted = self.held(Kind::Http1);
        let permit = slots.clone().acquire_owned().await;
        Ok((counted, permit.expect("the slots are never closed")))
    }

    /// Requests waiting: HTTP/1.1 ones for a connection slot, HTTP/2 ones for a stream.
    pub fn pending_requests(&self) -> usize {
        let connections = self.thresholds.max_connections.unwrap_or(usize::MAX);
        self.http1.get().saturating_sub(connections) + self.waiting_for_stream.get()
    }

    /// One more HTTP/2 request waiting for a stream, if the pending limit has room.
    pub fn try_pending(self: &Arc<Self>) -> Result<Held, Overflow> {
        if !self
            .waiting_for_stream
            .try_add(self.thresholds.max_pending_requests)
        {
            return Err(self.overflowed(Overflow::Pending));
        }
        Ok(self.held(Kind::Pending))
    }

    /// One more retry in flight, if the retry limit or budget allows it; counted while held.
    pub fn try_retry(self: &Arc<Self>) -> Option<Held> {
        let allowed = self.thresholds.retry_allowed(
            self.retries.get(),
            self.requests.get(),
            self.pending_requests(),
        );
        // A race between two retries may pass one over the budget; the count stays right.
        if !allowed {
            self.retry_overflow.inc();
            return None;
        }
        self.retries.try_add(None);
        Some(self.held(Kind::Retry))
    }

    /// One more open connection, if the connection limit has room.
    pub fn try_connection(self: &Arc<Self>) -> Option<Held> {
        self.connections
            .try_add(self.thresholds.max_connections)
            .then(|| self.held(Kind::Connection))
    }

    /// Resolves at the next connection close; create it before `try_connection` so a close
    /// in between is not missed.
    pub fn connection_freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.connection_freed.notified()
    }

    /// Wakes requests waiting for room under `maxConnections` (an idle connection is back).
    pub fn wake_connection_waiters(&self) {
        self.connection_freed.notify_waiters();
    }

    /// Counts a refusal; the caller answers it.
    pub fn overflowed(&self, overflow: Overflow) -> Overflow {
        self.overflow.inc();
        overflow
    }

    pub fn active_requests(&self) -> usize {
        self.requests.get()
    }

    fn held(self: &Arc<Self>, kind: Kind) -> Held {
        Held {
            limits: self.clone(),
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cb: pb::CircuitBreakers, budget: Option<pb::RetryBudget>) -> Arc<Limits> {
        Limits::new(
            Thresholds::from_spec(Some(&cb), budget.as_ref()),
            Counter::default(),
            Counter::default(),
        )
    }

    #[test]
    fn unset_limits_are_envoys_defaults_and_the_budget_is_on() {
        let t = Thresholds::from_spec(None, None);
        assert_eq!(t.max_connections, Some(1024));
        assert_eq!(t.max_pending_requests, Some(1024));
        assert_eq!(t.max_requests, Some(1024));
        assert_eq!(t.max_requests_per_connection, None);
        assert_eq!(t.max_retries, None);
        assert_eq!(t.retry_budget, Some(RetryBudget::default()));
        let off = pb::RetryBudget {
            disabled: true,
            ..Default::default()
        };
        assert_eq!(Thresholds::from_spec(None, Some(&off)).retry_budget, None);
    }

    #[test]
    fn budget_is_a_share_of_active_requests_with_a_floor() {
        let b = RetryBudget::default();
        assert_eq!(b.allowed(0), 3);
        assert_eq!(b.allowed(14), 3);
        assert_eq!(b.allowed(20), 4);
        assert_eq!(b.allowed(100), 20);
        let t = Thresholds::from_spec(None, None);
        assert!(t.retry_allowed(2, 0, 0));
        assert!(!t.retry_allowed(3, 0, 0));
        assert!(
            t.retry_allowed(9, 40, 10),
            "pending requests count as active"
        );
        assert!(!t.retry_allowed(10, 40, 10));
    }

    #[test]
    fn max_retries_replaces_the_budget() {
        let cb = pb::CircuitBreakers {
            max_retries: 1,
            ..Default::default()
        };
        let t = Thresholds::from_spec(Some(&cb), None);
        assert!(t.retry_allowed(0, 0, 0));
        assert!(!t.retry_allowed(1, 1000, 0));
        let unlimited = Thresholds::from_spec(
            None,
            Some(&pb::RetryBudget {
                disabled: true,
                ..Default::default()
            }),
        );
        assert!(unlimited.retry_allowed(10_000, 0, 0));
    }

    #[test]
    fn retries_are_counted_while_held() {
        let l = limits(
            pb::CircuitBreakers {
                max_retries: 2,
                ..Default::default()
            },
            None,
        );
        let a = l.try_retry().unwrap();
        let _b = l.try_retry().unwrap();
        assert!(l.try_retry().is_none());
        assert_eq!(l.retry_overflow.get(), 1);
        drop(a);
        assert!(l.try_retry().is_some());
    }

    #[tokio::test]
    async fn active_requests_over_the_limit_overflow_at_once() {
        let l = limits(
            pb::CircuitBreakers {
                max_requests: 2,
                ..Default::default()
            },
            None,
        );
        let a = l.admit(false).await.unwrap();
        let _b = l.admit(true).await.unwrap();
        assert_eq!(l.admit(false).await.unwrap_err(), Overflow::Requests);
        assert_eq!(l.overflow.get(), 1);
        drop(a);
        assert_eq!(l.active_requests(), 1);
        assert!(l.admit(false).await.is_ok());
    }

    #[tokio::test]
    async fn http1_waits_for_a_slot_only_within_the_pending_limit() {
        let l = limits(
            pb::CircuitBreakers {
                max_connections: 1,
                max_pending_requests: 1,
                ..Default::default()
            },
            None,
        );
        let first = l.admit(true).await.unwrap();
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.admit(true).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(l.pending_requests(), 1);
        assert_eq!(l.admit(true).await.unwrap_err(), Overflow::Pending);
        // HTTP/2 requests share a connection: no slot to wait for.
        let _h2 = l.admit(false).await.unwrap();
        drop(first);
        // The waiter's place is taken back the moment the slot is handed on, before it runs.
        assert_eq!(l.pending_requests(), 0);
        waiter.await.unwrap().unwrap();
        assert!(l.admit(true).await.is_ok());
        assert_eq!(l.pending_requests(), 0);
        assert_eq!(l.overflow.get(), 1);
    }

    #[tokio::test]
    async fn connections_are_limited_and_a_close_wakes_waiters() {
        let l = limits(
            pb::CircuitBreakers {
                max_connections: 1,
                ..Default::default()
            },
            None,
        );
        let conn = l.try_connection().unwrap();
        assert!(l.try_connection().is_none());
        let freed = l.connection_freed();
        tokio::pin!(freed);
        freed.as_mut().enable();
        drop(conn);
        tokio::time::timeout(std::time::Duration::from_secs(1), freed)
            .await
            .expect("a close wakes the waiter");
        assert!(l.try_connection().is_some());
    }
}
