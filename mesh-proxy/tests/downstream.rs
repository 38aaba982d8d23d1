//! Downstream connections misbehaving or idling, through a real proxy with raw TCP clients:
//! a malformed request body is the client's fault (400, no retry); an idle keep-alive
//! connection is closed after the idle timeout, a half-sent head after the header-read timeout;
//! connections over a listener's limit are closed at accept and counted.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{metric, metrics_text, out_addr, proxy, table};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that counts the requests whose head reached it and answers with the number of
/// body bytes it read.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let len = match req.into_body().collect().await {
                            Ok(b) => b.to_bytes().len().to_string(),
                            Err(_) => "body error".to_string(),
                        };
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(len))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A proxy routing host `svc` to `upstream`, retrying resets and 5xx up to three times.
async fn retrying_proxy(upstream: SocketAddr) -> Arc<mesh_proxy::Server> {
    proxy(
        table(
            json!([{ "name": "svc", "domains": ["svc"], "routes": [{ "route": {
                "clusters": [{ "cluster": "up", "weight": 100 }],
                "retryPolicy": { "numRetries": 3, "retryOn": "reset,5xx,connect-failure" }
            }}]}]),
        ),
        json!([{ "name": "up", "endpoints": [{ "address": upstream.to_string() }] }]),
    )
    .await
}

/// Reads until the proxy closes the connection (bounded by time and size).
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        while out.len() < 64 * 1024 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_all)
        .await
        .expect("the proxy answers and closes the connection within 5 s");
    String::from_utf8_lossy(&out).into_owned()
}

async fn assert_bad_body_gets_400(request: &[u8], half_close: bool) {
    let (upstream, seen) = counting_upstream().await;
    let server = retrying_proxy(upstream).await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    s.write_all(request).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let reply = read_to_close(&mut s).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("malformed downstream request body"),
        "{reply}"
    );
    assert!(
        seen.load(Ordering::SeqCst) <= 1,
        "the upstream saw {} requests: the bad body was retried",
        seen.load(Ordering::SeqCst)
    );
    let text = metrics_text(&server);
    assert_eq!(metric(&text, "mesh_proxy_upstream_retries_total", ""), 0.0);
    assert_eq!(
        metric(&text, "mesh_proxy_requests_total", "response_code=\"400\""),
        1.0
    );
}

#[tokio::test]
async fn invalid_chunk_size_gets_400_without_retry() {
    assert_bad_body_gets_400(
        b"POST /upload HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        false,
    )
    .await;
}

#[tokio::test]
async fn body_shorter_than_content_length_gets_400_without_retry() {
    assert_bad_body_gets_400(
        b"POST /upload HTTP/1.1\r\nhost: svc\r\ncontent-length: 100\r\n\r\n0123456789",
        true,
    )
    .await;
}

#[tokio::test]
async fn well_formed_chunked_body_is_forwarded() {
    let (upstream, seen) = counting_upstream().await;
    let server = retrying_proxy(upstream).await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let reply = read_to_close(&mut s).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\n11"),
        "the upstream read 11 bytes: {reply}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

/// A proxy with these downstream timeouts, routing every host to `upstream`.
async fn proxy_with_timeouts(
    upstream: SocketAddr,
    header_read: Duration,
    idle: Duration,
) -> Arc<mesh_proxy::Server> {
    let server = mesh_proxy::Server::with_options(mesh_proxy::server::Options {
        header_read_timeout: header_read,
        idle_timeout: idle,
        ..Default::default()
    });
    server
        .apply(common::outbound_config(
            table(json!([{ "name": "all", "domains": ["*"], "routes": [common::to("up")] }])),
            json!([{ "name": "up", "endpoints": [{ "address": upstream.to_string() }] }]),
        ))
        .await
        .unwrap();
    server
}

/// Sends a keep-alive GET and reads its reply (the counting upstream answers "0").
async fn keep_alive_get(s: &mut TcpStream) {
    s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !out.ends_with(b"\r\n\r\n0") && out.len() < 16 * 1024 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a reply within 5 s");
    assert!(
        out.starts_with(b"HTTP/1.1 200") && out.ends_with(b"\r\n\r\n0"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

/// How long until the proxy closes `s` (at most `limit`; None if still open then).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let wait = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .ok()
        .map(|()| start.elapsed())
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (upstream, _) = counting_upstream().await;
    let server = proxy_with_timeouts(
        upstream,
        Duration::from_secs(10),
        Duration::from_millis(300),
    )
    .await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    keep_alive_get(&mut s).await;
    keep_alive_get(&mut s).await;
    let closed = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("the idle connection is closed well before the header-read timeout");
    assert!(closed >= Duration::from_millis(250), "{closed:?}");
}

#[tokio::test]
async fn keep_alive_connection_outlives_a_short_header_read_timeout() {
    let (upstream, _) = counting_upstream().await;
    let server = proxy_with_timeouts(
        upstream,
        Duration::from_millis(300),
        Duration::from_secs(10),
    )
    .await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    keep_alive_get(&mut s).await;
    // Idle for longer than the header-read timeout: judged by the idle timeout instead.
    assert_eq!(
        closed_within(&mut s, Duration::from_millis(900)).await,
        None
    );
    keep_alive_get(&mut s).await;
}

#[tokio::test]
async fn a_half_sent_head_is_judged_by_the_header_read_timeout() {
    let (upstream, _) = counting_upstream().await;
    let server = proxy_with_timeouts(
        upstream,
        Duration::from_millis(300),
        Duration::from_secs(10),
    )
    .await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    keep_alive_get(&mut s).await;
    s.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
    let closed = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("the slow head is cut off well before the idle timeout");
    assert!(closed >= Duration::from_millis(250), "{closed:?}");
}

#[tokio::test]
async fn a_half_sent_head_is_not_cut_by_a_short_idle_timeout() {
    let (upstream, _) = counting_upstream().await;
    let server = proxy_with_timeouts(
        upstream,
        Duration::from_secs(10),
        Duration::from_millis(300),
    )
    .await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(b" svc\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        while !out.ends_with(b"\r\n\r\n0") && out.len() < 16 * 1024 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn connections_over_the_listener_limit_are_closed_and_counted() {
    let (upstream, _) = counting_upstream().await;
    let server = mesh_proxy::Server::with_options(mesh_proxy::server::Options {
        max_connections_per_listener: Some(2),
        ..Default::default()
    });
    server
        .apply(common::outbound_config(
            table(json!([{ "name": "all", "domains": ["*"], "routes": [common::to("up")] }])),
            json!([{ "name": "up", "endpoints": [{ "address": upstream.to_string() }] }]),
        ))
        .await
        .unwrap();
    let addr = out_addr(&server);
    let mut first = TcpStream::connect(addr).await.unwrap();
    keep_alive_get(&mut first).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    keep_alive_get(&mut second).await;

    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(5))
            .await
            .is_some(),
        "the third connection is closed at accept"
    );
    let overflow = |server: &mesh_proxy::Server| {
        metric(
            &metrics_text(server),
            "mesh_proxy_downstream_cx_overflow_total",
            "listener=\"out\"",
        )
    };
    assert_eq!(overflow(&server), 1.0);

    // Once one closes, its slot is free again (bounded wait for the proxy to notice).
    drop(first);
    for _ in 0..100 {
        let active = metric(
            &metrics_text(&server),
            "mesh_proxy_downstream_connections_active",
            "listener=\"out\"",
        );
        if active < 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    keep_alive_get(&mut fourth).await;
    keep_alive_get(&mut second).await;
    assert_eq!(overflow(&server), 1.0);
}

/// Open connections of the test listener holding no HTTP state (parked).
fn parked(server: &mesh_proxy::Server) -> f64 {
    metric(
        &metrics_text(server),
        "mesh_proxy_downstream_connections_parked",
        "",
    )
}

/// Waits up to `limit` for the parked count to reach `want`.
async fn parked_reaches(server: &mesh_proxy::Server, want: f64, limit: Duration) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until {
        if parked(server) == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    parked(server) == want
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_parked_and_serves_its_next_requests() {
    let (upstream, seen) = counting_upstream().await;
    let server =
        proxy_with_timeouts(upstream, Duration::from_secs(10), Duration::from_secs(60)).await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    keep_alive_get(&mut s).await;
    assert!(
        parked_reaches(&server, 1.0, Duration::from_secs(5)).await,
        "idle after a GET, the connection lets go of its HTTP state"
    );
    // The same connection, with new HTTP state made by its next bytes.
    keep_alive_get(&mut s).await;
    assert_eq!(parked(&server), 0.0, "a request in flight is not parked");
    assert!(parked_reaches(&server, 1.0, Duration::from_secs(5)).await);
    // Two pipelined requests in one write: the second's bytes, read with the first's, are
    // served too.
    s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\nGET / HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let both = async {
        while out.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count() < 2
            || !out.ends_with(b"0")
        {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), both)
        .await
        .expect("both pipelined replies within 5 s");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        4,
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn a_connection_whose_last_request_had_a_body_is_not_parked() {
    let (upstream, _) = counting_upstream().await;
    let server =
        proxy_with_timeouts(upstream, Duration::from_secs(10), Duration::from_secs(60)).await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.ends_with(b"\r\n\r\n5") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a reply within 5 s")
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    // Past the park delay (1 s), a connection whose request body might still have unread
    // bytes keeps its HTTP state: they must not be taken for a new request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(parked(&server), 0.0);
    keep_alive_get(&mut s).await;
    assert!(
        parked_reaches(&server, 1.0, Duration::from_secs(5)).await,
        "a GET after it makes it parkable again"
    );
}

#[tokio::test]
async fn a_parked_connection_is_closed_at_the_idle_timeout() {
    let (upstream, _) = counting_upstream().await;
    let server = proxy_with_timeouts(
        upstream,
        Duration::from_secs(10),
        Duration::from_millis(2500),
    )
    .await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    keep_alive_get(&mut s).await;
    assert!(parked_reaches(&server, 1.0, Duration::from_secs(2)).await);
    let closed = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("closed at the idle timeout, parked or not");
    // 2.5 s from the response; parking happened about 1 s in.
    assert!(closed >= Duration::from_millis(800), "{closed:?}");
    assert!(parked_reaches(&server, 0.0, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn a_half_sent_head_after_parking_is_judged_by_the_header_read_timeout() {
    let (upstream, _) = counting_upstream().await;
    let server = proxy_with_timeouts(
        upstream,
        Duration::from_millis(500),
        Duration::from_secs(60),
    )
    .await;
    let mut s = TcpStream::connect(out_addr(&server)).await.unwrap();
    keep_alive_get(&mut s).await;
    assert!(parked_reaches(&server, 1.0, Duration::from_secs(5)).await);
    s.write_all(b"GET / HT").await.unwrap();
    let closed = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("the rest of the head never comes: closed at the header-read timeout");
    assert!(closed >= Duration::from_millis(400), "{closed:?}");
}
