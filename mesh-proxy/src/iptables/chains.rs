//! Chain names and the ports that are never captured.
//!
//! The chains mirror Istio's (`ISTIO_INBOUND` ...) with a `MESH_` prefix: the layout and the
//! rules are the ones Istio operators know, but a pod that also went through Istio's own init
//! container keeps both sets apart, and `--cleanup` never removes chains it did not create.

/// All rules live in the nat table (REDIRECT mode).
pub const TABLE: &str = "nat";

/// Entry from PREROUTING for inbound TCP.
pub const INBOUND: &str = "MESH_INBOUND";
/// Redirects to the inbound capture port (`-z`).
pub const IN_REDIRECT: &str = "MESH_IN_REDIRECT";
/// Entry from OUTPUT for outbound TCP.
pub const OUTPUT: &str = "MESH_OUTPUT";
/// Redirects to the outbound capture port (`-p`).
pub const REDIRECT: &str = "MESH_REDIRECT";

/// Every chain installed, in creation order.
pub const ALL: [&str; 4] = [INBOUND, REDIRECT, IN_REDIRECT, OUTPUT];

/// Jumps from the built-in chains into ours: (built-in chain, our chain).
pub const JUMPS: [(&str, &str); 2] = [("PREROUTING", INBOUND), ("OUTPUT", OUTPUT)];

/// Inbound ports the proxy serves itself (Prometheus 15090, health 15021, merged metrics
/// 15020): kubelet and scrapers reach them directly, as Istio's injector excludes them.
pub const PROXY_SERVED_PORTS: [u16; 3] = [15090, 15021, 15020];
