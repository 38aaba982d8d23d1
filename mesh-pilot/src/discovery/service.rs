//! The gRPC service: one bidirectional stream per proxy.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use mesh_proto::discovery::v1::{DiscoveryRequest, ResourceType};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::Discovery;
use super::connection::{Answer, Connection};
use super::wire::{DiscoveryServer, ResponseStream, StreamHandler};

/// Responses queued per stream; pushes to one proxy wait for its answer, so few are needed.
const STREAM_BUFFER: usize = 4;

/// Serves the discovery protocol on `listener` until `stop` is cancelled; then every stream
/// is ended, so proxies see pilot go and reconnect to whichever pilot comes next.
pub async fn serve(
    listener: TcpListener,
    discovery: Arc<Discovery>,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let service = Arc::new(Service {
        discovery,
        stop: stop.clone(),
    });
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(DiscoveryServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned())
        .await
}

struct Service {
    discovery: Arc<Discovery>,
    stop: CancellationToken,
}

impl StreamHandler for Service {
    fn stream(
        self: Arc<Self>,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> BoxFuture<'static, Result<Response<ResponseStream>, Status>> {
        Box::pin(async move { self.open(request.into_inner()).await })
    }
}

impl Service {
    async fn open(
        &self,
        mut requests: Streaming<DiscoveryRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
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
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
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
        tracing::info!(proxy = %conn.node.id, "proxy connected");
        // Registering queues the first push.
        let id = discovery.register(conn.clone());
        tokio::spawn(async move {
            read_answers(&discovery, &conn, requests).await;
            discovery.unregister(id);
            tracing::info!(proxy = %conn.node.id, "proxy disconnected");
        });
        let responses = ReceiverStream::new(rx).take_until(self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(responses)))
    }
}

/// Records the proxy's ACKs and NACKs until its stream ends.
async fn read_answers(
    discovery: &Discovery,
    conn: &Connection,
    mut requests: Streaming<DiscoveryRequest>,
) {
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
                discovery.metrics.rejected(kind.as_str_name());
            }
            Answer::Stale => {}
        }
        if req.r#type() == ResourceType::Unspecified {
            tracing::debug!(proxy = %conn.node.id, "request without a type");
        }
    }
}
