//! Pilot's own metrics with Istio's names: a proxy that rejects (NACKs) a push is counted in
//! `pilot_total_xds_rejects`, and every push's wait in the queue in `pilot_proxy_queue_time`,
//! both read from pilot's `/metrics` over HTTP.

use std::time::Duration;

use mesh_pilot::server::Pilot;
use mesh_pilot::watch::Debounce;
use mesh_proto::discovery::v1::aggregated_discovery_client::AggregatedDiscoveryClient;
use mesh_proto::discovery::v1::{DiscoveryRequest, Node, ProxyAddresses, ResourceType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;

const WORKLOAD: &str = "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: ratings-v1, namespace: default }
spec:
  address: 127.0.0.1
  labels: { app: ratings, version: v1 }
";

async fn metrics_text(pilot: &Pilot) -> String {
    let mut s = tokio::net::TcpStream::connect(pilot.http_addr)
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: pilot\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
        .await
        .expect("pilot answers /metrics")
        .unwrap();
    text
}

#[tokio::test]
async fn a_nack_is_counted_as_a_reject_and_queue_time_is_observed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workload.yaml"), WORKLOAD).unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pilot = Pilot::start(dir.path(), grpc, http, Debounce::default())
        .await
        .unwrap();

    let mut client = AggregatedDiscoveryClient::connect(format!("http://{}", pilot.grpc_addr))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: "ratings-v1.default".into(),
            workload: "ratings-v1".into(),
            namespace: "default".into(),
            addresses: Some(ProxyAddresses {
                inbound: "127.0.0.1:19085".into(),
                application: "127.0.0.1:29085".into(),
                ..Default::default()
            }),
            admin: String::new(),
        }),
        r#type: ResourceType::Config as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let push = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("pilot pushes a config")
        .unwrap()
        .expect("a response");
    assert_eq!(push.r#type(), ResourceType::Config);
    tx.send(DiscoveryRequest {
        r#type: ResourceType::Config as i32,
        response_nonce: push.nonce.clone(),
        error_detail: "listener in: address already in use".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let rejects = "pilot_total_xds_rejects_total{type=\"CONFIG\"} 1";
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics_text(&pilot).await;
        if text.contains(rejects) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(text.contains(rejects), "{text}");
    let queued = text
        .lines()
        .find(|l| l.starts_with("pilot_proxy_queue_time_count"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(queued >= Some(1), "the push went through the queue: {text}");
    drop(tx);
    pilot.shutdown().await;
}
