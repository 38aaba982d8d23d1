//! The Kubernetes-style envelope and the `Resource` enum over served kinds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::ObjectRef;
use crate::networking::{
    DestinationRule, Gateway, LocalRateLimit, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
    WorkloadGroup,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::telemetry::Telemetry;
use crate::yaml::LineMap;

/// Kubernetes `ObjectMeta`, the fields a config file may carry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<serde_json::Value>,
}

/// Where an object came from. Not part of the object's identity on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Line of the document's first field (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Line of every field of the document, by field path.
    pub field_lines: LineMap,
}

impl Source {
    /// Line of `path`, or of its nearest ancestor, or of the document.
    pub fn line_of(&self, path: &crate::path::FieldPath) -> Option<usize> {
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some(l) = self.field_lines.get(cur.as_str()) {
                return Some(*l);
            }
            p = cur.parent();
        }
        self.line
    }
}

/// One typed object: envelope plus spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<T> {
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: T,
    #[serde(skip)]
    pub source: Source,
}

/// The API groups accepted for each kind: Istio's and the project's own, same schemas.
pub const NETWORKING_GROUPS: &[&str] = &["networking.istio.io", "networking.mesh.dev"];
pub const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
pub const SECURITY_GROUPS: &[&str] = &["security.istio.io", "security.mesh.dev"];
pub const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
pub const TELEMETRY_GROUPS: &[&str] = &["telemetry.istio.io", "telemetry.mesh.dev"];
pub const TELEMETRY_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha1"];
/// The mesh's own kinds that Istio has no equivalent of (LocalRateLimit): its group only.
pub const MESH_NETWORKING_GROUPS: &[&str] = &["networking.mesh.dev"];
pub const MESH_NETWORKING_VERSIONS: &[&str] = &["v1alpha1"];

/// Kinds this mesh serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    WorkloadGroup,
    Sidecar,
    Gateway,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    Telemetry,
    LocalRateLimit,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::Sidecar,
        Kind::Gateway,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
        Kind::LocalRateLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::Sidecar => "Sidecar",
            Kind::Gateway => "Gateway",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Telemetry => "Telemetry",
            Kind::LocalRateLimit => "LocalRateLimit",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn is_security(self) -> bool {
        matches!(
            self,
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication
        )
    }

    /// Whether `apiVersion` (`group/version`) is one this kind is served under.
    pub fn accepts_api_version(self, api_version: &str) -> bool {
        let Some((group, version)) = api_version.split_once('/') else {
            return false;
        };
        self.groups().contains(&group) && self.versions().contains(&version)
    }

    /// The versions the kind is served under, the stored one first.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::Telemetry => TELEMETRY_VERSIONS,
            Kind::LocalRateLimit => MESH_NETWORKING_VERSIONS,
            k if k.is_security() => SECURITY_VERSIONS,
            _ => NETWORKING_VERSIONS,
        }
    }

    /// The API groups the kind is served under (Istio's and the project's own).
    pub fn groups(self) -> &'static [&'static str] {
        match self {
            Kind::Telemetry => TELEMETRY_GROUPS,
            Kind::LocalRateLimit => MESH_NETWORKING_GROUPS,
            k if k.is_security() => SECURITY_GROUPS,
            _ => NETWORKING_GROUPS,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A loaded object of one of the served kinds. Serializes as the Kubernetes
/// envelope (`kind`, `apiVersion`, `metadata`, `spec`). Boxed: specs differ a
/// lot in size and a store holds thousands of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Resource {
    VirtualService(Box<Object<VirtualService>>),
    DestinationRule(Box<Object<DestinationRule>>),
    ServiceEntry(Box<Object<ServiceEntry>>),
    WorkloadEntry(Box<Object<WorkloadEntry>>),
    WorkloadGroup(Box<Object<WorkloadGroup>>),
    Sidecar(Box<Object<Sidecar>>),
    Gateway(Box<Object<Gateway>>),
    PeerAuthentication(Box<Object<PeerAuthentication>>),
    AuthorizationPolicy(Box<Object<AuthorizationPolicy>>),
    RequestAuthentication(Box<Object<RequestAuthentication>>),
    Telemetry(Box<Object<Telemetry>>),
    LocalRateLimit(Box<Object<LocalRateLimit>>),
}

macro_rules! each {
    ($self:expr, $o:ident => $e:expr) => {
        match $self {
            Resource::VirtualService($o) => $e,
            Resource::DestinationRule($o) => $e,
            Resource::ServiceEntry($o) => $e,
            Resource::WorkloadEntry($o) => $e,
            Resource::WorkloadGroup($o) => $e,
            Resource::Sidecar($o) => $e,
            Resource::Gateway($o) => $e,
            Resource::PeerAuthentication($o) => $e,
            Resource::AuthorizationPolicy($o) => $e,
            Resource::RequestAuthentication($o) => $e,
            Resource::Telemetry($o) => $e,
            Resource::LocalRateLimit($o) => $e,
        }
    };
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::WorkloadEntry(_) => Kind::WorkloadEntry,
            Resource::WorkloadGroup(_) => Kind::WorkloadGroup,
            Resource::Sidecar(_) => Kind::Sidecar,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::Telemetry(_) => Kind::Telemetry,
            Resource::LocalRateLimit(_) => Kind::LocalRateLimit,
        }
    }

    pub fn api_version(&self) -> &str {
        each!(self, o => &o.api_version)
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each!(self, o => &o.metadata)
    }

    pub fn source(&self) -> &Source {
        each!(self, o => &o.source)
    }

    pub fn set_source(&mut self, source: Source) {
        each!(self, o => o.source = source)
    }

    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// Equal apart from where the two were read from (file and line, which shift when an edit
    /// above an object adds a line): what pilot compares to tell what a change touched.
    pub fn same_content(&self, other: &Resource) -> bool {
        fn same<T: PartialEq>(a: &Object<T>, b: &Object<T>) -> bool {
            a.api_version == b.api_version && a.metadata == b.metadata && a.spec == b.spec
        }
        match (self, other) {
            (Resource::VirtualService(a), Resource::VirtualService(b)) => same(a, b),
            (Resource::DestinationRule(a), Resource::DestinationRule(b)) => same(a, b),
            (Resource::ServiceEntry(a), Resource::ServiceEntry(b)) => same(a, b),
            (Resource::WorkloadEntry(a), Resource::WorkloadEntry(b)) => same(a, b),
            (Resource::WorkloadGroup(a), Resource::WorkloadGroup(b)) => same(a, b),
            (Resource::Sidecar(a), Resource::Sidecar(b)) => same(a, b),
            (Resource::Gateway(a), Resource::Gateway(b)) => same(a, b),
            (Resource::PeerAuthentication(a), Resource::PeerAuthentication(b)) => same(a, b),
            (Resource::AuthorizationPolicy(a), Resource::AuthorizationPolicy(b)) => same(a, b),
            (Resource::RequestAuthentication(a), Resource::RequestAuthentication(b)) => same(a, b),
            (Resource::Telemetry(a), Resource::Telemetry(b)) => same(a, b),
            (Resource::LocalRateLimit(a), Resource::LocalRateLimit(b)) => same(a, b),
            _ => false,
        }
    }

    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind().to_string(),
            namespace: self.metadata().namespace.clone(),
            name: self.name().to_string(),
        }
    }
}
