//! The proxy's HTTP/1.1 client against upstreams that answer byte for byte as scripted:
//! interim responses, bodies delimited by the close, HEAD, responses that frame themselves two
//! ways, stray bytes after a response, servers that close idle connections, and a server that
//! answers while the request body is still coming.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted upstream does after writing one response.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    KeepOpen,
    Close,
}

/// An upstream that answers every request on every connection with `response` verbatim,
/// and counts its connections.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Connections the upstream has closed.
    closed: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start(response: &'static [u8], then: Then) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (counted, closes) = (connections.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let closes = closes.clone();
                tokio::spawn(async move {
                    while read_request_head(&mut s).await {
                        if s.write_all(response).await.is_err() || then == Then::Close {
                            break;
                        }
                    }
                    drop(s);
                    closes.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            connections,
            closed,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until the upstream has closed `n` connections.
    async fn closed(&self, n: usize) {
        let wait = async {
            while self.closed.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the upstream closed its connection");
    }

    async fn proxy(&self) -> Arc<mesh_proxy::Server> {
        proxy_to(self.addr).await
    }
}

/// A proxy whose every request goes to `upstream` over HTTP/1.1.
async fn proxy_to(upstream: SocketAddr) -> Arc<mesh_proxy::Server> {
    proxy(
        table(json!([{ "name": "all", "domains": ["*"], "routes": [to("up")] }])),
        json!([{
            "name": "up", "lbPolicy": "ROUND_ROBIN", "protocol": "HTTP1",
            "endpoints": [{ "address": upstream.to_string() }],
        }]),
    )
    .await
}

/// Reads one request head (the tests' requests have no body); false at the end of the stream.
async fn read_request_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

async fn request(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
    method: &str,
) -> Reply {
    send_h1(client, proxy, method, "up", "/", &[], "").await
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let up = Scripted::start(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Then::KeepOpen,
    )
    .await;
    let server = up.proxy().await;
    let r = get(out_addr(&server), "up", "/").await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]));
}

#[tokio::test]
async fn a_body_delimited_by_the_close_is_passed_whole_and_its_connection_not_reused() {
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", Then::Close).await;
    let server = up.proxy().await;
    let client = h1_client();
    for _ in 0..2 {
        let r = request(&client, out_addr(&server), "GET").await;
        assert_eq!(
            (r.status, &r.body[..]),
            (StatusCode::OK, &b"until the end"[..])
        );
    }
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn a_head_response_has_no_body_and_keeps_its_connection() {
    let up = Scripted::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
        Then::KeepOpen,
    )
    .await;
    let server = up.proxy().await;
    let client = h1_client();
    for _ in 0..3 {
        let r = request(&client, out_addr(&server), "HEAD").await;
        assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    }
    assert_eq!(up.connections(), 1, "every HEAD went on one connection");
}

#[tokio::test]
async fn a_response_framed_two_ways_is_refused() {
    // Which framing is meant is ambiguous: passing either on is how responses are smuggled.
    let up = Scripted::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n",
        Then::KeepOpen,
    )
    .await;
    let server = up.proxy().await;
    let r = get(out_addr(&server), "up", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !String::from_utf8_lossy(&r.body).contains("HTTP/1.1"),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn bytes_past_a_response_close_its_connection() {
    let up = Scripted::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\noksurplus",
        Then::KeepOpen,
    )
    .await;
    let server = up.proxy().await;
    let client = h1_client();
    for _ in 0..2 {
        let r = request(&client, out_addr(&server), "GET").await;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]));
    }
    assert_eq!(
        up.connections(),
        2,
        "the connection with stray bytes was not reused"
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_used() {
    // Keep-alive by its headers, closed by the server right after: the pool must notice
    // before it sends the next request there.
    let up = Scripted::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Then::Close,
    )
    .await;
    let server = up.proxy().await;
    let client = h1_client();
    for i in 0..5 {
        let r = request(&client, out_addr(&server), "GET").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        // The next request goes out once the server has closed this connection.
        up.closed(i + 1).await;
    }
    assert_eq!(up.connections(), 5);
}

/// An upstream that streams every request body straight back as it reads it.
async fn streaming_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(req.into_body()))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_response_streams_while_the_request_body_is_still_sent() {
    let server = proxy_to(streaming_echo().await).await;
    // Far more than the sockets buffer: unless the proxy reads the response while it still
    // sends the request, both ends wait on each other.
    const CHUNKS: usize = 256;
    const CHUNK: usize = 32 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let stream = TcpStream::connect(out_addr(&server)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/echo")
        .header("host", "up")
        .body(body)
        .unwrap();
    let feed = tokio::spawn(async move {
        for _ in 0..CHUNKS {
            if tx
                .send(Ok(Frame::data(Bytes::from(vec![b'x'; CHUNK]))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let exchange = async {
        let resp = sender.send_request(req).await.expect("response head");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body()
            .collect()
            .await
            .expect("whole body")
            .to_bytes()
            .len()
    };
    let echoed = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("request and response streamed at once, without a deadlock");
    assert_eq!(echoed, CHUNKS * CHUNK);
    feed.await.unwrap();
}
