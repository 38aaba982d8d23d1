//! The proxy binary drains on SIGTERM: it stops accepting, finishes in-flight requests, exits 0.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_e2e::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The app behind the proxy, in the test process: answers every HTTP/1.1 request 200 with
/// `{"path":"<path>"}`, except that it holds a request for `/held`: it reports it on
/// `received` and answers only after `release`, so the test knows it is in flight.
struct HoldingApp {
    addr: SocketAddr,
    received: Receiver<()>,
    release: Sender<()>,
}

impl HoldingApp {
    fn start() -> HoldingApp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (received_tx, received) = channel();
        let (release, released) = channel();
        let released = Arc::new(Mutex::new(released));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (received_tx, released) = (received_tx.clone(), released.clone());
                std::thread::spawn(move || serve(conn, &received_tx, &released));
            }
        });
        HoldingApp {
            addr,
            received,
            release,
        }
    }
}

/// Answers the requests (no bodies) of one kept-alive connection until the peer closes it.
fn serve(conn: TcpStream, received: &Sender<()>, released: &Mutex<Receiver<()>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut header = String::new();
        while reader.read_line(&mut header).unwrap_or(0) > 0 && header != "\r\n" {
            header.clear();
        }
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        if path == "/held" {
            let _ = received.send(());
            let _ = released.lock().unwrap().recv();
        }
        let body = format!(r#"{{"path":"{path}"}}"#);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if conn.write_all(head.as_bytes()).is_err() || conn.write_all(body.as_bytes()).is_err() {
            return;
        }
    }
}

fn proxy_config(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"
version: "e2e"
listeners:
  - {{ name: out, address: "{listen}", direction: OUTBOUND, protocol: HTTP, routeTable: out }}
routeTables:
  - name: out
    virtualHosts:
      - {{ name: all, domains: ["*"], routes: [{{ route: {{ clusters: [{{ cluster: app, weight: 1 }}] }} }}] }}
clusters:
  - {{ name: app, endpoints: [{{ address: "{upstream}" }}] }}
"#
    )
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let app = HoldingApp::start();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("proxy.yaml");
    std::fs::write(&cfg, proxy_config(listen, app.addr)).unwrap();
    let mut proxy = Proc::spawn(
        "mesh-proxy",
        Command::new(binary("mesh-proxy")).args([
            "--config",
            cfg.to_str().unwrap(),
            "--admin-addr",
            &admin.to_string(),
            "--drain-timeout-ms",
            "5000",
        ]),
    );
    assert!(
        eventually(Duration::from_secs(10), || http_get(
            admin, "admin", "/ready"
        )
        .is_ok_and(|(s, _)| s == 200)),
        "proxy became ready"
    );
    assert!(eventually(Duration::from_secs(10), || http_get(
        listen, "app", "/"
    )
    .is_ok_and(|(s, _)| s == 200)));

    // SIGTERM while a request is in flight: the app holds it until the listener is closed.
    let held = std::thread::spawn(move || http_get(listen, "app", "/held"));
    app.received
        .recv_timeout(Duration::from_secs(10))
        .expect("the request reached the app");
    kill(Pid::from_raw(proxy.pid()), Signal::SIGTERM).unwrap();

    // New connections are refused once the listener is closed.
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(
            listen
        )
        .is_err()),
        "listener still accepting after SIGTERM"
    );
    app.release.send(()).unwrap();
    let started = Instant::now();
    let (status, body) = held.join().unwrap().expect("in-flight request answered");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"path":"/held"}"#);
    let exit = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("proxy exited");
    assert!(exit.success(), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
