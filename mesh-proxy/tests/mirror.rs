//! Request mirroring (VirtualService `mirror`/`mirrors`) through a real proxy: the caller gets
//! the primary's answer only, the shadow gets a full copy (authority suffixed `-shadow`, the
//! same body), and the shadow's failures stay invisible and counted.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// What the shadow upstream saw of one request.
#[derive(Debug)]
struct Seen {
    method: String,
    host: String,
    path: String,
    body: Bytes,
}

/// An HTTP/1.1 upstream that reports every request it gets and answers `status`.
async fn shadow_app(status: StatusCode) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let host = parts.headers.get("host").map_or(String::new(), |h| {
                            h.to_str().unwrap_or_default().to_string()
                        });
                        let _ = tx.send(Seen {
                            method: parts.method.to_string(),
                            host,
                            path: parts.uri.path().to_string(),
                            body,
                        });
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"shadow")));
                        *resp.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// A proxy whose route for host `svc:80` goes to `app`, mirrored as `mirrors` says to the
/// cluster `shadow` at `shadow`.
async fn mirrored(
    app: &mesh_echo::EchoHandle,
    shadow: SocketAddr,
    mirrors: Value,
) -> std::sync::Arc<mesh_proxy::Server> {
    let route = json!({ "route": {
        "clusters": [{ "cluster": "app", "weight": 100 }],
        "mirrors": mirrors,
    }});
    proxy(
        table(json!([{ "name": "svc", "domains": ["svc:80", "svc"], "routes": [route] }])),
        json!([
            cluster("app", &[app]),
            { "name": "shadow", "protocol": "HTTP1",
              "endpoints": [{ "address": shadow.to_string() }] },
        ]),
    )
    .await
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the shadow got a copy in time")
        .expect("shadow app running")
}

async fn mirror_count(server: &mesh_proxy::Server, result: &str, want: f64) -> f64 {
    let labels = format!("cluster=\"shadow\",result=\"{result}\"");
    for _ in 0..100 {
        let n = metric(
            &metrics_text(server),
            "mesh_proxy_mirror_requests_total",
            &labels,
        );
        if n >= want {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    metric(
        &metrics_text(server),
        "mesh_proxy_mirror_requests_total",
        &labels,
    )
}

#[tokio::test]
async fn the_shadow_gets_a_full_copy_and_the_caller_only_the_primary() {
    let app = echo("app", "v1").await;
    let (shadow, mut seen) = shadow_app(StatusCode::INTERNAL_SERVER_ERROR).await;
    let server = mirrored(
        &app,
        shadow,
        json!([{ "cluster": "shadow", "percentage": 100 }]),
    )
    .await;
    let out = out_addr(&server);

    let reply = get(out, "svc:80", "/page?x=1").await;
    assert_eq!(reply.status, StatusCode::OK, "the shadow's 500 is not seen");
    assert_eq!(reply.served_by(), "app/v1");
    let copy = next(&mut seen).await;
    assert_eq!(
        (copy.method.as_str(), copy.host.as_str(), copy.path.as_str()),
        ("GET", "svc-shadow:80", "/page")
    );
    assert!(copy.body.is_empty());

    // A body larger than the retry buffer is streamed to both, whole.
    let body: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let client = h1_client();
    let reply = send_h1(&client, out, "POST", "svc", "/upload", &[], &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["body_bytes"],
        json!(body.len()),
        "{}",
        reply.json()
    );
    let copy = next(&mut seen).await;
    assert_eq!(copy.host, "svc-shadow");
    assert_eq!(copy.body.len(), body.len());
    assert!(copy.body == body.as_bytes(), "the same bytes");

    assert_eq!(mirror_count(&server, "5xx", 2.0).await, 2.0);
}

#[tokio::test]
async fn a_shadow_that_is_down_costs_the_caller_nothing() {
    let app = echo("app", "v1").await;
    // Nothing listens here: every copy fails to connect.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = mirrored(
        &app,
        gone,
        json!([{ "cluster": "shadow", "percentage": 100 }]),
    )
    .await;
    let out = out_addr(&server);
    for _ in 0..5 {
        let reply = get(out, "svc", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.served_by(), "app/v1");
    }
    assert_eq!(mirror_count(&server, "failed", 5.0).await, 5.0);
}

#[tokio::test]
async fn a_share_of_requests_is_mirrored() {
    let app = echo("app", "v1").await;
    let (shadow, mut seen) = shadow_app(StatusCode::OK).await;
    let server = mirrored(
        &app,
        shadow,
        json!([{ "cluster": "shadow", "percentage": 50 }]),
    )
    .await;
    let out = out_addr(&server);
    let client = h1_client();
    for _ in 0..200 {
        let reply = send_h1(&client, out, "GET", "svc", "/", &[], "").await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Settled: the count holds still for a while.
    let mut copies = mirror_count(&server, "2xx", 1.0).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = mirror_count(&server, "2xx", 0.0).await;
        if now == copies {
            break;
        }
        copies = now;
    }
    // Binomial(200, 0.5): 60..140 is more than five standard deviations either way.
    assert!((60.0..=140.0).contains(&copies), "{copies} of 200 mirrored");
    let mut got = 0;
    while seen.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(f64::from(got), copies);
}
