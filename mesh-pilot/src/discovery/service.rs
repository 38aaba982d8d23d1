//! The gRPC service: one bidirectional stream per proxy.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use mesh_proto::discovery::v1::aggregated_discovery_server::{
    AggregatedDiscovery, AggregatedDiscoveryServer,
};
use mesh_proto::discovery::v1::{DiscoveryRequest, DiscoveryResponse, ResourceType};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::Discovery;
use super::connection::{Answer, Connection};

/// Serves the discovery protocol on `listener` until `shutdown` resolves.
/// Serves the discovery protocol on `listener` until `stop` is cancelled; then every stream
/// is ended, so proxies see pilot go and reconnect to whichever pilot comes next.
pub async fn serve(
    listener: TcpListener,
    discovery: Arc<Discovery>,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let service = Service {
        discovery,
        stop: stop.clone(),
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(AggregatedDiscoveryServer::new(service).max_decoding_message_size(64 << 20))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned())
        .await
}

struct Service {
    discovery: Arc<Discovery>,
    stop: CancellationToken,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscovery for Service {
    type StreamStream = ResponseStream;

    async fn stream(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut requests = request.into_inner();
        let first = requests
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before the first request"))?;
        let node = first
            .node
            .clone()
            .filter(|n| !n.id.is_empty() && !n.workload.is_empty() && !n.namespace.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument(
                    "the first request must carry node id, workload and namespace",
                )
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let conn = Arc::new(Connection::new(node, tx));
        conn.held(first.r#type(), &first.version_info);
        // The proxy announces both types at once; take the second before the first push so a
        // resumed stream gets nothing it already holds.
        if let Ok(Ok(Some(second))) =
            tokio::time::timeout(Duration::from_millis(50), requests.message()).await
        {
            conn.held(second.r#type(), &second.version_info);
        }
        let discovery = self.discovery.clone();
        let id = discovery.register(conn.clone());
        tracing::info!(proxy = %conn.node.id, "proxy connected");
        tokio::spawn(async move {
            let mesh = discovery.mesh();
            discovery.push(&conn, &mesh, None).await;
            loop {
                let req = match requests.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(proxy = %conn.node.id, error = %e, "stream error");
                        break;
                    }
                };
                match conn.answer(
                    req.r#type(),
                    &req.response_nonce,
                    &req.version_info,
                    &req.error_detail,
                ) {
                    Answer::Ack { since, .. } => {
                        if let Some(since) = since {
                            discovery
                                .metrics
                                .convergence
                                .observe(since.elapsed().as_secs_f64());
                        }
                    }
                    Answer::Nack { kind, reason } => {
                        tracing::warn!(proxy = %conn.node.id, ?kind, %reason, "proxy rejected config");
                        discovery.metrics.push_error(kind.as_str_name());
                    }
                    Answer::Stale => {}
                }
                if req.r#type() == ResourceType::Unspecified {
                    tracing::debug!(proxy = %conn.node.id, "request without a type");
                }
            }
            discovery.unregister(id);
            tracing::info!(proxy = %conn.node.id, "proxy disconnected");
        });
        let responses = ReceiverStream::new(rx).take_until(self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(responses)))
    }
}
