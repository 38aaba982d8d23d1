//! One connected proxy: what it was sent, what it acknowledged, and the response that brings
//! it up to date with a snapshot. What was sent is kept as the shared snapshot (an `Arc`),
//! never as a per-connection copy of the config.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_proto::discovery::v1::{Node, ResourceType};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::snapshot::ProxySnapshot;
use super::wire::WireResponse;

pub type ResponseSender = mpsc::Sender<Result<WireResponse, tonic::Status>>;

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
    pending_nonce: u64,
    #[serde(skip)]
    pending_since: Option<Instant>,
}

impl TypeStatus {
    /// Nothing is awaiting an answer and the last answer was an ACK.
    pub fn in_sync(&self) -> bool {
        self.pending_nonce == 0 && self.nack.is_none()
    }

    /// Whether the proxy has, or is being sent, `version`.
    fn holds(&self, version: &str) -> bool {
        self.sent == version || (self.sent.is_empty() && self.acked == version)
    }

    fn mark_pending(&mut self, version: &str, nonce: u64) {
        self.sent = version.to_string();
        self.pending_nonce = nonce;
        self.pending_since = Some(Instant::now());
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub config: TypeStatus,
    pub endpoints: TypeStatus,
    /// What the proxy was last sent (endpoints included), shared with the proxies of its scope.
    pub last_sent: Option<Arc<ProxySnapshot>>,
    nonce: u64,
    /// The mesh generation last pushed and, for a push caused by a change, when the change
    /// was seen (convergence is measured from there).
    pub generation: u64,
    changed_at: Option<Instant>,
    /// Translation warnings or the error that kept this proxy from getting a config.
    pub problems: Arc<[String]>,
}

pub struct Connection {
    pub node: Node,
    pub connected_at: std::time::SystemTime,
    tx: ResponseSender,
    pub state: Mutex<State>,
    /// The nonce of the last answered response; `u64::MAX` once the stream is gone.
    answered: watch::Sender<u64>,
    /// Held while a push is computed, sent and answered, so pushes to one proxy never overlap.
    pub(super) pushing: tokio::sync::Mutex<()>,
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

/// A response ready to go, with the nonce its answer will carry.
pub struct Outgoing {
    pub response: WireResponse,
    nonce: u64,
}

impl Connection {
    pub fn new(node: Node, tx: ResponseSender) -> Self {
        Self {
            node,
            connected_at: std::time::SystemTime::now(),
            tx,
            state: Mutex::new(State::default()),
            answered: watch::Sender::new(0),
            pushing: tokio::sync::Mutex::new(()),
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

    /// Records a translation failure: the proxy keeps what it has.
    pub fn failed(&self, generation: u64, problem: String) {
        let mut s = self.state.lock().expect("connection lock");
        s.generation = generation;
        s.problems = Arc::from(vec![problem]);
    }

    /// What to send so the proxy holds `snapshot`: the whole config when its structure is
    /// not what the proxy holds, else only the endpoints that changed, else nothing.
    pub fn prepare(
        &self,
        snapshot: Arc<ProxySnapshot>,
        generation: u64,
        changed_at: Option<Instant>,
    ) -> Option<Outgoing> {
        let mut s = self.state.lock().expect("connection lock");
        s.generation = generation;
        s.problems = snapshot.warnings.clone();
        let out = if !s.config.holds(&snapshot.config_version) {
            s.nonce += 1;
            let nonce = s.nonce;
            s.config.mark_pending(&snapshot.config_version, nonce);
            // The whole config carries the endpoints too.
            s.endpoints.mark_pending(&snapshot.endpoints_version, 0);
            s.endpoints.acked = snapshot.endpoints_version.clone();
            Some(Outgoing {
                response: WireResponse::config(
                    &snapshot.config_version,
                    &nonce.to_string(),
                    &snapshot.endpoints_version,
                    snapshot.config_parts(),
                ),
                nonce,
            })
        } else if !s.endpoints.holds(&snapshot.endpoints_version) {
            // Without a record of what was sent (a resumed stream), every cluster is sent.
            let endpoints = snapshot.endpoints_since(s.last_sent.as_deref());
            s.nonce += 1;
            let nonce = s.nonce;
            s.endpoints.mark_pending(&snapshot.endpoints_version, nonce);
            Some(Outgoing {
                response: WireResponse::endpoints(
                    &snapshot.endpoints_version,
                    &nonce.to_string(),
                    endpoints,
                ),
                nonce,
            })
        } else {
            None
        };
        if out.is_some() {
            s.changed_at = changed_at;
        }
        s.last_sent = Some(snapshot);
        out
    }

    /// Sends `out`, calls `on_sent`, and waits until the proxy answers it, the stream ends,
    /// or `patience` runs out. None when the stream is gone.
    pub async fn send(
        &self,
        out: Outgoing,
        patience: Duration,
        on_sent: impl FnOnce(),
    ) -> Option<()> {
        let mut answered = self.answered.subscribe();
        self.tx.send(Ok(out.response)).await.ok()?;
        on_sent();
        let _ = tokio::time::timeout(patience, answered.wait_for(|n| *n >= out.nonce)).await;
        Some(())
    }

    /// The stream ended: nobody waits for its answers any more.
    pub fn closed(&self) {
        self.answered.send_replace(u64::MAX);
    }

    /// Records an ACK or NACK. Answers to a superseded nonce are ignored.
    pub fn answer(&self, kind: ResourceType, nonce: &str, version: &str, error: &str) -> Answer {
        let mut s = self.state.lock().expect("connection lock");
        let changed_at = s.changed_at;
        let status = match kind {
            ResourceType::Endpoints => &mut s.endpoints,
            _ => &mut s.config,
        };
        let Ok(nonce) = nonce.parse::<u64>() else {
            return Answer::Stale;
        };
        if nonce == 0 || status.pending_nonce != nonce {
            return Answer::Stale;
        }
        let since = status.pending_since.take();
        status.pending_nonce = 0;
        let answer = if error.is_empty() {
            status.acked = version.to_string();
            status.nack = None;
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
        };
        drop(s);
        self.answered.send_if_modified(|n| {
            let newer = nonce > *n;
            if newer {
                *n = nonce;
            }
            newer
        });
        answer
    }
}
