//! The admin endpoint of a running proxy process: the log level changes through
//! `POST /logging?level=...` (Envoy's API) and the change shows in what the process logs.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{h1_client, send_h1};
use http::StatusCode;

/// The proxy process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn admin_call(addr: SocketAddr, method: &str, path: &str) -> (StatusCode, String) {
    let r = send_h1(&h1_client(), addr, method, "admin", path, &[], "").await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Lines of the log file that mention admin requests.
fn admin_request_lines(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("admin request"))
        .count()
}

#[tokio::test]
async fn log_level_changes_through_the_admin_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, "version: \"1\"\n").unwrap();
    let log = dir.path().join("proxy.log");
    let admin = mesh_echo::ports::free_loopback_addr();
    let _proxy = Running(
        Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--admin-addr", &admin.to_string()])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("mesh-proxy starts"),
    );
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(admin).await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "admin never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        admin_call(admin, "GET", "/logging").await,
        (StatusCode::OK, "level: info\n".into())
    );
    admin_call(admin, "GET", "/ready").await;
    assert_eq!(admin_request_lines(&log), 0, "debug is off at info");

    assert_eq!(
        admin_call(admin, "POST", "/logging?level=debug").await,
        (StatusCode::OK, "level: debug\n".into())
    );
    admin_call(admin, "GET", "/ready").await;
    let started = Instant::now();
    while admin_request_lines(&log) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no debug line after the level change:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, body) = admin_call(admin, "POST", "/logging?level=loud").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("unknown log level"), "{body}");
    assert_eq!(
        admin_call(admin, "GET", "/logging").await.1,
        "level: debug\n",
        "a refused level changes nothing"
    );
    // Envoy's level name; debug lines stop.
    assert_eq!(
        admin_call(admin, "POST", "/logging?level=warning").await,
        (StatusCode::OK, "level: warn\n".into())
    );
    let before = admin_request_lines(&log);
    admin_call(admin, "GET", "/ready").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(admin_request_lines(&log), before);

    // No CA configured: no certificate to show.
    assert_eq!(
        admin_call(admin, "GET", "/certs").await.0,
        StatusCode::NOT_FOUND
    );
}
