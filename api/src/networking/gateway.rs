//! Gateway: listeners of an edge (ingress or egress) proxy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::Port;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Gateway {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Server {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Passthrough,
    #[default]
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerTlsSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    pub mode: ServerTlsMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

/// Istio's prefix for a Secret of the gateway's own namespace.
const KUBERNETES_SECRET_PREFIX: &str = "kubernetes://";

impl ServerTlsSettings {
    /// The credential the server names: `credentialName`, else the first of
    /// `credentialNames`, as written.
    pub fn credential(&self) -> Option<&str> {
        self.credential_name
            .as_deref()
            .or(self.credential_names.first().map(String::as_str))
    }

    /// The Secret a gateway reads the certificate of: [`Self::credential`] without Istio's
    /// `kubernetes://` prefix, when it is a Secret name (a DNS-1123 subdomain, so a plain
    /// directory name in the gateway's credential directory).
    pub fn credential_secret(&self) -> Option<&str> {
        let raw = self.credential()?;
        let name = raw.strip_prefix(KUBERNETES_SECRET_PREFIX).unwrap_or(raw);
        crate::validate::rules::dns1123_subdomain(name)
            .is_ok()
            .then_some(name)
    }
}
