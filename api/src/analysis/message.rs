//! Analysis messages: Istio's codes and levels, the object and the line they are about.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::path::FieldPath;
use crate::resource::Resource;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// The analyzer messages this mesh reports, with the code and level Istio gives them
/// (istio/pkg/config/analysis/msg/messages.yaml), so users find the same documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Code {
    /// IST0101: a host, subset, selector or namespace the object names does not exist.
    ReferencedResourceNotFound,
    /// IST0106: the object breaks the schema or Istio's validation rules.
    SchemaValidationError,
    /// IST0103: a workload in scope of mesh policy has no proxy.
    PodMissingProxy,
    /// IST0109: two VirtualServices bound to the mesh gateway define the same host.
    ConflictingMeshGatewayVirtualServiceHosts,
    /// IST0113: a DestinationRule disables TLS to workloads a PeerAuthentication makes STRICT.
    MtlsPolicyConflict,
    /// IST0127: a policy's selector matches no workload.
    NoMatchingWorkloadsFound,
}

impl Code {
    pub fn code(self) -> &'static str {
        match self {
            Code::ReferencedResourceNotFound => "IST0101",
            Code::PodMissingProxy => "IST0103",
            Code::SchemaValidationError => "IST0106",
            Code::ConflictingMeshGatewayVirtualServiceHosts => "IST0109",
            Code::MtlsPolicyConflict => "IST0113",
            Code::NoMatchingWorkloadsFound => "IST0127",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::ReferencedResourceNotFound => "ReferencedResourceNotFound",
            Code::PodMissingProxy => "PodMissingProxy",
            Code::SchemaValidationError => "SchemaValidationError",
            Code::ConflictingMeshGatewayVirtualServiceHosts => {
                "ConflictingMeshGatewayVirtualServiceHosts"
            }
            Code::MtlsPolicyConflict => "MTLSPolicyConflict",
            Code::NoMatchingWorkloadsFound => "NoMatchingWorkloadsFound",
        }
    }

    pub fn level(self) -> Level {
        match self {
            Code::ReferencedResourceNotFound
            | Code::ConflictingMeshGatewayVirtualServiceHosts
            | Code::SchemaValidationError
            | Code::MtlsPolicyConflict => Level::Error,
            Code::PodMissingProxy | Code::NoMatchingWorkloadsFound => Level::Warning,
        }
    }
}

/// One finding: `Error [IST0101] (VirtualService default/reviews vs.yaml:12) text`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub code: Code,
    pub level: Level,
    /// `Kind namespace/name` of the object the message is about.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub file: Option<PathBuf>,
    /// Line of the offending field, else of the object.
    pub line: Option<usize>,
    pub text: String,
}

impl Message {
    /// A message about `resource`, placed at the line of `field` (or its nearest ancestor).
    pub fn at(code: Code, resource: &Resource, field: &FieldPath, text: String) -> Self {
        let source = resource.source();
        Self {
            code,
            level: code.level(),
            kind: resource.kind().to_string(),
            namespace: super::namespace_of(resource).to_owned(),
            name: resource.name().to_owned(),
            file: source.file.clone(),
            line: source.line_of(field),
            text,
        }
    }
}

impl From<&ValidationError> for Message {
    /// A load or validation error as Istio's analyzer reports it (IST0106).
    fn from(e: &ValidationError) -> Self {
        let object = e.object.clone().unwrap_or_default();
        let reason = if e.field.is_empty() {
            e.reason.clone()
        } else {
            format!("{}: {}", e.field, e.reason)
        };
        Self {
            code: Code::SchemaValidationError,
            level: Level::Error,
            kind: object.kind,
            namespace: object.namespace.unwrap_or_else(|| "default".to_owned()),
            name: object.name,
            file: e.file.clone(),
            line: e.line,
            text: format!("Schema validation error: {reason}"),
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] ({} {}/{}",
            self.level,
            self.code.code(),
            self.kind,
            self.namespace,
            self.name
        )?;
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, " {}:{line}", file.display())?,
            (Some(file), None) => write!(f, " {}", file.display())?,
            _ => {}
        }
        write!(f, ") {}", self.text)
    }
}
