//! `maxConnections` on TCP proxying: a connection over the limit is closed at once, as
//! Envoy's TCP proxy does, and counted.

mod common;

use std::time::Duration;

use common::mesh::{outbound_tcp, sidecar, tcp_echo, tcp_round_trip};
use common::{metric, metrics_text};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn tcp_connections_over_max_connections_are_closed() {
    let app = tcp_echo().await;
    let cfg = outbound_tcp(
        vec![json!({"address": app.to_string()})],
        json!({"circuitBreakers": {"maxConnections": 1}}),
    );
    let server = sidecar(None, cfg).await;
    let out = server.listener_addr("out").unwrap();

    // The first connection is proxied and stays open.
    let mut held = TcpStream::connect(out).await.unwrap();
    held.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    held.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    // The second finds the cluster at its limit: closed without reaching the app.
    assert!(!tcp_round_trip(out, b"second").await);
    let text = metrics_text(&server);
    assert_eq!(
        metric(
            &text,
            "mesh_proxy_upstream_overflow_total",
            "cluster=\"app\""
        ),
        1.0
    );

    // Once the first is gone, a new one gets through.
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        if tcp_round_trip(out, b"third").await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a connection is allowed again after the first closed");
}
