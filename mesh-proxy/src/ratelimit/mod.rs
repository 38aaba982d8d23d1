//! Local rate limiting on the inbound side (the mesh's LocalRateLimit, Envoy's local rate
//! limit filter): token buckets per proxy ([`bucket`], pure), the choice of bucket per request
//! ([`limits`]) and the reply to a refused request ([`reply`]).

pub mod bucket;
pub mod limits;
pub mod reply;

pub use bucket::{Bucket, BucketSpec, Verdict};
pub use limits::{LimitError, RateLimits};
