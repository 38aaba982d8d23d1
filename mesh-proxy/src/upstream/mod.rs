//! Upstream side: clusters, connection pools and TCP connects.

pub mod cluster;
pub mod connect;
pub mod pool;

pub use cluster::{Cluster, HashInput, Protocol};
pub use connect::ConnectionStats;
pub use pool::{Pool, SendError};
