//! Versions of a proxy config: one for its structure (everything but endpoints) and one for
//! the endpoints of each cluster, so an endpoint change can be pushed alone.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};

use mesh_proto::config::v1::{Endpoint, ProxyConfig};
use prost::Message;

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

fn hash_endpoints(endpoints: &[Endpoint]) -> u64 {
    let mut h = DefaultHasher::new();
    for e in endpoints {
        h.write(&e.encode_to_vec());
    }
    h.finish()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The version of everything but endpoints.
    pub config: String,
    /// The version of all endpoints together.
    pub endpoints: String,
    /// Per cluster, a hash of its endpoints.
    pub clusters: BTreeMap<String, u64>,
}

impl Fingerprint {
    pub fn of(config: &ProxyConfig) -> Self {
        let mut structure = config.clone();
        structure.version.clear();
        let mut clusters = BTreeMap::new();
        for c in &mut structure.clusters {
            clusters.insert(c.name.clone(), hash_endpoints(&c.endpoints));
            c.endpoints.clear();
        }
        let mut all = DefaultHasher::new();
        for (name, h) in &clusters {
            all.write(name.as_bytes());
            all.write_u64(*h);
        }
        Self {
            config: format!("{:016x}", hash_bytes(&structure.encode_to_vec())),
            endpoints: format!("{:016x}", all.finish()),
            clusters,
        }
    }

    /// Clusters whose endpoints differ from `before` (every cluster when `before` is None).
    pub fn changed_clusters<'a>(&'a self, before: Option<&Fingerprint>) -> Vec<&'a str> {
        self.clusters
            .iter()
            .filter(|(name, h)| before.and_then(|b| b.clusters.get(*name)) != Some(h))
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::config::v1::Cluster;

    fn config(endpoints: &[&str]) -> ProxyConfig {
        ProxyConfig {
            clusters: vec![
                Cluster {
                    name: "a".into(),
                    endpoints: endpoints
                        .iter()
                        .map(|e| Endpoint {
                            address: e.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
                Cluster {
                    name: "b".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn endpoint_changes_leave_the_config_version_alone() {
        let one = Fingerprint::of(&config(&["127.0.0.1:1"]));
        let two = Fingerprint::of(&config(&["127.0.0.1:1", "127.0.0.1:2"]));
        assert_eq!(one.config, two.config);
        assert_ne!(one.endpoints, two.endpoints);
        assert_eq!(two.changed_clusters(Some(&one)), ["a"]);
        assert_eq!(two.changed_clusters(None), ["a", "b"]);
        let mut renamed = config(&["127.0.0.1:1"]);
        renamed.clusters[1].connect_timeout_ms = 5;
        assert_ne!(Fingerprint::of(&renamed).config, one.config);
    }

    #[test]
    fn the_version_field_itself_does_not_count() {
        let mut c = config(&[]);
        let before = Fingerprint::of(&c);
        c.version = "x".into();
        assert_eq!(Fingerprint::of(&c), before);
    }
}
