//! Incremental endpoint updates applied to a held config.

use mesh_proto::config::v1::ProxyConfig;
use mesh_proto::discovery::v1::ClusterEndpoints;

/// `config` with the endpoints of the named clusters replaced. Unknown clusters are an error:
/// endpoints arrive only for clusters the proxy has been told about.
pub fn merge_endpoints(
    mut config: ProxyConfig,
    updates: &[ClusterEndpoints],
) -> Result<ProxyConfig, String> {
    for update in updates {
        let cluster = config
            .clusters
            .iter_mut()
            .find(|c| c.name == update.cluster)
            .ok_or_else(|| format!("endpoints for unknown cluster {:?}", update.cluster))?;
        cluster.endpoints = update.endpoints.clone();
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::config::v1::{Cluster, Endpoint};

    fn endpoint(a: &str) -> Endpoint {
        Endpoint {
            address: a.into(),
            ..Default::default()
        }
    }

    #[test]
    fn replaces_only_the_named_clusters() {
        let config = ProxyConfig {
            clusters: vec![
                Cluster {
                    name: "a".into(),
                    endpoints: vec![endpoint("127.0.0.1:1")],
                    ..Default::default()
                },
                Cluster {
                    name: "b".into(),
                    endpoints: vec![endpoint("127.0.0.1:2")],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let merged = merge_endpoints(
            config.clone(),
            &[ClusterEndpoints {
                cluster: "b".into(),
                endpoints: vec![endpoint("127.0.0.1:3"), endpoint("127.0.0.1:4")],
            }],
        )
        .unwrap();
        assert_eq!(merged.clusters[0], config.clusters[0]);
        assert_eq!(merged.clusters[1].endpoints.len(), 2);
        let err = merge_endpoints(
            config,
            &[ClusterEndpoints {
                cluster: "zzz".into(),
                endpoints: vec![],
            }],
        )
        .unwrap_err();
        assert!(err.contains("zzz"));
    }
}
