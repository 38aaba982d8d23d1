//! Mesh-wide injection settings: what every injected pod shares (images, control-plane
//! addresses, trust domain, the cluster's version). Read from YAML (a ConfigMap in the
//! cluster, a file locally); every field has a default so an empty file is valid.

use serde::{Deserialize, Serialize};

/// Settings substituted into the template as `{{ .Values.<field> }}` (camelCase names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Values {
    /// Image of both the init container and the proxy (one binary, two subcommands).
    pub proxy_image: String,
    pub image_pull_policy: String,
    /// Pilot's discovery URL, as `mesh-proxy --discovery-addr` takes it.
    pub discovery_address: String,
    /// Citadel's gRPC-over-TLS address, given to the proxy as `CA_ADDR`.
    pub ca_address: String,
    pub trust_domain: String,
    /// The mesh's own namespace: never injected.
    pub mesh_namespace: String,
    /// Written into the status annotation, so an upgrade can tell which pods are stale.
    pub revision: String,
    /// Kubernetes version of the cluster (`1.29`, `v1.30.2`): from 1.29 the proxy is a native
    /// sidecar. Unset means an old cluster: the proxy becomes the first app container.
    pub cluster_version: Option<String>,
    /// CPU and memory requested by the proxy unless `sidecar.istio.io/proxyCPU` / `proxyMemory`
    /// say otherwise.
    pub proxy_cpu: String,
    pub proxy_memory: String,
    /// Limits, off unless set here or by `proxyCPULimit` / `proxyMemoryLimit`.
    pub proxy_cpu_limit: Option<String>,
    pub proxy_memory_limit: Option<String>,
    /// Inbound ports captured unless `includeInboundPorts` says otherwise: `*` (all) as in
    /// current Istio, so ports an app opens without declaring them are still secured.
    pub include_inbound_ports: String,
    /// Whether HTTP probes go through the proxy by default (annotation
    /// `sidecar.istio.io/rewriteAppHTTPProbers` overrides per pod).
    pub rewrite_app_probes: bool,
}

impl Default for Values {
    fn default() -> Self {
        Values {
            proxy_image: "ghcr.io/mesh-dev/mesh-proxy:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
            discovery_address: "http://mesh-pilot.mesh-system.svc:15010".into(),
            ca_address: "mesh-citadel.mesh-system.svc:15012".into(),
            trust_domain: "cluster.local".into(),
            mesh_namespace: "mesh-system".into(),
            revision: "default".into(),
            cluster_version: None,
            proxy_cpu: "100m".into(),
            proxy_memory: "128Mi".into(),
            proxy_cpu_limit: None,
            proxy_memory_limit: None,
            include_inbound_ports: "*".into(),
            rewrite_app_probes: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    #[error("values: {0}")]
    Yaml(String),
    #[error("values: clusterVersion {0:?}: expected MAJOR.MINOR, e.g. 1.29 or v1.30.2")]
    ClusterVersion(String),
}

impl Values {
    /// Parses settings from YAML; missing fields keep their defaults.
    pub fn from_yaml(text: &str) -> Result<Values, ValuesError> {
        if text.trim().is_empty() {
            return Ok(Values::default());
        }
        let values: Values =
            serde_saphyr::from_str(text).map_err(|e| ValuesError::Yaml(e.to_string()))?;
        values.native_sidecars()?;
        Ok(values)
    }

    /// Whether the cluster runs native sidecars (init containers with `restartPolicy: Always`,
    /// on by default from Kubernetes 1.29).
    pub fn native_sidecars(&self) -> Result<bool, ValuesError> {
        match &self.cluster_version {
            None => Ok(false),
            Some(v) => {
                let (major, minor) =
                    parse_version(v).ok_or_else(|| ValuesError::ClusterVersion(v.clone()))?;
                Ok((major, minor) >= (1, 29))
            }
        }
    }
}

/// `1.29`, `v1.29.3`, `1.30+` (GKE/EKS minor versions carry a `+`).
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let v = v.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.29"), Some((1, 29)));
        assert_eq!(parse_version("v1.30.2"), Some((1, 30)));
        assert_eq!(parse_version("1.28+"), Some((1, 28)));
        assert_eq!(parse_version("one"), None);
        let mut v = Values::default();
        assert!(!v.native_sidecars().unwrap());
        v.cluster_version = Some("1.28".into());
        assert!(!v.native_sidecars().unwrap());
        v.cluster_version = Some("v1.29.0".into());
        assert!(v.native_sidecars().unwrap());
        v.cluster_version = Some("2".into());
        assert!(v.native_sidecars().is_err());
    }

    #[test]
    fn yaml_overrides_defaults_and_rejects_typos() {
        let v =
            Values::from_yaml("proxyImage: example/proxy:1\nclusterVersion: \"1.30\"\n").unwrap();
        assert_eq!(v.proxy_image, "example/proxy:1");
        assert_eq!(v.trust_domain, "cluster.local");
        assert!(v.native_sidecars().unwrap());
        assert!(Values::from_yaml("proxyImg: x\n").is_err());
        assert!(Values::from_yaml("clusterVersion: banana\n").is_err());
        assert_eq!(Values::from_yaml("").unwrap(), Values::default());
    }
}
