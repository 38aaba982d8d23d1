//! The proxy binary drains on SIGTERM: it stops accepting, finishes in-flight requests, exits 0.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use mesh_e2e::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
    let app_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _app = Proc::spawn(
        "mesh-echo",
        Command::new(binary("mesh-echo")).args([
            "--addr",
            &app_addr.to_string(),
            "--name",
            "app",
            "--version",
            "v1",
        ]),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("proxy.yaml");
    std::fs::write(&cfg, proxy_config(listen, app_addr)).unwrap();
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

    let slow = std::thread::spawn(move || http_get(listen, "app", "/delay/1500"));
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(proxy.pid()), Signal::SIGTERM).unwrap();

    // New connections are refused once the listener is closed.
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(
            listen
        )
        .is_err()),
        "listener still accepting after SIGTERM"
    );
    let started = Instant::now();
    let (status, body) = slow.join().unwrap().expect("in-flight request answered");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""path":"/delay/1500""#), "{body}");
    let exit = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("proxy exited");
    assert!(exit.success(), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
