//! The request path's shared pieces over real sockets: every kind of upstream connection (TCP,
//! HTTP upgrade) is counted by least-request while it is open, so long-lived connections steer
//! new ones to the other endpoint.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::config;
use common::mesh::outbound_tcp;
use mesh_proxy::Server;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How many connections each test opens and holds.
const CONNECTIONS: usize = 20;

/// A backend that reports its `id` on `accepted` for every connection, answers an HTTP
/// upgrade request with 101 when `upgrade` is set, and then holds the connection open.
async fn holding_backend(id: usize, upgrade: bool, accepted: mpsc::Sender<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                if upgrade {
                    read_head(&mut s).await;
                    let switched = b"HTTP/1.1 101 Switching Protocols\r\n\
                        connection: upgrade\r\nupgrade: test\r\n\r\n";
                    if s.write_all(switched).await.is_err() {
                        return;
                    }
                }
                let _ = accepted.send(id).await;
                // Held until the peer closes.
                let mut buf = [0u8; 64];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Reads up to the end of an HTTP head (bounded by the head size).
async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

/// Opens `CONNECTIONS` connections one after another with `open`, keeping them all, and checks
/// after each that the two backends hold equal shares (within one): least-request sends each
/// new connection to the endpoint with fewer open ones.
async fn assert_connections_alternate<F, Fut>(mut accepted: mpsc::Receiver<usize>, open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = TcpStream>,
{
    let mut held = Vec::new();
    let mut counts = [0usize; 2];
    for i in 0..CONNECTIONS {
        held.push(open().await);
        let backend = tokio::time::timeout(Duration::from_secs(5), accepted.recv())
            .await
            .expect("a backend accepts within 5 s")
            .expect("backends run");
        counts[backend] += 1;
        assert!(
            counts[0].abs_diff(counts[1]) <= 1,
            "connection {i}: open connections per backend {counts:?}"
        );
    }
}

#[tokio::test]
async fn tcp_connections_count_for_least_request() {
    let (tx, rx) = mpsc::channel(CONNECTIONS);
    let a = holding_backend(0, false, tx.clone()).await;
    let b = holding_backend(1, false, tx).await;
    // No lbPolicy: LEAST_REQUEST, Istio's default.
    let cfg = outbound_tcp(
        vec![
            json!({ "address": a.to_string() }),
            json!({ "address": b.to_string() }),
        ],
        json!({}),
    );
    let server = Server::new();
    server.apply(cfg).await.unwrap();
    let proxy = server.listener_addr("out").unwrap();
    assert_connections_alternate(rx, || async move {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        s
    })
    .await;
}

#[tokio::test]
async fn upgraded_connections_count_for_least_request() {
    let (tx, rx) = mpsc::channel(CONNECTIONS);
    let a = holding_backend(0, true, tx.clone()).await;
    let b = holding_backend(1, true, tx).await;
    let cfg = config(json!({
        "version": "1",
        "listeners": [{
            "name": "out", "address": "127.0.0.1:0", "direction": "OUTBOUND",
            "protocol": "HTTP", "routeTable": "out"
        }],
        "routeTables": [{ "name": "out", "virtualHosts": [{
            "name": "ws", "domains": ["*"],
            "routes": [{ "route": { "clusters": [{ "cluster": "ws", "weight": 100 }] } }]
        }]}],
        "clusters": [{ "name": "ws", "endpoints": [
            { "address": a.to_string() }, { "address": b.to_string() }
        ]}],
    }));
    let server = Server::new();
    server.apply(cfg).await.unwrap();
    let proxy = server.listener_addr("out").unwrap();
    assert_connections_alternate(rx, || async move {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(
            b"GET /ws HTTP/1.1\r\nhost: ws\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n",
        )
        .await
        .unwrap();
        let head = read_head(&mut s).await;
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        s
    })
    .await;
}
