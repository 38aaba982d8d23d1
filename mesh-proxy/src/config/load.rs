//! Reads a proxy config file (YAML or JSON, proto3 JSON field names) into the proto model.

use std::path::Path;

use mesh_proto::config::v1::ProxyConfig;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

/// Parses a config document. JSON is a subset of YAML, so one parser serves both.
pub fn parse_config(path_for_errors: &str, text: &str) -> Result<ProxyConfig, LoadError> {
    serde_saphyr::from_str::<ProxyConfig>(text).map_err(|e| LoadError::Parse {
        path: path_for_errors.to_string(),
        message: e.to_string(),
    })
}

pub fn load_config_file(path: &Path) -> Result<ProxyConfig, LoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_config(&shown, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::config::v1::{Direction, LbPolicy, route};

    #[test]
    fn yaml_uses_proto_json_names_and_enum_names() {
        let cfg = parse_config(
            "t.yaml",
            r#"
version: "7"
listeners:
  - name: out
    address: 127.0.0.1:0
    direction: OUTBOUND
    protocol: HTTP
    routeTable: out
routeTables:
  - name: out
    virtualHosts:
      - name: reviews
        domains: ["reviews"]
        routes:
          - match: { path: { prefix: "/" } }
            route:
              clusters: [{ cluster: reviews, weight: 100 }]
              timeoutMs: 1500
clusters:
  - name: reviews
    lbPolicy: LEAST_REQUEST
    endpoints: [{ address: "127.0.0.1:9080", labels: { version: v1 } }]
"#,
        )
        .unwrap();
        assert_eq!(cfg.version, "7");
        assert_eq!(cfg.listeners[0].direction(), Direction::Outbound);
        assert_eq!(cfg.clusters[0].lb_policy(), LbPolicy::LeastRequest);
        assert_eq!(cfg.clusters[0].endpoints[0].labels["version"], "v1");
        let r = &cfg.route_tables[0].virtual_hosts[0].routes[0];
        match r.action.as_ref().unwrap() {
            route::Action::Route(a) => assert_eq!(a.timeout_ms, 1500),
            other => panic!("unexpected action {other:?}"),
        }
    }

    #[test]
    fn unknown_enum_value_is_an_error_naming_the_file() {
        let err = parse_config("bad.yaml", "clusters: [{name: a, lbPolicy: FASTEST}]").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("bad.yaml: "), "{msg}");
        assert!(msg.contains("FASTEST"), "{msg}");
    }
}
