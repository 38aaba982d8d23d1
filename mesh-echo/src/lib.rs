//! The sample application of the mesh.
//!
//! One port answers HTTP/1.1, HTTP/2 cleartext (prior knowledge), gRPC and HTTP/1.1 upgrades, so
//! proxy tests, examples and benchmarks can check what reached the workload:
//!
//! - plain HTTP: 200 with a JSON description of the request (name, version, method, path with
//!   query, authority, protocol, headers, body length and the first 64 KiB of the body), plus
//!   `x-echo-name` / `x-echo-version` response headers;
//! - `/status/CODE` answers CODE (no body for 1xx, 204, 304); `/delay/MS` answers after MS
//!   milliseconds, capped at 60 s;
//! - `Upgrade` (HTTP/1.1): 101, then every byte is echoed back until EOF;
//! - `content-type: application/grpc*`: the `mesh.echo.v1.Echo` service; a request header
//!   [`GRPC_STATUS_HEADER`] makes a method fail with that gRPC code;
//! - [`EchoConfig::fail_status`]: every request answers that HTTP status (gRPC and upgrades
//!   included, `/delay` still delays), like a broken replica.
//!
//! [`lines`] is the other mode, for layer 4 routing: plain TCP where every line read is
//! answered with `<name> <line>`, as Istio's tcp-echo sample answers with its prefix.

#![forbid(unsafe_code)]

mod body;
mod dispatch;
mod echo;
mod grpc;
mod headers;
pub mod lines;
pub mod ports;
mod route;
mod server;
mod upgrade;

pub use echo::xfcc_uri;
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
