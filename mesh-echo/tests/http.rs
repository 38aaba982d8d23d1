//! Plain HTTP behaviour over real sockets: JSON echo, keep-alive, chunked bodies, h2c,
//! `/status`, `/delay`, fail-status and shutdown on drop.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn get_is_echoed_as_json() {
    let echo = start(None).await;
    let mut c = h1(echo.addr()).await;
    let req = Request::get("/api/items?page=2&x=y")
        .header("host", "reviews.default")
        .header("X-Test", "one")
        .header("x-test", "two")
        .body(empty())
        .unwrap();
    let (head, body) = send_h1(&mut c, req).await;

    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-type"], "application/json");
    assert_eq!(head.headers["x-echo-name"], "reviews");
    assert_eq!(head.headers["x-echo-version"], "v2");
    let v = json(&body);
    assert_eq!(v["name"], "reviews");
    assert_eq!(v["version"], "v2");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/api/items?page=2&x=y");
    assert_eq!(v["authority"], "reviews.default");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["headers"]["host"], "reviews.default");
    assert_eq!(v["headers"]["x-test"], "one, two");
    assert_eq!(v["body_bytes"], 0);
    assert_eq!(v["body"], "");
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let echo = start(None).await;
    let mut c = h1(echo.addr()).await;
    for _ in 0..3 {
        let (head, _) = send_h1(&mut c, get("/")).await;
        assert_eq!(head.status, StatusCode::OK);
    }
    assert_eq!(echo.connections(), 1);
    assert_eq!(echo.requests(), 3);
}

#[tokio::test]
async fn chunked_post_body_is_echoed() {
    let echo = start(None).await;
    let mut c = h1(echo.addr()).await;
    let chunks = ["hello, ", "chunked ", "world"]
        .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c))));
    // No content-length: hyper sends a streamed body as chunked transfer-encoding.
    let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let req = Request::post("/upload").body(body).unwrap();
    let (head, body) = send_h1(&mut c, req).await;

    assert_eq!(head.status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["headers"]["transfer-encoding"], "chunked");
    assert_eq!(v["body"], "hello, chunked world");
    assert_eq!(v["body_bytes"], 20);
}

#[tokio::test]
async fn large_body_is_counted_but_echo_is_capped() {
    let echo = start(None).await;
    let mut c = h1(echo.addr()).await;
    let req = Request::post("/").body(full(vec![b'a'; 100_000])).unwrap();
    let (_, body) = send_h1(&mut c, req).await;
    let v = json(&body);
    assert_eq!(v["body_bytes"], 100_000);
    assert_eq!(v["body"].as_str().unwrap().len(), 64 * 1024);
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let echo = start(None).await;
    let mut c = h2(echo.addr()).await;
    let uri = format!("http://{}/h2/path?q=1", echo.addr());
    let req = Request::post(uri)
        .header("x-test", "h2")
        .body(full("over h2"))
        .unwrap();
    let (head, body) = send_h2(&mut c, req).await;

    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.version, http::Version::HTTP_2);
    assert_eq!(head.headers["x-echo-name"], "reviews");
    let v = json(&body);
    assert_eq!(v["protocol"], "HTTP/2.0");
    assert_eq!(v["path"], "/h2/path?q=1");
    assert_eq!(v["authority"], echo.addr().to_string());
    assert_eq!(v["headers"]["x-test"], "h2");
    assert_eq!(v["body"], "over h2");
    // Concurrent streams share the one connection.
    let uri = format!("http://{}/", echo.addr());
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let (a, b) = tokio::join!(send_h2(&mut c1, get(&uri)), send_h2(&mut c2, get(&uri)));
    assert_eq!((a.0.status, b.0.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(echo.connections(), 1);
    assert_eq!(echo.requests(), 3);
}

#[tokio::test]
async fn status_path_sets_the_status() {
    let echo = start(None).await;
    let mut c = h1(echo.addr()).await;

    let (head, body) = send_h1(&mut c, get("/status/503?reason=test")).await;
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&body)["path"], "/status/503?reason=test");

    let (head, body) = send_h1(&mut c, get("/status/418")).await;
    assert_eq!(head.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(json(&body)["name"], "reviews");

    let (head, body) = send_h1(&mut c, get("/status/204")).await;
    assert_eq!(head.status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());

    let (head, body) = send_h1(&mut c, get("/status/304")).await;
    assert_eq!(head.status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    let (head, _) = send_h1(&mut c, get("/status/nope")).await;
    assert_eq!(head.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn delay_path_delays_the_answer() {
    let echo = start(None).await;
    let mut c = h1(echo.addr()).await;

    let started = Instant::now();
    let (head, body) = send_h1(&mut c, get("/delay/300?x=1")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(json(&body)["path"], "/delay/300?x=1");

    // A client timeout shorter than the delay fires, as a proxy timeout test needs.
    let slow = send_h1(&mut c, get("/delay/5000"));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), slow)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn fail_status_answers_every_request_with_it() {
    let echo = start(Some(503)).await;
    let mut c = h1(echo.addr()).await;
    for path in ["/", "/status/200", "/anything?x=1"] {
        let (head, body) = send_h1(&mut c, get(path)).await;
        assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(head.headers["x-echo-name"], "reviews");
        assert_eq!(json(&body)["path"], path);
    }
    let mut c = h2(echo.addr()).await;
    let uri = format!("http://{}/", echo.addr());
    let (head, _) = send_h2(&mut c, get(&uri)).await;
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let echo = start(None).await;
    let addr = echo.addr();
    let mut open = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Wait until the connection is accepted, so its task exists when the server stops.
    while echo.connections() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(echo);

    // The open connection is closed by the server...
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), open.read(&mut buf))
        .await
        .expect("connection closed after drop");
    assert!(matches!(read, Ok(0) | Err(_)));
    // ...and the port no longer accepts.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn serve_runs_on_a_given_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(mesh_echo::serve(listener, config(None)));
    let mut c = h1(addr).await;
    let (head, body) = send_h1(&mut c, get("/from-serve")).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(json(&body)["path"], "/from-serve");
    server.abort();
}
