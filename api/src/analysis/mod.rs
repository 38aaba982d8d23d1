//! `meshctl analyze`: the warnings Istio users expect from `istioctl analyze`, each with
//! Istio's code and the file:line of the field at fault. Pure functions over the loaded
//! resources and an [`Inventory`] of services and workloads.

mod client_tls;
mod describe;
mod dump;
mod hosts;
mod inventory;
mod message;
mod mtls;
mod policy;
mod routing;

#[cfg(test)]
mod tests;

pub use describe::{Applied, Description, describe};
pub use dump::{ConfigDump, SourcedResource};
pub use hosts::{covers, resolve};
pub use inventory::{Inventory, ServiceInfo, TLS_MODE_LABEL, WorkloadInfo, has_sidecar, selects};
pub use message::{Code, Level, Message};
pub use mtls::{Decision, Effective, Mode, effective};

use crate::resource::Resource;

/// Istio's default root namespace: mesh-wide policies live there.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The namespace of an object; `default` when it names none (as `kubectl apply` places it).
pub fn namespace_of(r: &Resource) -> &str {
    r.namespace().unwrap_or("default")
}

/// Every finding, ordered by file, line and code.
pub fn analyze(resources: &[Resource], inventory: &Inventory) -> Vec<Message> {
    let mut out = Vec::new();
    out.extend(routing::missing_subsets(resources));
    out.extend(routing::unknown_destination_rule_hosts(
        resources, inventory,
    ));
    out.extend(routing::conflicting_hosts(resources));
    out.extend(policy::gateway_selectors(resources, inventory));
    out.extend(policy::authorization_policies(resources, inventory));
    out.extend(policy::strict_without_sidecar(resources, inventory));
    out.extend(client_tls::destination_rule_tls(resources, inventory));
    out.sort_by(|a, b| {
        (&a.file, a.line, a.code, &a.namespace, &a.name).cmp(&(
            &b.file,
            b.line,
            b.code,
            &b.namespace,
            &b.name,
        ))
    });
    out
}
