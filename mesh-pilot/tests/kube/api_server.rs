//! A stand-in for the Kubernetes API server on 127.0.0.1: it serves list responses and watch
//! streams (newline-delimited events, held open until the test closes them) exactly as the API
//! server sends them, answers a watch with an HTTP status when told to, and records every
//! request so tests can assert the query parameters a client sent.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::http::{Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

/// The API server's answer to a resource it does not serve (a CRD that is not installed).
pub const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#;

/// The watch cache's answer to a resourceVersion older than its history.
pub fn gone(requested: &str, oldest: &str) -> String {
    format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"too old resource version: {requested} ({oldest})","reason":"Expired","code":410}}"#
    )
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub content_type: String,
    pub body: String,
}

impl Recorded {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Default)]
struct State {
    lists: HashMap<String, String>,
    /// Statuses to answer the next watches of a path with, in order.
    watch_refusals: HashMap<String, VecDeque<(u16, String)>>,
    /// The open watch stream of each path.
    watches: HashMap<String, mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>>,
    requests: Vec<Recorded>,
    /// Answers to POSTs and other non-GET requests by path: (status, body).
    replies: HashMap<(String, String), VecDeque<(u16, String)>>,
}

#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = FakeApi {
            addr,
            state: Arc::default(),
        };
        let served = api.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        api
    }

    /// A kube client for this server (plain HTTP, no credentials).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Serves `body` (a `...List`) for GETs of `path` without `watch`.
    pub fn set_list(&self, path: &str, body: impl Into<String>) {
        self.state
            .lock()
            .unwrap()
            .lists
            .insert(path.to_string(), body.into());
    }

    /// Answers the next watch of `path` with `status` and `body` instead of a stream.
    pub fn refuse_next_watch(&self, path: &str, status: u16, body: impl Into<String>) {
        self.state
            .lock()
            .unwrap()
            .watch_refusals
            .entry(path.to_string())
            .or_default()
            .push_back((status, body.into()));
    }

    /// Queues the answer to the next `method` request of `path`.
    pub fn reply(&self, method: &str, path: &str, status: u16, body: impl Into<String>) {
        self.state
            .lock()
            .unwrap()
            .replies
            .entry((method.to_string(), path.to_string()))
            .or_default()
            .push_back((status, body.into()));
    }

    /// Sends one watch event line on the open watch of `path`, waiting (up to 10 s) for the
    /// client to open one.
    pub async fn send(&self, path: &str, event: &str) {
        let line = format!("{}\n", event.trim());
        for _ in 0..200 {
            if let Some(tx) = self.state.lock().unwrap().watches.get(path)
                && tx.send(Ok(Frame::data(Bytes::from(line.clone())))).is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no watch open on {path}");
    }

    /// Ends the open watch of `path`, as the API server does when `timeoutSeconds` runs out.
    pub fn close_watch(&self, path: &str) {
        self.state.lock().unwrap().watches.remove(path);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests of `path`, oldest first.
    pub fn requests_of(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits (up to 10 s) until `path` has seen `n` requests matching `pred`.
    pub async fn wait_requests(
        &self,
        path: &str,
        n: usize,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Vec<Recorded> {
        for _ in 0..200 {
            let seen: Vec<_> = self
                .requests_of(path)
                .into_iter()
                .filter(|r| pred(r))
                .collect();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{path}: fewer than {n} matching requests; saw {:#?}",
            self.requests_of(path)
        );
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .map(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), decode(v)))
                    .collect()
            })
            .unwrap_or_default();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let recorded = Recorded {
            method: method.clone(),
            path: path.clone(),
            query,
            content_type,
            body: String::from_utf8_lossy(&body.unwrap_or_default()).into_owned(),
        };
        let is_watch = recorded.is_watch();
        let sent = recorded.body.clone();
        let mut state = self.state.lock().unwrap();
        state.requests.push(recorded);
        if method != "GET" {
            return match state
                .replies
                .get_mut(&(method.clone(), path))
                .and_then(VecDeque::pop_front)
            {
                Some((status, body)) => json(status, body),
                // An apply patch succeeds unless told otherwise: the object as applied.
                None if method == "PATCH" => json(200, sent),
                None => json(404, NOT_FOUND.to_string()),
            };
        }
        if is_watch {
            if let Some((status, body)) = state
                .watch_refusals
                .get_mut(&path)
                .and_then(VecDeque::pop_front)
            {
                return json(status, body);
            }
            if !state.lists.contains_key(&path) {
                return json(404, NOT_FOUND.to_string());
            }
            let (tx, rx) = mpsc::unbounded_channel();
            state.watches.insert(path, tx);
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|frame| (frame, rx))
            })
            .boxed();
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
                .unwrap();
        }
        match state.lists.get(&path) {
            Some(list) => json(200, list.clone()),
            None => json(404, NOT_FOUND.to_string()),
        }
    }
}

fn json(status: u16, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .unwrap()
}

/// Percent-decoding of a query value (`%2C`, `+`).
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
