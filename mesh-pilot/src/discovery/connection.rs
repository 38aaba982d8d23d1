//! One connected proxy: what it was sent, what it acknowledged, and the push that brings it up
//! to date with a mesh generation.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use mesh_proto::config::v1::ProxyConfig;
use mesh_proto::discovery::v1::{ClusterEndpoints, DiscoveryResponse, Node, ResourceType};
use serde::Serialize;
use tokio::sync::mpsc;

use super::fingerprint::Fingerprint;

pub type ResponseSender = mpsc::Sender<Result<DiscoveryResponse, tonic::Status>>;

/// What the proxy said about one resource type.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TypeStatus {
    /// Version of the last response sent.
    pub sent: String,
    /// Version the proxy last ACKed (or held when it connected).
    pub acked: String,
    /// Why the proxy rejected the last response, if it did.
    pub nack: Option<String>,
    #[serde(skip)]
    pending_nonce: String,
    #[serde(skip)]
    pending_since: Option<Instant>,
}

impl TypeStatus {
    /// Nothing is awaiting an answer and the last answer was an ACK.
    pub fn in_sync(&self) -> bool {
        self.pending_nonce.is_empty() && self.nack.is_none()
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub config: TypeStatus,
    pub endpoints: TypeStatus,
    /// The config as last sent, endpoints included.
    pub last_sent: Option<Arc<ProxyConfig>>,
    last_fingerprint: Option<Fingerprint>,
    nonce: u64,
    /// The mesh generation last pushed and, for a push caused by a change, when the change
    /// was seen (convergence is measured from there).
    pub generation: u64,
    changed_at: Option<Instant>,
    /// Translation warnings or the error that kept this proxy from getting a config.
    pub problems: Vec<String>,
}

pub struct Connection {
    pub node: Node,
    pub connected_at: std::time::SystemTime,
    tx: ResponseSender,
    pub state: Mutex<State>,
}

/// An ACK or NACK outcome worth recording in metrics.
pub enum Answer {
    Ack {
        kind: ResourceType,
        since: Option<Instant>,
    },
    Nack {
        kind: ResourceType,
        reason: String,
    },
    Stale,
}

impl Connection {
    pub fn new(node: Node, tx: ResponseSender) -> Self {
        Self {
            node,
            connected_at: std::time::SystemTime::now(),
            tx,
            state: Mutex::new(State::default()),
        }
    }

    /// Records what the proxy already holds (from its first requests on a new stream).
    pub fn held(&self, kind: ResourceType, version: &str) {
        let mut s = self.state.lock().expect("connection lock");
        match kind {
            ResourceType::Endpoints => s.endpoints.acked = version.to_string(),
            _ => s.config.acked = version.to_string(),
        }
    }

    /// Sends what differs between `config` and what the proxy holds: the whole config when its
    /// structure changed, else only the endpoints that changed. Returns the types sent.
    pub async fn push(
        &self,
        mut config: ProxyConfig,
        generation: u64,
        changed_at: Option<Instant>,
    ) -> Vec<ResourceType> {
        let fingerprint = Fingerprint::of(&config);
        config.version = fingerprint.config.clone();
        let responses = {
            let mut s = self.state.lock().expect("connection lock");
            s.generation = generation;
            s.changed_at = changed_at;
            let mut out = Vec::new();
            let structure_known = s.config.sent == fingerprint.config
                || (s.config.sent.is_empty() && s.config.acked == fingerprint.config);
            if !structure_known {
                s.nonce += 1;
                let nonce = s.nonce.to_string();
                mark_pending(&mut s.config, &fingerprint.config, &nonce);
                // The whole config carries the endpoints too.
                mark_pending(&mut s.endpoints, &fingerprint.endpoints, "");
                s.endpoints.acked = fingerprint.endpoints.clone();
                out.push(DiscoveryResponse {
                    r#type: ResourceType::Config as i32,
                    version_info: fingerprint.config.clone(),
                    nonce,
                    config: Some(config.clone()),
                    endpoints: Vec::new(),
                    endpoints_version: fingerprint.endpoints.clone(),
                });
            } else {
                let endpoints_known = s.endpoints.sent == fingerprint.endpoints
                    || (s.endpoints.sent.is_empty() && s.endpoints.acked == fingerprint.endpoints);
                if !endpoints_known {
                    // Without a record of what was sent (a resumed stream), send every cluster.
                    let changed = fingerprint.changed_clusters(s.last_fingerprint.as_ref());
                    let endpoints = config
                        .clusters
                        .iter()
                        .filter(|c| changed.contains(&c.name.as_str()))
                        .map(|c| ClusterEndpoints {
                            cluster: c.name.clone(),
                            endpoints: c.endpoints.clone(),
                        })
                        .collect();
                    s.nonce += 1;
                    let nonce = s.nonce.to_string();
                    mark_pending(&mut s.endpoints, &fingerprint.endpoints, &nonce);
                    out.push(DiscoveryResponse {
                        r#type: ResourceType::Endpoints as i32,
                        version_info: fingerprint.endpoints.clone(),
                        nonce,
                        config: None,
                        endpoints,
                        endpoints_version: String::new(),
                    });
                }
            }
            s.last_sent = Some(Arc::new(config));
            s.last_fingerprint = Some(fingerprint);
            out
        };
        let mut sent = Vec::new();
        for r in responses {
            let kind = r.r#type();
            if self.tx.send(Ok(r)).await.is_ok() {
                sent.push(kind);
            }
        }
        sent
    }

    /// Records an ACK or NACK. Answers to a superseded nonce are ignored.
    pub fn answer(&self, kind: ResourceType, nonce: &str, version: &str, error: &str) -> Answer {
        let mut s = self.state.lock().expect("connection lock");
        let status = match kind {
            ResourceType::Endpoints => &mut s.endpoints,
            _ => &mut s.config,
        };
        if nonce.is_empty() || status.pending_nonce != nonce {
            return Answer::Stale;
        }
        let since = status.pending_since.take();
        status.pending_nonce.clear();
        if error.is_empty() {
            status.acked = version.to_string();
            status.nack = None;
            let changed_at = s.changed_at;
            Answer::Ack {
                kind,
                since: changed_at.or(since),
            }
        } else {
            status.nack = Some(error.to_string());
            Answer::Nack {
                kind,
                reason: error.to_string(),
            }
        }
    }
}

fn mark_pending(status: &mut TypeStatus, version: &str, nonce: &str) {
    status.sent = version.to_string();
    status.pending_nonce = nonce.to_string();
    status.pending_since = Some(Instant::now());
}
