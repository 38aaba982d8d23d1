//! The discovery stream: connect, subscribe, apply, ACK or NACK, reconnect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_proto::discovery::v1::aggregated_discovery_client::AggregatedDiscoveryClient;
use mesh_proto::discovery::v1::{DiscoveryRequest, DiscoveryResponse, Node, ResourceType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::merge::merge_endpoints;
use crate::metrics::XdsType;
use crate::retry::{Backoff, Jitter};
use crate::server::Server;

/// The versions the proxy holds, kept across reconnects so pilot resends nothing unchanged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    pub config: String,
    pub endpoints: String,
}

pub struct DiscoveryClient {
    server: Arc<Server>,
    address: String,
    node: Node,
    held: Arc<Mutex<Held>>,
}

/// Between reconnects: 200 ms doubling to 5 s, each wait between half and all of that.
const RECONNECT: Backoff = Backoff::new(
    Duration::from_millis(200),
    Duration::from_secs(5),
    Jitter::Equal,
);

impl DiscoveryClient {
    pub fn new(server: Arc<Server>, address: String, node: Node) -> Self {
        Self {
            server,
            address,
            node,
            held: Arc::new(Mutex::new(Held::default())),
        }
    }

    pub fn held(&self) -> Held {
        self.held.lock().expect("held lock").clone()
    }

    /// Runs until `stop` is cancelled, reconnecting with jittered exponential backoff.
    pub async fn run(self, stop: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.stream_once() => r,
            };
            match result {
                Ok(()) => tracing::warn!(pilot = %self.address, "discovery stream closed by pilot"),
                Err(e) => {
                    tracing::warn!(pilot = %self.address, error = %e, "discovery stream failed")
                }
            }
            // A stream that lived a while was healthy: start the backoff over.
            if started.elapsed() > Duration::from_secs(30) {
                failures = 0;
            }
            failures = failures.saturating_add(1);
            let wait = RECONNECT.delay(failures, rand::random::<f64>());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn stream_once(&self) -> Result<(), tonic::Status> {
        let mut client = AggregatedDiscoveryClient::connect(self.address.clone())
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
        let (tx, rx) = mpsc::channel(16);
        let held = self.held();
        let first = |kind: ResourceType, version: String| DiscoveryRequest {
            node: Some(self.node.clone()),
            r#type: kind as i32,
            version_info: version,
            ..Default::default()
        };
        let _ = tx.send(first(ResourceType::Config, held.config)).await;
        let _ = tx
            .send(first(ResourceType::Endpoints, held.endpoints))
            .await;
        let mut responses = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        tracing::info!(pilot = %self.address, node = %self.node.id, "discovery stream open");
        while let Some(resp) = responses.message().await? {
            let answer = self.apply(resp).await;
            if tx.send(answer).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Applies one response and returns the ACK or NACK for it.
    async fn apply(&self, resp: DiscoveryResponse) -> DiscoveryRequest {
        let kind = resp.r#type();
        let result = match kind {
            ResourceType::Config => match resp.config {
                Some(config) => self.server.apply(config).await.map_err(|e| e.to_string()),
                None => Err("CONFIG response without a config".to_string()),
            },
            ResourceType::Endpoints => {
                let current = self.server.snapshot().source.clone();
                match merge_endpoints(current, &resp.endpoints) {
                    Ok(config) => self.server.apply(config).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                }
            }
            ResourceType::Unspecified => Err("response without a resource type".to_string()),
        };
        let mut held = self.held.lock().expect("held lock");
        let mut answer = DiscoveryRequest {
            r#type: kind as i32,
            response_nonce: resp.nonce,
            ..Default::default()
        };
        match result {
            Ok(()) => {
                match kind {
                    ResourceType::Endpoints => held.endpoints = resp.version_info.clone(),
                    _ => {
                        held.config = resp.version_info.clone();
                        // A whole config carries its endpoints too.
                        if !resp.endpoints_version.is_empty() {
                            held.endpoints = resp.endpoints_version.clone();
                        }
                    }
                }
                answer.version_info = resp.version_info;
                tracing::info!(version = %answer.version_info, ?kind, "applied pushed config");
            }
            Err(reason) => {
                answer.version_info = match kind {
                    ResourceType::Endpoints => held.endpoints.clone(),
                    _ => held.config.clone(),
                };
                tracing::warn!(version = %resp.version_info, %reason, "rejected pushed config");
                self.server.metrics().xds_nack(match kind {
                    ResourceType::Endpoints => XdsType::Endpoints,
                    _ => XdsType::Config,
                });
                answer.error_detail = reason;
            }
        }
        answer
    }
}
