//! Protocols through the proxy: HTTP/1.1 keep-alive and chunked bodies, HTTP/2 both ways,
//! gRPC in all four shapes with trailers, Upgrade pass-through, and upstream pooling.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use mesh_proto::echo::v1::EchoRequest;
use mesh_proto::echo::v1::echo_client::EchoClient;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn one_cluster(
    app: &mesh_echo::EchoHandle,
    protocol: &str,
) -> std::sync::Arc<mesh_proxy::Server> {
    let mut c = cluster("app", &[app]);
    c["protocol"] = json!(protocol);
    proxy(
        table(json!([{ "name": "app", "domains": ["*"], "routes": [to("app")] }])),
        json!([c]),
    )
    .await
}

#[tokio::test]
async fn http1_keep_alive_reuses_connections_both_sides() {
    let app = echo("app", "v1").await;
    let server = one_cluster(&app, "HTTP1").await;
    let out = out_addr(&server);
    let client = h1_client();
    for _ in 0..50 {
        assert_eq!(
            send_h1(&client, out, "GET", "app", "/", &[], "")
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(app.requests(), 50);
    assert_eq!(
        app.connections(),
        1,
        "one pooled upstream connection served all 50 requests"
    );
    let m = metrics_text(&server);
    assert_eq!(
        metric(&m, "mesh_proxy_downstream_connections_total", "out"),
        1.0
    );
    assert_eq!(
        metric(&m, "mesh_proxy_upstream_connections_total", "app"),
        1.0
    );
}

#[tokio::test]
async fn chunked_request_and_response_bodies_stream() {
    let app = echo("app", "v1").await;
    let server = one_cluster(&app, "HTTP1").await;
    let mut s = tokio::net::TcpStream::connect(out_addr(&server))
        .await
        .unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    // The rest arrives later: the proxy must stream, not wait for a length.
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""body":"hello world""#), "{text}");
}

#[tokio::test]
async fn http2_prior_knowledge_to_http1_and_http2_upstreams() {
    let app = echo("app", "v1").await;
    for protocol in ["HTTP1", "HTTP2", "SAME_AS_DOWNSTREAM"] {
        let server = one_cluster(&app, protocol).await;
        let mut h2 = h2_connection(out_addr(&server)).await;
        let r = send_h2(&mut h2, "app:80", "/x?y=1").await;
        assert_eq!(r.status, StatusCode::OK, "{protocol}");
        let expected = if protocol == "HTTP1" {
            "HTTP/1.1"
        } else {
            "HTTP/2.0"
        };
        assert_eq!(r.json()["protocol"], expected, "{protocol}");
        assert_eq!(r.json()["path"], "/x?y=1");
        let authority = r.json()["headers"]["host"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                r.json()["authority"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            });
        assert_eq!(
            authority, "app:80",
            "{protocol}: upstream sees the original authority"
        );
    }
}

#[tokio::test]
async fn http1_client_to_http2_upstream() {
    let app = echo("app", "v1").await;
    let server = one_cluster(&app, "HTTP2").await;
    let r = get(out_addr(&server), "app", "/h").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["protocol"], "HTTP/2.0");
}

#[tokio::test]
async fn http2_upstream_requests_multiplex_on_one_connection() {
    let app = echo("app", "v1").await;
    let server = one_cluster(&app, "HTTP2").await;
    let out = out_addr(&server);
    let h2 = h2_connection(out).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut h2 = h2.clone();
        tasks.push(tokio::spawn(async move {
            send_h2(&mut h2, "app", "/delay/100").await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        app.connections(),
        1,
        "20 concurrent requests shared one HTTP/2 connection"
    );
}

async fn grpc_client(server: &mesh_proxy::Server) -> EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", out_addr(server)))
        .unwrap()
        .origin("http://echo.grpc:50051".parse().unwrap())
        .connect()
        .await
        .unwrap();
    EchoClient::new(channel)
}

#[tokio::test]
async fn grpc_unary_and_streams_keep_trailers_and_status() {
    let app = echo("grpc", "v1").await;
    let server = one_cluster(&app, "SAME_AS_DOWNSTREAM").await;
    let mut client = grpc_client(&server).await;

    let reply = client
        .unary(EchoRequest {
            message: "hi".into(),
            count: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "hi");
    assert_eq!(reply.name, "grpc");

    let mut stream = client
        .server_stream(EchoRequest {
            message: "s".into(),
            count: 3,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    while let Some(m) = stream.message().await.unwrap() {
        assert_eq!(m.message, "s");
        got += 1;
    }
    assert_eq!(got, 3);

    let outgoing = tokio_stream::iter(["a", "b", "c"].map(|m| EchoRequest {
        message: m.into(),
        count: 0,
    }));
    let reply = client.client_stream(outgoing).await.unwrap().into_inner();
    assert_eq!(reply.message, "abc");

    assert_bidi_echo(&mut client).await;

    // A gRPC error status travels back intact.
    let mut req = tonic::Request::new(EchoRequest {
        message: "x".into(),
        count: 0,
    });
    req.metadata_mut()
        .insert("x-echo-grpc-status", "5".parse().unwrap());
    let err = client.unary(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// A gRPC client ends each request with an empty DATA frame flagged END_STREAM. Passed on as
/// an empty frame of its own, each one counts against the upstream's HTTP/2 flood limit (h2
/// sends GOAWAY ENHANCE_YOUR_CALM after 100 empty DATA frames on a connection), which killed
/// the pooled upstream connection, and the call on it, once per hundred calls.
#[tokio::test]
async fn many_grpc_calls_share_one_upstream_connection_without_a_failure() {
    let app = echo("grpc", "v1").await;
    let server = one_cluster(&app, "SAME_AS_DOWNSTREAM").await;
    let mut client = grpc_client(&server).await;
    for i in 0..250 {
        let reply = client
            .unary(EchoRequest {
                message: format!("call {i}"),
                count: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(reply.into_inner().message, format!("call {i}"));
    }
    let outgoing = tokio_stream::iter((0..150).map(|i| EchoRequest {
        message: i.to_string(),
        count: 0,
    }));
    client
        .client_stream(outgoing)
        .await
        .expect("a long client stream");
    assert_eq!(
        app.connections(),
        1,
        "the upstream connection was never torn down"
    );
}

#[tokio::test]
async fn grpc_unavailable_is_retried_by_default() {
    let app = echo("grpc", "v1").await;
    let server = one_cluster(&app, "SAME_AS_DOWNSTREAM").await;
    let mut client = grpc_client(&server).await;
    let mut req = tonic::Request::new(EchoRequest {
        message: "x".into(),
        count: 0,
    });
    req.metadata_mut()
        .insert("x-echo-grpc-status", "14".parse().unwrap());
    let err = client.unary(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        app.requests(),
        3,
        "Istio's default: 2 retries on unavailable"
    );
}

#[tokio::test]
async fn upgrade_is_passed_through() {
    let app = echo("ws", "v1").await;
    let server = one_cluster(&app, "HTTP1").await;
    let mut s = tokio::net::TcpStream::connect(out_addr(&server))
        .await
        .unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in [&b"ping"[..], b"second message"] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
}
