//! mesh-proxy: the mesh's sidecar.
//!
//! Config (listeners, route tables, clusters) arrives as the proto model, is compiled into an
//! immutable [`config::Snapshot`] and swapped atomically; every request reads the snapshot it
//! started with. Decisions (routing, retry policy, load balancing) are pure functions in
//! [`route`], [`retry`] and [`lb`]; the socket code in [`listener`], [`http`] and [`upstream`]
//! calls them.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod authz;
pub mod cert_expiry;
pub mod cidr;
pub mod config;
pub mod discovery;
pub mod dns;
pub mod fast_map;
pub mod fast_rand;
pub mod health;
pub mod http;
pub mod identity;
pub mod iptables;
pub mod jwt;
pub mod lb;
pub mod listener;
pub mod metrics;
pub mod peek;
pub mod ratelimit;
pub mod retry;
pub mod route;
pub mod server;
pub mod tcp_route;
pub mod telemetry;
#[cfg(test)]
mod test_headers;
pub mod tls;
pub mod upstream;
pub mod wait;

pub use server::Server;
