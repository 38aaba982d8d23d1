//! mesh-pilot: the discovery control plane.
//!
//! Istio resources come in from a watched directory of YAML (and, later, Kubernetes) into one
//! [`store`]; the [`registry`] of services and workloads is derived from them; [`translate`]
//! turns both into the config of one proxy, a pure function; [`discovery`] streams it to every
//! connected proxy and tracks their ACKs and NACKs.

// Denied everywhere; the one exception is the allocator tunable in `memory`.
#![deny(unsafe_code)]

pub mod authz;
pub mod debug;
pub mod discovery;
pub mod kube;
pub mod memory;
pub mod metrics;
pub mod ratelimit;
pub mod registry;
pub mod request_authn;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod translate;
pub mod watch;
