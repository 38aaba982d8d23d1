//! Which protocol a workload's sample app speaks: that of the service port it serves.

use std::collections::BTreeMap;

use mesh_api::Resource;

use super::workloads::selected_by;

/// How mesh-echo runs for one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppMode {
    /// HTTP/1.1, h2c, gRPC and upgrades on one port (mesh-echo's default).
    Http,
    /// Plain TCP, every line answered with `<name> <line>` (`mesh-echo --tcp`).
    TcpLines,
}

impl AppMode {
    pub fn label(self) -> &'static str {
        match self {
            AppMode::Http => "http",
            AppMode::TcpLines => "tcp",
        }
    }
}

/// The mode for a workload in `namespace` with `labels`, serving its port named `port_name`:
/// `TcpLines` when a ServiceEntry selecting the workload declares that port as TCP (by its
/// `protocol`, else by a `tcp`/`tcp-*` name, as Istio resolves it), else `Http`, which is
/// also what Istio's protocol sniffing would see from mesh-echo.
pub fn app_mode(
    resources: &[Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    port_name: &str,
) -> AppMode {
    let tcp = resources.iter().any(|r| {
        let Resource::ServiceEntry(se) = r else {
            return false;
        };
        r.namespace().unwrap_or("default") == namespace
            && selected_by(se.spec.workload_selector.as_ref(), labels)
            && se
                .spec
                .ports
                .iter()
                .any(|p| p.name == port_name && p.resolved_protocol() == Some("TCP"))
    });
    if tcp {
        AppMode::TcpLines
    } else {
        AppMode::Http
    }
}
