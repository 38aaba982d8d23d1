//! Upstream side: clusters, connection pools and TCP connects.

pub mod cluster;
pub mod connect;
pub mod h1;
pub mod limits;
pub mod members;
pub mod outlier;
pub mod pool;
pub mod resolving;
pub mod target;
pub mod tls_policy;
pub mod transport;

pub use cluster::{Cluster, HashInput, Protocol};
pub use connect::ConnectionStats;
pub use pool::{Pool, SendError};
pub use target::{Endpoints, Target, passthrough_cluster};
pub use tls_policy::CompileFor;
pub use transport::{Alpn, Transport, Upstream};
