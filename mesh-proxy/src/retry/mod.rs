//! Retry policy, Envoy's override headers and backoff: pure decisions, no I/O.

pub mod backoff;
pub mod overrides;
pub mod policy;

pub use backoff::{Backoff, Jitter};
pub use overrides::{Overrides, grpc_timeout};
pub use policy::{Outcome, RetryOn, RetryPolicy};
