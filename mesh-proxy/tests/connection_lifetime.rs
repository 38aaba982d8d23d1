//! How long upstream connections live: the TCP proxy's idle timeout and maximum connection
//! duration (`connectionPool.tcp.idleTimeout`, `maxConnectionDuration`), and the maximum
//! duration of pooled HTTP/1.1 and HTTP/2 connections, seen by real upstreams that count the
//! connections they accept and still hold.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mesh::{outbound, outbound_tcp, sidecar};
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections an upstream accepted, and those still open.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

impl Counts {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Counts a connection open until dropped.
struct Open(Arc<Counts>);

impl Open {
    fn new(counts: &Arc<Counts>) -> Self {
        counts.accepted.fetch_add(1, Ordering::SeqCst);
        counts.open.fetch_add(1, Ordering::SeqCst);
        Self(counts.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TCP echo that counts its connections.
async fn counting_tcp_echo() -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let open = Open::new(&c);
            tokio::spawn(async move {
                let _open = open;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, counts)
}

/// An HTTP/1.1 and HTTP/2 server that counts its connections; `/delay/<ms>` answers late.
async fn counting_http() -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let open = Open::new(&c);
            tokio::spawn(async move {
                let _open = open;
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    if let Some(ms) = req.uri().path().strip_prefix("/delay/") {
                        let ms = ms.parse().unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), service)
                    .await;
            });
        }
    });
    (addr, counts)
}

/// Waits (bounded) for `cond`.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}");
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(buf, msg);
}

/// Whether the proxy closed `s`: EOF or a reset within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn an_idle_tcp_connection_is_closed_after_the_idle_timeout_and_an_active_one_is_not() {
    let (app, counts) = counting_tcp_echo().await;
    let cfg = outbound_tcp(
        vec![json!({"address": app.to_string()})],
        json!({"tcpIdleTimeoutMs": 300}),
    );
    let server = sidecar(None, cfg).await;
    let out = server.listener_addr("out").unwrap();

    let mut idle = TcpStream::connect(out).await.unwrap();
    round_trip(&mut idle, b"idle").await;
    let mut active = TcpStream::connect(out).await.unwrap();
    round_trip(&mut active, b"active").await;
    let idle_since = Instant::now();

    // The active one talks every 100 ms for 900 ms: three idle timeouts, never idle for one.
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        round_trip(&mut active, b"still here").await;
    }
    assert!(closed_within(&mut idle, Duration::from_millis(100)).await);
    assert!(idle_since.elapsed() >= Duration::from_millis(300));
    // Closed on the upstream side too; the active one is still open at both ends.
    eventually("the idle connection is closed at the upstream", || {
        counts.open() == 1
    })
    .await;
    assert_eq!(counts.accepted(), 2);
    round_trip(&mut active, b"and still").await;
}

#[tokio::test]
async fn a_quiet_tcp_connection_stays_open_by_default_and_with_the_idle_timeout_off() {
    // Unset: the default hour; 0: no idle timeout (Istio's `idleTimeout: 0s`).
    for extra in [json!({}), json!({"tcpIdleTimeoutMs": 0})] {
        let (app, counts) = counting_tcp_echo().await;
        let cfg = outbound_tcp(vec![json!({"address": app.to_string()})], extra.clone());
        let server = sidecar(None, cfg).await;
        let out = server.listener_addr("out").unwrap();
        let mut quiet = TcpStream::connect(out).await.unwrap();
        round_trip(&mut quiet, b"hello").await;
        assert!(
            !closed_within(&mut quiet, Duration::from_millis(600)).await,
            "{extra}"
        );
        round_trip(&mut quiet, b"hello again").await;
        assert_eq!(counts.open(), 1, "{extra}");
    }
}

#[tokio::test]
async fn a_tcp_connection_is_closed_at_its_maximum_duration_even_when_busy() {
    let (app, counts) = counting_tcp_echo().await;
    let cfg = outbound_tcp(
        vec![json!({"address": app.to_string()})],
        json!({"maxConnectionDurationMs": 400}),
    );
    let server = sidecar(None, cfg).await;
    let out = server.listener_addr("out").unwrap();
    let mut busy = TcpStream::connect(out).await.unwrap();
    let opened = Instant::now();
    let mut closed = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if busy.write_all(b"x").await.is_err() || closed_within(&mut busy, Duration::ZERO).await {
            closed = true;
            break;
        }
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(1), busy.read(&mut b)).await {
            Ok(Ok(1)) => {}
            _ => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "closed at its maximum duration");
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_millis(400) && lived < Duration::from_millis(1200),
        "{lived:?}"
    );
    eventually("closed at the upstream too", || counts.open() == 0).await;
}

/// Requests every 100 ms for about a second through an HTTP cluster with `extra`; returns the
/// connections the upstream accepted.
async fn requests_over_a_second(protocol: &str, extra: serde_json::Value) -> Arc<Counts> {
    let (app, counts) = counting_http().await;
    let mut cluster = json!({"protocol": protocol});
    for (k, v) in extra.as_object().unwrap() {
        cluster[k] = v.clone();
    }
    let server = sidecar(
        None,
        outbound(vec![json!({"address": app.to_string()})], cluster),
    )
    .await;
    let out = server.listener_addr("out").unwrap();
    let client = h1_client();
    // A request in flight when its connection reaches the maximum duration finishes on it.
    let slow = send_h1(&client, out, "GET", "app", "/delay/500", &[], "").await;
    assert_eq!(slow.status, StatusCode::OK, "{protocol}");
    for i in 0..10 {
        let r = send_h1(&client, out, "GET", "app", "/", &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{protocol} request {i}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    counts
}

#[tokio::test]
async fn pooled_http_connections_are_replaced_after_their_maximum_duration() {
    for protocol in ["HTTP1", "HTTP2"] {
        let counts =
            requests_over_a_second(protocol, json!({"maxConnectionDurationMs": 300})).await;
        // 1.5 s of requests with 300 ms connections: at least the slow request's connection,
        // then one every 300 ms or so.
        assert!(counts.accepted() >= 4, "{protocol}: {}", counts.accepted());
        // Old connections are closed, not kept: at most the current one is open.
        eventually("old connections are closed", || counts.open() <= 1).await;

        let counts = requests_over_a_second(protocol, json!({})).await;
        assert_eq!(
            counts.accepted(),
            1,
            "{protocol}: one connection without a limit"
        );
    }
}

/// Streams in flight on each connection of an HTTP/2 server, and the most seen at once.
#[derive(Default)]
struct StreamCounts {
    per_connection: std::sync::Mutex<Vec<usize>>,
}

impl StreamCounts {
    fn peaks(&self) -> Vec<usize> {
        self.per_connection.lock().unwrap().clone()
    }
}

/// An HTTP/2-only server whose answers take `delay`, recording each connection's peak of
/// concurrent streams.
async fn stream_counting_h2(delay: Duration) -> (SocketAddr, Arc<StreamCounts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(StreamCounts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let index = {
                let mut peaks = c.per_connection.lock().unwrap();
                peaks.push(0);
                peaks.len() - 1
            };
            let (c, in_flight) = (c.clone(), Arc::new(AtomicUsize::new(0)));
            tokio::spawn(async move {
                let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let (c, in_flight) = (c.clone(), in_flight.clone());
                    async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        {
                            let mut peaks = c.per_connection.lock().unwrap();
                            peaks[index] = peaks[index].max(now);
                        }
                        tokio::time::sleep(delay).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), service)
                    .await;
            });
        }
    });
    (addr, counts)
}

/// `n` requests at once through an HTTP/2 cluster with `extra`; the upstream's per-connection
/// stream peaks and how long the batch took.
async fn concurrent_h2_requests(n: usize, extra: serde_json::Value) -> (Vec<usize>, Duration) {
    let (app, counts) = stream_counting_h2(Duration::from_millis(300)).await;
    let mut cluster = json!({"protocol": "HTTP2"});
    for (k, v) in extra.as_object().unwrap() {
        cluster[k] = v.clone();
    }
    let server = sidecar(
        None,
        outbound(vec![json!({"address": app.to_string()})], cluster),
    )
    .await;
    let out = server.listener_addr("out").unwrap();
    let client = h1_client();
    let started = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { send_h1(&client, out, "GET", "app", "/", &[], "").await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().status, StatusCode::OK, "{extra}");
    }
    (counts.peaks(), started.elapsed())
}

#[tokio::test]
async fn max_concurrent_streams_spreads_streams_over_more_http2_connections() {
    let (peaks, _) = concurrent_h2_requests(6, json!({"maxConcurrentStreams": 2})).await;
    assert_eq!(peaks.len(), 3, "{peaks:?}");
    assert!(peaks.iter().all(|p| *p <= 2), "{peaks:?}");

    // Without the limit the requests share one connection.
    let (peaks, _) = concurrent_h2_requests(6, json!({})).await;
    assert_eq!(peaks, vec![6]);
}

#[tokio::test]
async fn past_max_concurrent_streams_and_max_connections_requests_wait_for_a_stream() {
    let (peaks, took) = concurrent_h2_requests(
        4,
        json!({"maxConcurrentStreams": 2, "circuitBreakers": {"maxConnections": 1}}),
    )
    .await;
    assert_eq!(peaks, vec![2]);
    // Two rounds of 300 ms on the one connection.
    assert!(took >= Duration::from_millis(600), "{took:?}");
}

#[tokio::test]
async fn requests_waiting_for_an_http2_stream_are_pending_and_limited_as_such() {
    let (app, counts) = stream_counting_h2(Duration::from_millis(300)).await;
    let cluster = json!({
        "protocol": "HTTP2",
        "maxConcurrentStreams": 1,
        "circuitBreakers": {"maxConnections": 1, "maxPendingRequests": 1},
    });
    let server = sidecar(
        None,
        outbound(vec![json!({"address": app.to_string()})], cluster),
    )
    .await;
    let out = server.listener_addr("out").unwrap();
    let client = h1_client();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { send_h1(&client, out, "GET", "app", "/", &[], "").await })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        let reply = call.await.unwrap();
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(reply.headers["x-envoy-overloaded"], "true");
        }
        statuses.push(reply.status.as_u16());
    }
    statuses.sort_unstable();
    // One on the stream, one pending, one over the pending limit.
    assert_eq!(statuses, [200, 200, 503]);
    assert_eq!(counts.peaks(), vec![1]);
}
