//! Validation with Istio's rules (`pkg/config/validation`), one module per kind.

mod authorization_policy;
mod destination_rule;
mod gateway;
mod ignored;
mod local_rate_limit;
mod peer_authentication;
mod request_authentication;
pub mod rules;
mod service_entry;
mod sidecar;
mod telemetry;
mod virtual_service;
mod workload_entry;

use crate::error::ValidationError;
use crate::path::FieldPath;
use crate::resource::{ObjectMeta, Resource};

/// Collects (field, reason) pairs; lines are attached at the end from the source map.
#[derive(Debug, Default)]
pub struct Errors(Vec<(FieldPath, String)>);

impl Errors {
    pub fn push(&mut self, path: &FieldPath, reason: impl Into<String>) {
        self.0.push((path.clone(), reason.into()));
    }

    /// Records `result`'s error, if any, at `path`.
    pub fn check(&mut self, path: &FieldPath, result: Result<(), String>) {
        if let Err(e) = result {
            self.push(path, e);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Validates one resource; an empty result means Istio would accept it.
pub fn validate(resource: &Resource) -> Vec<ValidationError> {
    let mut errs = Errors::default();
    let spec = FieldPath::root().key("spec");
    validate_metadata(resource.metadata(), &mut errs);
    let ns = resource.namespace();
    match resource {
        Resource::VirtualService(o) => virtual_service::validate(&o.spec, &spec, &mut errs),
        Resource::DestinationRule(o) => destination_rule::validate(&o.spec, &spec, &mut errs),
        Resource::ServiceEntry(o) => service_entry::validate(&o.spec, &spec, &mut errs),
        Resource::WorkloadEntry(o) => {
            workload_entry::validate_entry(&o.spec, &spec, false, &mut errs)
        }
        Resource::WorkloadGroup(o) => workload_entry::validate_group(&o.spec, &spec, &mut errs),
        Resource::Sidecar(o) => sidecar::validate(&o.spec, &spec, &mut errs),
        Resource::Gateway(o) => {
            // VirtualServices name gateways as `namespace/name`: no dots.
            if rules::dns1123_label(&o.metadata.name).is_err() {
                errs.push(
                    &FieldPath::root().key("metadata").key("name"),
                    format!("invalid gateway name: {:?}", o.metadata.name),
                );
            }
            gateway::validate(&o.spec, &spec, &mut errs)
        }
        Resource::PeerAuthentication(o) => peer_authentication::validate(&o.spec, &spec, &mut errs),
        Resource::AuthorizationPolicy(o) => {
            authorization_policy::validate(&o.spec, ns, &spec, &mut errs)
        }
        Resource::RequestAuthentication(o) => {
            request_authentication::validate(&o.spec, ns, &spec, &mut errs)
        }
        Resource::Telemetry(o) => telemetry::validate(&o.spec, ns, &spec, &mut errs),
        Resource::LocalRateLimit(o) => local_rate_limit::validate(&o.spec, &spec, &mut errs),
    }
    to_errors(resource, errs)
}

/// What a valid resource asks for that the mesh does not do as written: each field with what
/// happens instead (an unsupported Gateway field is skipped; an AuthorizationPolicy rule a
/// sidecar cannot evaluate takes Istio's fallback). Istio accepts these objects, so they load;
/// `meshctl validate` prints them, and pilot reports the same.
pub fn warnings(resource: &Resource) -> Vec<ValidationError> {
    let mut out = Errors::default();
    let spec = FieldPath::root().key("spec");
    match resource {
        Resource::Gateway(o) => {
            gateway::unsupported(&o.spec, &spec, &mut out);
            ignored::gateway(&o.spec, &spec, &mut out);
        }
        Resource::AuthorizationPolicy(o) => {
            let name = format!(
                "{}/{}",
                o.metadata.namespace.as_deref().unwrap_or("default"),
                o.metadata.name
            );
            authorization_policy::fallbacks(&o.spec, &name, &spec, &mut out);
        }
        Resource::Telemetry(o) => telemetry::unsupported(&o.spec, &spec, &mut out),
        Resource::VirtualService(o) => ignored::virtual_service(&o.spec, &spec, &mut out),
        Resource::DestinationRule(o) => ignored::destination_rule(&o.spec, &spec, &mut out),
        Resource::ServiceEntry(o) => ignored::service_entry(&o.spec, &spec, &mut out),
        Resource::WorkloadEntry(o) => ignored::workload_entry(&o.spec, &spec, &mut out),
        Resource::Sidecar(o) => ignored::sidecar(&o.spec, &spec, &mut out),
        Resource::WorkloadGroup(_) => {
            ignored::workload_group(&FieldPath::root().key("kind"), &mut out)
        }
        _ => {}
    }
    to_errors(resource, out)
}

/// The unsupported fields of one Gateway as `(field path, reason)`, for pilot's warnings.
pub fn gateway_warnings(gw: &crate::networking::Gateway) -> Vec<(String, String)> {
    let mut out = Errors::default();
    gateway::unsupported(gw, &FieldPath::root().key("spec"), &mut out);
    ignored::gateway(gw, &FieldPath::root().key("spec"), &mut out);
    out.0
        .into_iter()
        .map(|(path, reason)| (path.to_string(), reason))
        .collect()
}

fn validate_metadata(meta: &ObjectMeta, errs: &mut Errors) {
    let m = FieldPath::root().key("metadata");
    if meta.name.is_empty() {
        errs.push(&m.key("name"), "name is required");
    } else {
        errs.check(&m.key("name"), rules::dns1123_subdomain(&meta.name));
    }
    if let Some(ns) = &meta.namespace {
        errs.check(&m.key("namespace"), rules::dns1123_label(ns));
    }
    rules::labels(&meta.labels, &m.key("labels"), errs);
}

/// Attaches file, line and object to collected errors.
pub fn to_errors(resource: &Resource, errs: Errors) -> Vec<ValidationError> {
    let source = resource.source();
    errs.0
        .into_iter()
        .map(|(path, reason)| ValidationError {
            file: source.file.clone(),
            line: source.line_of(&path),
            object: Some(resource.object_ref()),
            field: path.to_string(),
            reason,
        })
        .collect()
}
