//! The sample application of the mesh.
//!
//! One port answers HTTP/1.1, HTTP/2 cleartext (prior knowledge), gRPC and HTTP/1.1 upgrades, so
//! proxy tests, examples and benchmarks can check what reached the workload: every plain HTTP
//! request is answered with a JSON description of itself.

#![forbid(unsafe_code)]

mod body;
mod echo;
mod grpc;
mod headers;
mod route;
mod server;
mod upgrade;

pub use grpc::STATUS_OVERRIDE_HEADER as GRPC_STATUS_HEADER;
pub use server::{EchoHandle, serve, spawn};

/// Identity and behaviour of one echo replica.
#[derive(Debug, Clone, Default)]
pub struct EchoConfig {
    /// Reported in every answer, to tell replicas apart behind a load balancer.
    pub name: String,
    /// Reported in every answer, to check version-based routing.
    pub version: String,
    /// When set, every request (HTTP and gRPC) is answered with this HTTP status: a broken replica.
    pub fail_status: Option<u16>,
}
