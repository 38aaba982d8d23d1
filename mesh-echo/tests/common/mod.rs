//! Real clients for the echo server: hyper HTTP/1.1 and h2c connections over TCP.

#![allow(dead_code)] // each test binary uses a different subset

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_echo::{EchoConfig, EchoHandle};
use tokio::net::TcpStream;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn config(fail_status: Option<u16>) -> EchoConfig {
    EchoConfig {
        name: "reviews".into(),
        version: "v2".into(),
        fail_status,
    }
}

pub async fn start(fail_status: Option<u16>) -> EchoHandle {
    mesh_echo::spawn("127.0.0.1:0", config(fail_status))
        .await
        .expect("spawn echo")
}

pub fn empty() -> Body {
    Empty::new().boxed()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed()
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(empty()).unwrap()
}

/// One HTTP/1.1 connection (keep-alive) to the server.
pub async fn h1(addr: SocketAddr) -> http1::SendRequest<Body> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, conn) = http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// One HTTP/2 cleartext connection with prior knowledge.
pub async fn h2(addr: SocketAddr) -> http2::SendRequest<Body> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// The response head and its collected body.
pub async fn collect(res: Response<hyper::body::Incoming>) -> (http::response::Parts, Bytes) {
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, bytes)
}

pub async fn send_h1(
    sender: &mut http1::SendRequest<Body>,
    req: Request<Body>,
) -> (http::response::Parts, Bytes) {
    sender.ready().await.unwrap();
    collect(sender.send_request(req).await.unwrap()).await
}

pub async fn send_h2(
    sender: &mut http2::SendRequest<Body>,
    req: Request<Body>,
) -> (http::response::Parts, Bytes) {
    sender.ready().await.unwrap();
    collect(sender.send_request(req).await.unwrap()).await
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("JSON body")
}
