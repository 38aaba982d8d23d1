//! Encoded configs, shared between proxies. The outbound part of a scope (route table and
//! clusters, endpoints included) is encoded once per distinct content and shared by every
//! proxy of every scope with that content; per proxy only the listeners and the inbound part
//! are encoded. A `ProxyConfig` on the wire is the proxy's part followed by the shared part:
//! protobuf concatenation appends repeated fields in order, and "inbound" sorts before
//! "outbound", so the decoded config is the one `translate` returns.
//!
//! Versions are hashes of these encodings: the config version covers everything but endpoints,
//! the endpoints version the endpoints of every cluster, so an endpoint change alone is pushed
//! as ENDPOINTS with only the clusters that changed.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use mesh_proto::config::v1::{Cluster, ProxyConfig};
use mesh_proto::discovery::v1::ClusterEndpoints;
use prost::Message;

use super::wire;
use crate::translate::{Outbound, SharedConfig};

/// `ProxyConfig` field numbers used to splice encodings.
const CONFIG_VERSION: u32 = 1;
const CONFIG_ROUTE_TABLES: u32 = 3;
const CONFIG_CLUSTERS: u32 = 4;
/// `DiscoveryResponse.endpoints`.
const RESPONSE_ENDPOINTS: u32 = 5;

fn version_string(hash: u64) -> String {
    format!("{hash:016x}")
}

/// One cluster inside [`ScopeSnapshot::body`].
#[derive(Debug)]
struct ClusterEntry {
    name: Box<str>,
    /// Byte range of the encoded `Cluster` message in the body.
    range: Range<u32>,
    /// Hash of its endpoints alone.
    endpoints: u64,
}

/// The encoded outbound part of a config, shared by all proxies whose outbound config is equal.
#[derive(Debug)]
pub struct ScopeSnapshot {
    /// Unique per snapshot, so endpoint deltas can be memoised by the snapshot they start from.
    id: u64,
    /// `ProxyConfig` fields 3 (the outbound route table) and 4 (every outbound cluster).
    body: Bytes,
    /// Hash of everything but endpoints.
    structure: u64,
    /// Hash of every cluster's endpoints.
    endpoints: u64,
    /// Sorted by name, as translation sorts them.
    clusters: Vec<ClusterEntry>,
    /// ENDPOINTS payloads (`DiscoveryResponse` field 5 entries) from an earlier snapshot, by
    /// its id; 0 means from nothing known (every cluster).
    deltas: Mutex<HashMap<u64, Bytes>>,
}

static NEXT_SCOPE_ID: AtomicU64 = AtomicU64::new(1);

impl ScopeSnapshot {
    /// Encodes `outbound`. One copy of its clusters is made, to hash structure and endpoints
    /// apart.
    pub fn encode(outbound: &Outbound) -> ScopeSnapshot {
        let mut body = Vec::with_capacity(outbound_len_hint(outbound));
        let mut structure = DefaultHasher::new();
        let mut all_endpoints = DefaultHasher::new();
        let mut scratch = Vec::new();

        wire::put_message(CONFIG_ROUTE_TABLES, &outbound.route_table, &mut body);
        structure.write(&body);

        let mut clusters = Vec::with_capacity(outbound.clusters.len());
        for cluster in &outbound.clusters {
            let mut bare = cluster.clone();
            let own_endpoints = std::mem::take(&mut bare.endpoints);
            scratch.clear();
            bare.encode(&mut scratch).expect("vec grows");
            structure.write(&scratch);
            let mut endpoints = DefaultHasher::new();
            for e in &cluster.endpoints {
                scratch.clear();
                e.encode(&mut scratch).expect("vec grows");
                endpoints.write_usize(scratch.len());
                endpoints.write(&scratch);
            }
            let endpoints = endpoints.finish();
            all_endpoints.write(cluster.name.as_bytes());
            all_endpoints.write_u64(endpoints);

            bare.endpoints = own_endpoints;
            wire::put_key_len(CONFIG_CLUSTERS, bare.encoded_len(), &mut body);
            let start = body.len();
            bare.encode(&mut body).expect("vec grows");
            clusters.push(ClusterEntry {
                name: cluster.name.as_str().into(),
                range: offset(start)..offset(body.len()),
                endpoints,
            });
        }
        ScopeSnapshot {
            id: NEXT_SCOPE_ID.fetch_add(1, Ordering::Relaxed),
            body: Bytes::from(body),
            structure: structure.finish(),
            endpoints: all_endpoints.finish(),
            clusters,
            deltas: Mutex::new(HashMap::new()),
        }
    }

    /// Encoded bytes shared by the proxies holding this snapshot.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Whether both encode the same outbound config.
    fn same_content(&self, other: &ScopeSnapshot) -> bool {
        self.structure == other.structure
            && self.endpoints == other.endpoints
            && self.body == other.body
    }

    /// The `ClusterEndpoints` of every cluster whose endpoints differ from `before` (every
    /// cluster when `before` is None), encoded as `DiscoveryResponse` field 5 entries.
    /// Computed once per pair of snapshots.
    pub fn endpoints_since(&self, before: Option<&ScopeSnapshot>) -> Bytes {
        let key = before.map_or(0, |b| b.id);
        if let Some(hit) = self.deltas.lock().expect("delta lock").get(&key) {
            return hit.clone();
        }
        let old: HashMap<&str, u64> = before
            .map(|b| b.clusters.iter().map(|c| (&*c.name, c.endpoints)).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for c in &self.clusters {
            if old.get(&*c.name) == Some(&c.endpoints) {
                continue;
            }
            let range = c.range.start as usize..c.range.end as usize;
            let cluster = Cluster::decode(&self.body[range]).expect("encoded by this module");
            let update = ClusterEndpoints {
                cluster: cluster.name,
                endpoints: cluster.endpoints,
            };
            wire::put_message(RESPONSE_ENDPOINTS, &update, &mut out);
        }
        let out = Bytes::from(out);
        let mut deltas = self.deltas.lock().expect("delta lock");
        // Bounded: a snapshot lives one or two generations, each with a few earlier ones.
        if deltas.len() > 64 {
            deltas.clear();
        }
        deltas.insert(key, out.clone());
        out
    }
}

fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("an outbound config under 4 GiB")
}

fn outbound_len_hint(outbound: &Outbound) -> usize {
    outbound.route_table.encoded_len()
        + outbound
            .clusters
            .iter()
            .map(|c| c.encoded_len() + 8)
            .sum::<usize>()
}

/// Scope snapshots by content, across generations: a change that leaves a scope's outbound
/// config alone yields the very snapshot its proxies hold, so they get no push and share it.
#[derive(Default)]
pub struct SnapshotCache {
    by_hash: Mutex<HashMap<u64, Vec<Weak<ScopeSnapshot>>>>,
}

impl SnapshotCache {
    /// The live snapshot equal to `fresh`, else `fresh`, now shared.
    pub fn intern(&self, fresh: ScopeSnapshot) -> Arc<ScopeSnapshot> {
        let key = fresh.structure ^ fresh.endpoints.rotate_left(1);
        let mut map = self.by_hash.lock().expect("snapshot cache");
        let slot = map.entry(key).or_default();
        slot.retain(|w| w.strong_count() > 0);
        if let Some(found) = slot
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.same_content(&fresh))
        {
            return found;
        }
        let shared = Arc::new(fresh);
        slot.push(Arc::downgrade(&shared));
        if map.len() > 1024 {
            map.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
        }
        shared
    }

    /// Live distinct outbound encodings and their bytes.
    pub fn stats(&self) -> (usize, usize) {
        let map = self.by_hash.lock().expect("snapshot cache");
        map.values()
            .flatten()
            .filter_map(Weak::upgrade)
            .fold((0, 0), |(n, bytes), s| (n + 1, bytes + s.body_len()))
    }
}

/// What one proxy is sent: its own encoded part and its scope's shared part, with versions.
#[derive(Debug)]
pub struct ProxySnapshot {
    /// `ProxyConfig` fields of this proxy alone: version, listeners, inbound route table and
    /// cluster, gateway route tables, telemetry.
    head: Bytes,
    pub scope: Option<Arc<ScopeSnapshot>>,
    pub config_version: String,
    pub endpoints_version: String,
    /// Warnings of the translation, sorted.
    pub warnings: Arc<[String]>,
}

impl ProxySnapshot {
    /// Encodes the proxy's own part of `shared`; `scope` is the encoding of `shared.outbound`.
    pub fn new(
        shared: &SharedConfig,
        scope: Option<Arc<ScopeSnapshot>>,
        warnings: Arc<[String]>,
    ) -> ProxySnapshot {
        let own = shared.own().encode_to_vec();
        let mut version = DefaultHasher::new();
        version.write(&own);
        let mut endpoints = DefaultHasher::new();
        if let Some(s) = &scope {
            version.write_u64(s.structure);
            endpoints.write_u64(s.endpoints);
        }
        let config_version = version_string(version.finish());
        let mut head = Vec::with_capacity(own.len() + 24);
        prost::encoding::string::encode(CONFIG_VERSION, &config_version, &mut head);
        head.extend_from_slice(&own);
        ProxySnapshot {
            head: Bytes::from(head),
            scope,
            config_version,
            endpoints_version: version_string(endpoints.finish()),
            warnings,
        }
    }

    /// The encoded `ProxyConfig`, in two parts to be written one after the other.
    pub fn config_parts(&self) -> (Bytes, Bytes) {
        let body = self
            .scope
            .as_ref()
            .map(|s| s.body.clone())
            .unwrap_or_default();
        (self.head.clone(), body)
    }

    /// The config as the proxy decodes it (for config dumps).
    pub fn config(&self) -> ProxyConfig {
        let (head, body) = self.config_parts();
        let mut buf = Vec::with_capacity(head.len() + body.len());
        buf.extend_from_slice(&head);
        buf.extend_from_slice(&body);
        ProxyConfig::decode(buf.as_slice()).expect("encoded by this module")
    }

    /// The ENDPOINTS payload bringing a proxy that holds `before` up to this snapshot.
    pub fn endpoints_since(&self, before: Option<&ProxySnapshot>) -> Bytes {
        match &self.scope {
            Some(s) => s.endpoints_since(before.and_then(|b| b.scope.as_deref())),
            None => Bytes::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::Outbound;
    use mesh_proto::config::v1::{Endpoint, Listener, RouteTable};

    fn outbound(endpoints: &[(&str, &[&str])]) -> Outbound {
        Outbound {
            route_table: RouteTable {
                name: "outbound".into(),
                ..Default::default()
            },
            clusters: endpoints
                .iter()
                .map(|(name, eps)| Cluster {
                    name: name.to_string(),
                    connect_timeout_ms: 1000,
                    endpoints: eps
                        .iter()
                        .map(|a| Endpoint {
                            address: a.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn shared(out: &Outbound) -> SharedConfig {
        SharedConfig {
            listeners: vec![Listener {
                name: "outbound".into(),
                address: "127.0.0.1:15001".into(),
                ..Default::default()
            }],
            outbound: Some(Arc::new(out.clone())),
            inbound: Some((
                RouteTable {
                    name: "inbound".into(),
                    ..Default::default()
                },
                Cluster {
                    name: "inbound|app".into(),
                    ..Default::default()
                },
            )),
            gateway_tables: Vec::new(),
            warnings: Vec::new(),
            // The proxy's own access logs travel with its own part.
            telemetry: Some(mesh_proto::config::v1::Telemetry {
                access_logging: Some(mesh_proto::config::v1::AccessLogging {
                    logs: vec![mesh_proto::config::v1::AccessLog {
                        name: "envoy".into(),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn snapshot(out: &Outbound) -> ProxySnapshot {
        let scope = Arc::new(ScopeSnapshot::encode(out));
        ProxySnapshot::new(&shared(out), Some(scope), Arc::from(Vec::new()))
    }

    #[test]
    fn the_spliced_encoding_decodes_to_the_translated_config() {
        let out = outbound(&[("a", &["127.0.0.1:1"]), ("b", &["127.0.0.1:2"])]);
        let snap = snapshot(&out);
        let mut expected = shared(&out).to_config();
        expected.version = snap.config_version.clone();
        assert_eq!(snap.config(), expected);
        let (head, body) = snap.config_parts();
        let mut whole = head.to_vec();
        whole.extend_from_slice(&body);
        assert_eq!(whole.len(), expected.encoded_len());
    }

    #[test]
    fn endpoint_changes_leave_the_config_version_alone_and_send_only_changed_clusters() {
        let one = snapshot(&outbound(&[
            ("a", &["127.0.0.1:1"]),
            ("b", &["127.0.0.1:2"]),
        ]));
        let two = snapshot(&outbound(&[
            ("a", &["127.0.0.1:1", "127.0.0.1:3"]),
            ("b", &["127.0.0.1:2"]),
        ]));
        assert_eq!(one.config_version, two.config_version);
        assert_ne!(one.endpoints_version, two.endpoints_version);

        let decode = |bytes: Bytes| {
            mesh_proto::discovery::v1::DiscoveryResponse::decode(bytes)
                .unwrap()
                .endpoints
        };
        let delta = decode(two.endpoints_since(Some(&one)));
        assert_eq!(delta.len(), 1);
        assert_eq!(delta[0].cluster, "a");
        assert_eq!(delta[0].endpoints.len(), 2);
        let everything = decode(two.endpoints_since(None));
        assert_eq!(
            everything
                .iter()
                .map(|c| c.cluster.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(
            decode(two.endpoints_since(Some(&two))).is_empty(),
            "nothing changed"
        );
    }

    #[test]
    fn structure_changes_change_the_config_version() {
        let one = snapshot(&outbound(&[("a", &["127.0.0.1:1"])]));
        let mut changed = outbound(&[("a", &["127.0.0.1:1"])]);
        changed.clusters[0].connect_timeout_ms = 5;
        assert_ne!(one.config_version, snapshot(&changed).config_version);
    }

    #[test]
    fn equal_outbound_configs_share_one_snapshot() {
        let cache = SnapshotCache::default();
        let out = outbound(&[("a", &["127.0.0.1:1"])]);
        let first = cache.intern(ScopeSnapshot::encode(&out));
        let again = cache.intern(ScopeSnapshot::encode(&out));
        assert!(Arc::ptr_eq(&first, &again));
        let other = cache.intern(ScopeSnapshot::encode(&outbound(&[("b", &[])])));
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(cache.stats().0, 2);
        drop((first, again));
        assert_eq!(cache.stats().0, 1, "dropped snapshots are not kept");
    }
}
