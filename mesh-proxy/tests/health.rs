//! The health port and `mesh-proxy wait`, over real HTTP on 127.0.0.1: the proxy's own
//! readiness, the app's rewritten probes (HTTP, HTTPS, TCP) run against a real app, and the
//! start hook's polling.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_proxy::health::{self, Probers, Readiness};
use mesh_proxy::wait::{self, WaitError};
use mesh_test_support::RefusedAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The app: answers by path, so one app covers every case.
async fn app_answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match req.uri().path() {
        "/ok" => StatusCode::OK,
        "/fail" => StatusCode::SERVICE_UNAVAILABLE,
        "/moved" => StatusCode::FOUND,
        // Passes only when the probe's own headers and the kubelet's user agent arrive.
        "/headers" => {
            let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
            if h("x-probe") == Some("yes") && h("user-agent") == Some("kube-probe/1.33") {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::BAD_REQUEST
            }
        }
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK
        }
        _ => StatusCode::NOT_FOUND,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(b"app\n")));
    *resp.status_mut() = status;
    Ok(resp)
}

async fn app(tls: Option<Arc<rustls::ServerConfig>>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let service = service_fn(app_answer);
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                    Some(cfg) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                        if let Ok(s) = acceptor.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(s), service).await;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A self-signed certificate, as apps that serve HTTPS probes commonly have.
fn self_signed() -> Arc<rustls::ServerConfig> {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.local".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    Arc::new(config)
}

async fn health_server(readiness: Readiness, probers: Probers) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(health::serve(listener, readiness, Arc::new(probers)));
    (addr, task)
}

/// A plain HTTP/1.1 GET with the kubelet's user agent; returns the status.
async fn kubelet_get(addr: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("health port answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1).unwrap_or_default();
    status
        .parse()
        .unwrap_or_else(|_| panic!("no status: {text}"))
}

fn ready(flag: &Arc<AtomicBool>) -> Readiness {
    let flag = flag.clone();
    Arc::new(move || flag.load(Ordering::SeqCst))
}

#[tokio::test]
async fn readiness_follows_the_proxy() {
    let flag = Arc::new(AtomicBool::new(false));
    let (addr, _task) = health_server(ready(&flag), Probers::default()).await;
    assert_eq!(kubelet_get(addr, "/healthz/ready").await, 503);
    flag.store(true, Ordering::SeqCst);
    assert_eq!(kubelet_get(addr, "/healthz/ready").await, 200);
    assert_eq!(kubelet_get(addr, "/stats/prometheus").await, 404);
}

#[tokio::test]
async fn app_http_probes_return_the_apps_status() {
    let (app_addr, _app) = app(None).await;
    let (tls_addr, _tls_app) = app(Some(self_signed())).await;
    let refused = RefusedAddr::new();
    let down = refused.addr().port();
    let p = app_addr.port();
    let json = serde_json::json!({
        "/app-health/web/livez": {"httpGet": {"path": "/ok", "port": p, "scheme": "HTTP"}, "timeoutSeconds": 2},
        "/app-health/web/readyz": {"httpGet": {"path": "/fail", "port": p}},
        "/app-health/web/startupz": {"httpGet": {"path": "/moved", "port": p}},
        "/app-health/hdr/readyz": {"httpGet": {"path": "/headers", "port": p.to_string(),
            "httpHeaders": [{"name": "x-probe", "value": "yes"}]}},
        "/app-health/secure/livez": {"httpGet": {"path": "/ok", "port": tls_addr.port(), "scheme": "HTTPS"}},
        "/app-health/gone/livez": {"httpGet": {"path": "/ok", "port": down}},
        "/app-health/slow/livez": {"httpGet": {"path": "/hang", "port": p}, "timeoutSeconds": 1},
    });
    let probers = Probers::parse("test", &json.to_string()).unwrap();
    let flag = Arc::new(AtomicBool::new(true));
    let (addr, _task) = health_server(ready(&flag), probers).await;

    assert_eq!(kubelet_get(addr, "/app-health/web/livez").await, 200);
    assert_eq!(kubelet_get(addr, "/app-health/web/readyz").await, 503);
    // Redirects are handed back, not followed: the kubelet counts 3xx as success.
    assert_eq!(kubelet_get(addr, "/app-health/web/startupz").await, 302);
    assert_eq!(kubelet_get(addr, "/app-health/hdr/readyz").await, 204);
    assert_eq!(kubelet_get(addr, "/app-health/secure/livez").await, 200);
    // App not listening, or not answering within timeoutSeconds: a failing status.
    assert_eq!(kubelet_get(addr, "/app-health/gone/livez").await, 500);
    assert_eq!(kubelet_get(addr, "/app-health/slow/livez").await, 500);
    // Unknown container or probe kind.
    assert_eq!(kubelet_get(addr, "/app-health/other/livez").await, 404);
    assert_eq!(kubelet_get(addr, "/app-health/hdr/livez").await, 404);
}

#[tokio::test]
async fn app_tcp_probes_connect() {
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = RefusedAddr::new();
    let down = refused.addr().port();
    let json = serde_json::json!({
        "/app-health/db/livez": {"tcpSocket": {"port": up.local_addr().unwrap().port()}},
        "/app-health/db/readyz": {"tcpSocket": {"port": down}},
    });
    let probers = Probers::parse("test", &json.to_string()).unwrap();
    let (addr, _task) = health_server(Arc::new(|| true), probers).await;
    assert_eq!(kubelet_get(addr, "/app-health/db/livez").await, 200);
    assert_eq!(kubelet_get(addr, "/app-health/db/readyz").await, 500);
}

#[test]
fn malformed_probers_are_rejected_with_the_variable_and_entry() {
    let e = Probers::from_lookup(|name| {
        (name == health::PROBERS_ENV)
            .then(|| r#"{"/app-health/web/livez": {"httpGet": {"port": "http"}}}"#.to_string())
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("MESH_KUBE_APP_PROBERS: "), "{msg}");
    assert!(msg.contains("/app-health/web/livez"), "{msg}");
    assert!(msg.contains("not a port number"), "{msg}");

    let e = Probers::from_lookup(|name| {
        (name == health::ISTIO_PROBERS_ENV).then(|| "{\"/app-health/web/livez\": ".to_string())
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("ISTIO_KUBE_APP_PROBERS: not a prober map"),
        "{e}"
    );
}

#[tokio::test]
async fn wait_returns_once_ready() {
    let flag = Arc::new(AtomicBool::new(false));
    let (addr, _task) = health_server(ready(&flag), Probers::default()).await;
    let setter = flag.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        setter.store(true, Ordering::SeqCst);
    });
    let url = format!("http://{addr}/healthz/ready");
    wait::run(&url, Duration::from_secs(20)).await.unwrap();
    assert!(flag.load(Ordering::SeqCst));
}

#[tokio::test]
async fn wait_times_out_when_never_ready() {
    let (addr, _task) = health_server(Arc::new(|| false), Probers::default()).await;
    let url = format!("http://{addr}/healthz/ready");
    match wait::run(&url, Duration::from_millis(700)).await {
        Err(WaitError::NotReady { attempts, last, .. }) => {
            assert!(attempts >= 1);
            assert!(last.contains("503"), "{last}");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }

    let refused = RefusedAddr::new();
    let down = refused.addr().port();
    let url = format!("http://127.0.0.1:{down}/healthz/ready");
    match wait::run(&url, Duration::from_millis(500)).await {
        Err(WaitError::NotReady { last, .. }) => assert!(last.contains("connect"), "{last}"),
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(matches!(
        wait::run("https://127.0.0.1:1/", Duration::from_secs(1)).await,
        Err(WaitError::Url { .. })
    ));
}
