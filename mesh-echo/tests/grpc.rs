//! gRPC on the shared port with a real tonic client: the four methods, the status override
//! and a broken replica.

mod common;

use std::time::Duration;

use common::start;
use mesh_proto::echo::v1::EchoRequest;
use mesh_proto::echo::v1::echo_client::EchoClient;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn client(addr: std::net::SocketAddr) -> EchoClient<Channel> {
    EchoClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

fn req(message: &str, count: u32) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        count,
    }
}

#[tokio::test]
async fn unary_echoes_message_identity_and_metadata() {
    let echo = start(None).await;
    let mut c = client(echo.addr()).await;
    let mut request = Request::new(req("hi", 0));
    request
        .metadata_mut()
        .insert("x-request-id", "abc".parse().unwrap());
    let res = c.unary(request).await.unwrap().into_inner();

    assert_eq!(res.message, "hi");
    assert_eq!(res.name, "reviews");
    assert_eq!(res.version, "v2");
    assert_eq!(res.metadata["x-request-id"], "abc");
    assert!(res.metadata["content-type"].starts_with("application/grpc"));
    assert_eq!(echo.requests(), 1);
}

#[tokio::test]
async fn server_stream_sends_count_responses() {
    let echo = start(None).await;
    let mut c = client(echo.addr()).await;
    let stream = c.server_stream(req("tick", 3)).await.unwrap().into_inner();
    let all: Vec<_> = stream.collect::<Result<_, _>>().await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(
        all.iter()
            .all(|r| r.message == "tick" && r.name == "reviews")
    );
}

#[tokio::test]
async fn client_stream_concatenates_messages() {
    let echo = start(None).await;
    let mut c = client(echo.addr()).await;
    let outbound = tokio_stream::iter(["a", "b", "c"].map(|m| req(m, 0)));
    let res = c.client_stream(outbound).await.unwrap().into_inner();
    assert_eq!(res.message, "abc");
    assert_eq!(res.version, "v2");
}

#[tokio::test]
async fn bidi_stream_answers_each_message_as_it_arrives() {
    let echo = start(None).await;
    let mut c = client(echo.addr()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(req("first", 0)).await.unwrap();
    let mut inbound = c
        .bidi_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    // The request stream stays open: each answer must come before the next message is sent.
    for message in ["first", "second", "third"] {
        if message != "first" {
            tx.send(req(message, 0)).await.unwrap();
        }
        let res = tokio::time::timeout(Duration::from_secs(2), inbound.next())
            .await
            .expect("answer while the request stream is still open")
            .unwrap()
            .unwrap();
        assert_eq!(res.message, message);
    }
    drop(tx);
    assert!(inbound.next().await.is_none());
}

#[tokio::test]
async fn grpc_status_header_makes_methods_fail() {
    let echo = start(None).await;
    let mut c = client(echo.addr()).await;

    let mut request = Request::new(req("x", 0));
    request
        .metadata_mut()
        .insert(mesh_echo::GRPC_STATUS_HEADER, "14".parse().unwrap());
    let err = c.unary(request).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("14"), "{}", err.message());

    let mut request = Request::new(req("x", 2));
    request
        .metadata_mut()
        .insert(mesh_echo::GRPC_STATUS_HEADER, "8".parse().unwrap());
    let err = c.server_stream(request).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);

    let mut request = Request::new(tokio_stream::iter([req("x", 0)]));
    request
        .metadata_mut()
        .insert(mesh_echo::GRPC_STATUS_HEADER, "4".parse().unwrap());
    let err = c.bidi_stream(request).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);

    // Without the header the same client succeeds.
    assert!(c.unary(req("ok", 0)).await.is_ok());
}

#[tokio::test]
async fn grpc_status_is_trailers_only() {
    use common::{h2, send_h2};
    let echo = start(None).await;
    let mut c = h2(echo.addr()).await;
    let req = http::Request::post(format!("http://{}/mesh.echo.v1.Echo/Unary", echo.addr()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(mesh_echo::GRPC_STATUS_HEADER, "14")
        .body(common::full(vec![0u8, 0, 0, 0, 0]))
        .unwrap();
    let (head, body) = send_h2(&mut c, req).await;
    assert_eq!(head.status, http::StatusCode::OK);
    // Trailers-only: grpc-status arrives in the response headers, with no message.
    assert_eq!(head.headers["grpc-status"], "14");
    assert!(head.headers.contains_key("grpc-message"));
    assert!(body.is_empty());
}

#[tokio::test]
async fn fail_status_applies_to_grpc_as_http_status() {
    let echo = start(Some(503)).await;
    let mut c = client(echo.addr()).await;
    let err = c.unary(req("x", 0)).await.unwrap_err();
    // tonic maps HTTP 503 to UNAVAILABLE, as the gRPC spec says.
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(echo.requests(), 1);
}
