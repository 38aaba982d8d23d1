//! The proxy's discovery client against a scripted control plane over real gRPC: it applies
//! a pushed config and ACKs it, NACKs a bad one while serving on the last good config, and
//! resumes with the versions it holds after a reconnect.

mod common;

use std::pin::Pin;
use std::time::Duration;

use common::*;
use futures_util::Stream;
use http::StatusCode;
use mesh_proto::discovery::v1::aggregated_discovery_server::{
    AggregatedDiscovery, AggregatedDiscoveryServer,
};
use mesh_proto::discovery::v1::{
    DiscoveryRequest, DiscoveryResponse, Node, ProxyAddresses, ResourceType,
};
use mesh_proxy::discovery::DiscoveryClient;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// One proxy stream as the test sees it: its requests, and where to send responses.
type StreamEnds = (
    Streaming<DiscoveryRequest>,
    mpsc::Sender<Result<DiscoveryResponse, Status>>,
);

/// Each stream's requests go to the test; the test sends the responses.
struct Scripted {
    streams: mpsc::Sender<StreamEnds>,
}

type Out = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscovery for Scripted {
    type StreamStream = Out;
    async fn stream(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Out>, Status> {
        let (tx, rx) = mpsc::channel(4);
        self.streams.send((req.into_inner(), tx)).await.unwrap();
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn push(
    version: &str,
    nonce: &str,
    config: mesh_proto::config::v1::ProxyConfig,
) -> Result<DiscoveryResponse, Status> {
    Ok(DiscoveryResponse {
        r#type: ResourceType::Config as i32,
        version_info: version.into(),
        nonce: nonce.into(),
        config: Some(config),
        endpoints: Vec::new(),
        endpoints_version: String::new(),
    })
}

async fn next(requests: &mut Streaming<DiscoveryRequest>) -> DiscoveryRequest {
    tokio::time::timeout(Duration::from_secs(10), requests.message())
        .await
        .expect("the proxy answered")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn applies_acks_nacks_and_resumes() {
    let app = echo("app", "v1").await;
    let good = config(json!({
        "listeners": [{ "name": "out", "address": "127.0.0.1:0", "direction": "OUTBOUND",
                        "protocol": "HTTP", "routeTable": "out" }],
        "routeTables": [table(json!([{ "name": "a", "domains": ["app"], "routes": [to("app")] }]))],
        "clusters": [cluster("app", &[&app])],
    }));
    let mut bad = good.clone();
    bad.route_tables[0].virtual_hosts[0].routes[0].r#match =
        Some(serde_json::from_value(json!({"path": {"regex": "("}})).unwrap());

    let (streams_tx, mut streams) = mpsc::channel(4);
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServer::new(Scripted {
                streams: streams_tx,
            }))
            .serve_with_incoming(TcpListenerStream::new(grpc)),
    );

    let server = mesh_proxy::Server::new();
    let node = Node {
        id: "app-v1.default".into(),
        workload: "app-v1".into(),
        namespace: "default".into(),
        addresses: Some(ProxyAddresses::default()),
        ..Default::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(
        DiscoveryClient::new(server.clone(), format!("http://{grpc_addr}"), node).run(stop.clone()),
    );

    let (mut requests, responses) = streams.recv().await.unwrap();
    let first = next(&mut requests).await;
    assert_eq!(first.node.as_ref().unwrap().id, "app-v1.default");
    assert_eq!(first.r#type(), ResourceType::Config);
    assert_eq!(first.version_info, "", "nothing held yet");
    assert_eq!(next(&mut requests).await.r#type(), ResourceType::Endpoints);
    assert!(!server.is_ready(), "not ready before the first config");

    responses.send(push("v1", "n1", good)).await.unwrap();
    let ack = next(&mut requests).await;
    assert_eq!(
        (
            ack.version_info.as_str(),
            ack.response_nonce.as_str(),
            ack.error_detail.as_str()
        ),
        ("v1", "n1", "")
    );
    assert!(server.is_ready());
    let listen = out_addr(&server);
    assert_eq!(get(listen, "app", "/").await.status, StatusCode::OK);

    responses.send(push("v2", "n2", bad)).await.unwrap();
    let nack = next(&mut requests).await;
    assert_eq!(nack.response_nonce, "n2");
    assert_eq!(
        nack.version_info, "v1",
        "a NACK reports the version still held"
    );
    assert!(nack.error_detail.contains("regex"), "{}", nack.error_detail);
    let text = metrics_text(&server);
    assert_eq!(
        metric(&text, "mesh_proxy_xds_nacks_total", "type=\"config\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        get(listen, "app", "/").await.status,
        StatusCode::OK,
        "last good config serves"
    );

    // The control plane goes away; the proxy keeps serving and comes back holding v1.
    drop(responses);
    drop(requests);
    assert_eq!(get(listen, "app", "/").await.status, StatusCode::OK);
    let (mut requests, _responses) = tokio::time::timeout(Duration::from_secs(10), streams.recv())
        .await
        .expect("the proxy reconnected")
        .unwrap();
    let resumed = next(&mut requests).await;
    assert_eq!(resumed.r#type(), ResourceType::Config);
    assert_eq!(resumed.version_info, "v1");
    stop.cancel();
}
