//! Types shared by several networking resources.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Selects a port of a service by number.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortSelector {
    pub number: u32,
}

/// Exactly one of `exact`, `prefix`, `regex`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StringMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `workloadSelector: {labels: {...}}` of ServiceEntry, Sidecar, DestinationRule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadSelector {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A percentage in [0, 100].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Percent {
    pub value: f64,
}

/// A service port (ServiceEntry, Gateway server, Sidecar listener).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Port {
    pub number: u32,
    pub protocol: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Istio's protocol names; parsing is case-insensitive as in Istio.
pub const PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "HTTP_PROXY",
    "TCP",
    "TLS",
    "UDP",
    "MONGO",
    "REDIS",
    "MYSQL",
    "THRIFT",
    "HBONE",
];

/// The canonical protocol for a port's `protocol` field, if Istio knows it.
pub fn parse_protocol(s: &str) -> Option<&'static str> {
    PROTOCOLS
        .iter()
        .copied()
        .find(|p| p.eq_ignore_ascii_case(s))
}

impl Port {
    /// The port's protocol as Istio resolves it: the `protocol` field, else the
    /// port name's prefix (`http-web`, `grpc`, `tcp-db`), else `None` (sniffed).
    pub fn resolved_protocol(&self) -> Option<&'static str> {
        if !self.protocol.is_empty() {
            return parse_protocol(&self.protocol);
        }
        let prefix = self.name.split('-').next().unwrap_or_default();
        match prefix.to_ascii_lowercase().as_str() {
            // `grpc-web` is both a prefix and a protocol name.
            "grpc" if self.name.to_ascii_lowercase().starts_with("grpc-web") => Some("GRPC-WEB"),
            p => parse_protocol(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, protocol: &str) -> Port {
        Port {
            number: 80,
            protocol: protocol.into(),
            name: name.into(),
            target_port: None,
        }
    }

    #[test]
    fn protocol_from_field_then_name_prefix() {
        assert_eq!(port("x", "http").resolved_protocol(), Some("HTTP"));
        assert_eq!(port("http-web", "").resolved_protocol(), Some("HTTP"));
        assert_eq!(
            port("grpc-web-ui", "").resolved_protocol(),
            Some("GRPC-WEB")
        );
        assert_eq!(port("tcp-db", "").resolved_protocol(), Some("TCP"));
        assert_eq!(port("web", "").resolved_protocol(), None);
        assert_eq!(port("x", "FOO").resolved_protocol(), None);
    }
}
