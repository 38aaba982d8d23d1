//! The explicit egress listeners a workload's proxy opens: Sidecar egress listeners with a
//! `port` and `captureMode: NONE` (or a `bind`), which clients connect to directly.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use mesh_api::Resource;
use mesh_api::networking::sidecar::{CaptureMode, Sidecar};

use super::workloads::selected_by;

/// One egress listener, as pilot gives it to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressListener {
    pub addr: SocketAddr,
    /// The port's protocol as Istio resolves it (`TCP`, `HTTP`, ...), `-` when sniffed.
    pub protocol: String,
    pub hosts: Vec<String>,
}

/// The egress listeners of the Sidecar that applies to a workload in `namespace` with
/// `labels`: one whose selector matches, else the namespace's Sidecar without selector.
pub fn egress_listeners(
    resources: &[Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<EgressListener> {
    let sidecars: Vec<&Sidecar> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Sidecar(sc) if r.namespace().unwrap_or("default") == namespace => {
                Some(&sc.spec)
            }
            _ => None,
        })
        .collect();
    let selected = sidecars
        .iter()
        .find(|sc| selected_by(sc.workload_selector.as_ref(), labels))
        .or_else(|| {
            sidecars.iter().find(|sc| {
                sc.workload_selector
                    .as_ref()
                    .is_none_or(|s| s.labels.is_empty())
            })
        });
    let Some(sidecar) = selected else {
        return Vec::new();
    };
    sidecar
        .egress
        .iter()
        .filter_map(|l| {
            let port = l.port.as_ref()?;
            // Same rule as pilot: without bind, only captureMode NONE gets its own listener.
            let ip: IpAddr = match (&l.bind, l.capture_mode) {
                (Some(b), _) => b.parse().ok()?,
                (None, CaptureMode::None) => [127, 0, 0, 1].into(),
                (None, _) => return None,
            };
            Some(EgressListener {
                addr: SocketAddr::new(ip, u16::try_from(port.number).ok()?),
                protocol: port.resolved_protocol().unwrap_or("-").to_string(),
                hosts: l.hosts.clone(),
            })
        })
        .collect()
}
