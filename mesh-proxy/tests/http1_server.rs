//! The proxy's downstream HTTP/1.1 server, byte for byte from raw TCP clients: requests
//! without a body or with a declared length served by the connection's own codec, anything else
//! by hyper, on one connection, in order; bodies read as they are sent on, HEAD, streamed
//! (chunked) responses, local replies, a body left unread, and a client hanging up.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{out_addr, proxy, table};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the upstream lets the test see and steer.
#[derive(Clone, Default)]
struct Upstream {
    /// Releases the second chunk of `/stream`.
    release: Arc<Notify>,
    /// Set when a `/slow` request is dropped before it was answered.
    cancelled: Arc<AtomicBool>,
}

/// Sets its flag when dropped unanswered.
struct Cancelled(Arc<AtomicBool>);

impl Drop for Cancelled {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `/len/N`: N bytes `a`; `/echo`: the number of body bytes read; `/stream`: a chunk, then
/// another once released; `/gate`: `done` once released; `/slow`: never answers.
async fn answer(up: Upstream, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(n) = path.strip_prefix("/len/") {
        let body = "a".repeat(n.parse().unwrap());
        return Ok(Response::new(Full::new(Bytes::from(body)).boxed()));
    }
    match path.as_str() {
        "/echo" => {
            let len = req.into_body().collect().await.unwrap().to_bytes().len();
            Ok(Response::new(
                Full::new(Bytes::from(len.to_string())).boxed(),
            ))
        }
        "/stream" => {
            let release = up.release.clone();
            let chunks = futures_util::stream::unfold(0, move |i| {
                let release = release.clone();
                async move {
                    match i {
                        0 => Some((Ok(Frame::data(Bytes::from_static(b"first"))), 1)),
                        1 => {
                            release.notified().await;
                            Some((Ok(Frame::data(Bytes::from_static(b"second"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            Ok(Response::new(StreamBody::new(chunks).boxed()))
        }
        "/gate" => {
            up.release.notified().await;
            Ok(Response::new(
                Full::new(Bytes::from_static(b"done")).boxed(),
            ))
        }
        "/slow" => {
            let guard = Cancelled(up.cancelled.clone());
            tokio::time::sleep(Duration::from_secs(30)).await;
            std::mem::forget(guard);
            Ok(Response::new(Full::new(Bytes::new()).boxed()))
        }
        _ => Ok(Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap()),
    }
}

async fn upstream() -> (SocketAddr, Upstream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Upstream::default();
    let serving = up.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let up = serving.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(up.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, up)
}

async fn proxy_to(upstream: SocketAddr) -> Arc<mesh_proxy::Server> {
    proxy(
        table(
            json!([{ "name": "svc", "domains": ["svc"], "routes": [{ "route": {
                "clusters": [{ "cluster": "up", "weight": 100 }]
            }}]}]),
        ),
        json!([{ "name": "up", "endpoints": [{ "address": upstream.to_string() }] }]),
    )
    .await
}

/// A response as read off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads raw responses off one connection, in order.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("bytes within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed early; read so far: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next head; `body` is left empty.
    async fn head(&mut self) -> Wire {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) = resp.parse(&self.buf).unwrap() {
                let wire = Wire {
                    status: resp.code.unwrap(),
                    headers: resp
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into()))
                        .collect(),
                    body: Vec::new(),
                };
                self.buf.drain(..len);
                return wire;
            }
            self.fill().await;
        }
    }

    async fn bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill().await;
        }
        self.buf.drain(..n).collect()
    }

    /// The next response with a Content-Length body (none for HEAD).
    async fn response(&mut self, head_request: bool) -> Wire {
        let mut wire = self.head().await;
        let len: usize = wire
            .header("content-length")
            .expect("a length")
            .parse()
            .unwrap();
        if !head_request {
            wire.body = self.bytes(len).await;
        }
        wire
    }

    /// Reads until `needle` has arrived; returns everything up to and including it.
    async fn until(&mut self, needle: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(needle.len()).position(|w| w == needle) {
                return self.buf.drain(..at + needle.len()).collect();
            }
            self.fill().await;
        }
    }
}

async fn connect(server: &mesh_proxy::Server) -> Reader {
    Reader {
        stream: TcpStream::connect(out_addr(server)).await.unwrap(),
        buf: Vec::new(),
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_hand_over_to_hyper() {
    let (up, _) = upstream().await;
    let server = proxy_to(up).await;
    let mut c = connect(&server).await;
    // Requests of the proxy's own codec (bodiless, a declared length) and one with a chunked
    // body (hyper's), written at once.
    c.stream
        .write_all(
            b"GET /len/3 HTTP/1.1\r\nhost: svc\r\n\r\n\
              POST /echo HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\n\r\nhello\
              GET /len/5 HTTP/1.1\r\nhost: svc\r\nconnection: keep-alive\r\n\r\n\
              POST /echo HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n\
              4\r\nabcd\r\n0\r\n\r\n\
              GET /len/7 HTTP/1.1\r\nhost: svc\r\n\r\n",
        )
        .await
        .unwrap();
    let bodies = ["aaa", "5", "aaaaa", "4", "aaaaaaa"].map(|b| b.as_bytes().to_vec());
    for want in bodies {
        let got = c.response(false).await;
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(got.body, want, "{got:?}");
        assert!(got.header("date").is_some(), "{got:?}");
    }
    // And the connection still serves.
    c.stream
        .write_all(b"GET /len/1 HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.response(false).await.body, b"a");
}

#[tokio::test]
async fn a_head_response_has_its_length_and_no_body() {
    let (up, _) = upstream().await;
    let server = proxy_to(up).await;
    let mut c = connect(&server).await;
    c.stream
        .write_all(
            b"HEAD /len/9 HTTP/1.1\r\nhost: svc\r\n\r\nGET /len/2 HTTP/1.1\r\nhost: svc\r\n\r\n",
        )
        .await
        .unwrap();
    let head = c.response(true).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("9"));
    // Had a body been sent, it would be read here as the next response's head.
    let next = c.response(false).await;
    assert_eq!((next.status, next.body), (200, b"aa".to_vec()));
}

#[tokio::test]
async fn a_streamed_response_is_chunked_and_its_head_sent_before_its_end() {
    let (up, steer) = upstream().await;
    let server = proxy_to(up).await;
    let mut c = connect(&server).await;
    c.stream
        .write_all(b"GET /stream HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let head = c.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("transfer-encoding"),
        Some("chunked"),
        "{head:?}"
    );
    assert_eq!(head.header("content-length"), None);
    // The first chunk arrives while the upstream holds the second back.
    assert_eq!(c.until(b"first\r\n").await, b"5\r\nfirst\r\n");
    steer.release.notify_one();
    assert_eq!(c.until(b"\r\n\r\n").await, b"6\r\nsecond\r\n0\r\n\r\n");
    // The connection is kept.
    c.stream
        .write_all(b"GET /len/4 HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.response(false).await.body, b"aaaa");
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_request_upstream() {
    let (up, steer) = upstream().await;
    let server = proxy_to(up).await;
    let mut c = connect(&server).await;
    c.stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    // Let the request reach the upstream, then hang up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!steer.cancelled.load(Ordering::SeqCst));
    drop(c);
    let cancelled = async {
        while !steer.cancelled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), cancelled)
        .await
        .expect("the upstream request is dropped within 5 s of the client hanging up");
}

#[tokio::test]
async fn a_local_reply_is_framed_and_dated_and_keeps_the_connection() {
    let (up, _) = upstream().await;
    let server = proxy_to(up).await;
    let mut c = connect(&server).await;
    c.stream
        .write_all(
            b"GET / HTTP/1.1\r\nhost: nowhere\r\n\r\nGET /len/2 HTTP/1.1\r\nhost: svc\r\n\r\n",
        )
        .await
        .unwrap();
    let refused = c.response(false).await;
    assert_eq!(refused.status, 404, "{refused:?}");
    let date = refused.header("date").expect("a date");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert_eq!(c.response(false).await.body, b"aa");
}

#[tokio::test]
async fn a_large_body_is_read_as_it_is_sent_on() {
    let (up, _) = upstream().await;
    let server = proxy_to(up).await;
    let mut c = connect(&server).await;
    const LEN: usize = 3 * 1024 * 1024 + 7;
    let head = format!("POST /echo HTTP/1.1\r\nhost: svc\r\ncontent-length: {LEN}\r\n\r\n");
    c.stream.write_all(head.as_bytes()).await.unwrap();
    // Written in pieces while the upstream reads: far more than the proxy would buffer.
    let piece = vec![b'x'; 64 * 1024];
    let mut left = LEN;
    while left > 0 {
        let n = left.min(piece.len());
        c.stream.write_all(&piece[..n]).await.unwrap();
        left -= n;
    }
    let echoed = c.response(false).await;
    assert_eq!(
        (echoed.status, echoed.body),
        (200, LEN.to_string().into_bytes())
    );
    c.stream
        .write_all(b"GET /len/2 HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        c.response(false).await.body,
        b"aa",
        "the connection is kept after it"
    );
}

#[tokio::test]
async fn a_body_left_unread_is_never_taken_for_the_next_request() {
    let (up, _) = upstream().await;
    let server = proxy_to(up).await;
    let mut c = connect(&server).await;
    // The proxy answers 404 (no route) without reading the body, which is itself a request.
    let smuggled = "GET /len/1 HTTP/1.1\r\nhost: svc\r\n\r\n";
    let outer = format!(
        "POST / HTTP/1.1\r\nhost: nowhere\r\ncontent-length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    c.stream.write_all(outer.as_bytes()).await.unwrap();
    assert_eq!(c.response(false).await.status, 404);
    // Then the connection closes: no second response.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), c.stream.read_to_end(&mut rest));
    closed.await.expect("closed within 5 s").unwrap();
    assert!(
        c.buf.is_empty() && rest.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&[&c.buf[..], &rest[..]].concat())
    );
}

#[tokio::test]
async fn a_drain_finishes_the_request_in_flight_says_close_and_closes_idle_connections() {
    let (up, steer) = upstream().await;
    let server = proxy_to(up).await;
    let mut busy = connect(&server).await;
    busy.stream
        .write_all(b"GET /gate HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let mut idle = connect(&server).await;
    idle.stream
        .write_all(b"GET /len/1 HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(idle.response(false).await.body, b"a");
    // Let the gated request reach the upstream, then drain.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let draining = tokio::spawn({
        let server = server.clone();
        async move { server.drain(Duration::from_secs(10)).await }
    });
    // The idle keep-alive connection is closed at once.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), idle.stream.read_to_end(&mut rest));
    closed
        .await
        .expect("the idle connection closed within 2 s")
        .unwrap();
    assert!(rest.is_empty());
    assert!(
        !draining.is_finished(),
        "the drain waits for the request in flight"
    );
    // The request in flight is answered, told the connection closes, and it does.
    steer.release.notify_one();
    let done = busy.response(false).await;
    assert_eq!((done.status, &done.body[..]), (200, &b"done"[..]));
    assert_eq!(done.header("connection"), Some("close"), "{done:?}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), busy.stream.read_to_end(&mut rest));
    closed.await.expect("closed after its response").unwrap();
    tokio::time::timeout(Duration::from_secs(5), draining)
        .await
        .expect("the drain ends once the connections are closed")
        .unwrap();
}
