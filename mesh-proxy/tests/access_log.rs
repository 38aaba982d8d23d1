//! Access logs from real proxies: an mTLS call logged by both sidecars (JSON at the caller's,
//! Envoy's text format at the callee's) with the request's fields, the peers' identities and
//! the trace id; a filter keeping 503s and dropping 200s; logs turned on and off by a config
//! change, without a restart; a filter the proxy cannot run refused with its field.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::mesh::*;
use common::*;
use http::StatusCode;
use mesh_proto::config::v1::ProxyConfig;
use mesh_proxy::Server;
use mesh_proxy::access_log::Output;
use mesh_proxy::identity::IdentityHandle;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A file in a directory of this test's own, removed when dropped.
struct LogFile {
    dir: PathBuf,
    path: PathBuf,
}

impl LogFile {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mesh-access-log-{}-{name}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        Self { dir, path }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits (bounded) for a line containing `needle`: lines are written off the request
    /// path, a moment after the response.
    async fn wait_for(&self, needle: &str) -> String {
        for _ in 0..200 {
            if let Some(l) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no line with {needle:?} in {:#?}", self.lines());
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_of(f: &LogFile) -> &Path {
    &f.path
}

/// `cfg` with `telemetry.accessLogging.logs` set to `logs` (proto3 JSON).
fn with_logs(cfg: ProxyConfig, logs: Value) -> ProxyConfig {
    let mut v = serde_json::to_value(&cfg).unwrap();
    v["telemetry"] = json!({ "accessLogging": { "logs": logs } });
    config(v)
}

/// A proxy writing its access logs to `log`, serving `cfg`.
async fn logging_proxy(
    identity: Option<IdentityHandle>,
    log: &LogFile,
    cfg: ProxyConfig,
) -> Arc<Server> {
    let server = Server::new();
    assert!(server.set_access_log_output(Output::File(path_of(log).to_path_buf())));
    if let Some(id) = identity {
        server.set_identity(id);
    }
    server.apply(cfg).await.expect("test config is valid");
    server
}

#[tokio::test]
async fn an_mtls_call_is_logged_at_both_sides_in_json_and_text() {
    let citadel = Citadel::start(None).await;
    let app = echo("reviews", "v2").await;
    let (client_log, server_log) = (LogFile::new("client"), LogFile::new("server"));
    let server = logging_proxy(
        Some(citadel.identity("reviews").await),
        &server_log,
        with_logs(
            inbound(app.addr(), json!({ "mtlsMode": "MTLS_MODE_STRICT" })),
            json!([{ "name": "envoy", "format": "TEXT", "mode": "SERVER" }]),
        ),
    )
    .await;
    let client = logging_proxy(
        Some(citadel.identity("productpage").await),
        &client_log,
        with_logs(
            outbound(
                vec![endpoint(in_addr(&server), true, &[&spiffe("reviews")])],
                json!({}),
            ),
            // A SERVER-only log on the caller's proxy: its outbound requests are not logged
            // twice.
            json!([
                { "name": "envoy-json", "format": "JSON", "mode": "CLIENT" },
                { "name": "envoy", "format": "TEXT", "mode": "SERVER" },
            ]),
        ),
    )
    .await;

    let reply = get_with(
        out_addr(&client),
        "reviews:9080",
        "/reviews/1?stars=5",
        &[
            ("user-agent", "bookinfo-test/1.0"),
            ("x-forwarded-for", "198.18.0.9"),
            ("traceparent", TRACEPARENT),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let request_id = reply
        .upstream_header("x-request-id")
        .expect("the caller's proxy adds a request id");

    let line = client_log.wait_for("/reviews/1").await;
    let j: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/reviews/1?stars=5");
    assert_eq!(j["protocol"], "HTTP/1.1");
    assert_eq!(j["response_code"], 200);
    assert_eq!(j["response_flags"], "-");
    assert_eq!(j["response_code_details"], "via_upstream");
    assert_eq!(j["bytes_received"], 0);
    assert_eq!(j["bytes_sent"], reply.body.len() as u64);
    assert!(j["duration"].as_u64().is_some());
    assert!(j["upstream_service_time"].as_str().is_some());
    assert_eq!(j["x_forwarded_for"], "198.18.0.9");
    assert_eq!(j["user_agent"], "bookinfo-test/1.0");
    assert_eq!(j["request_id"], request_id.as_str());
    assert_eq!(j["authority"], "reviews:9080");
    assert_eq!(j["upstream_host"], in_addr(&server).to_string());
    assert_eq!(j["upstream_cluster"], "app");
    assert_eq!(j["upstream_peer_uri_san"], spiffe("reviews"));
    assert_eq!(j["downstream_peer_uri_san"], Value::Null);
    assert_eq!(j["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(
        j["start_time"].as_str().unwrap().ends_with('Z'),
        "{}",
        j["start_time"]
    );

    let line = server_log.wait_for("/reviews/1").await;
    assert!(line.starts_with('['), "{line}");
    assert!(
        line.contains("] \"GET /reviews/1?stars=5 HTTP/1.1\" 200 - via_upstream - \"-\" 0 "),
        "{line}"
    );
    for field in [
        "\"198.18.0.9\"",
        "\"bookinfo-test/1.0\"",
        &format!("\"{request_id}\""),
        "\"reviews:9080\"",
        &format!("\"{}\"", app.addr()),
        &format!("\"{}\"", spiffe("productpage")),
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    assert!(
        line.ends_with(" 4bf92f3577b34da6a3ce929d0e0e4736"),
        "{line}"
    );
    // The caller's SERVER-only log saw no inbound request; one line each.
    assert_eq!(client_log.lines().len(), 1, "{:#?}", client_log.lines());
    assert_eq!(server_log.lines().len(), 1, "{:#?}", server_log.lines());
    assert_eq!(
        metric(
            &metrics_text(&client),
            "mesh_proxy_access_log_dropped_total",
            ""
        ),
        0.0
    );
    assert_eq!(
        metric(
            &metrics_text(&client),
            "mesh_proxy_access_log_written_total",
            ""
        ),
        1.0
    );
}

/// Two routes through one outbound listener: `/ok` to a healthy app, `/broken` to one that
/// answers 503.
fn ok_and_broken(ok: &mesh_echo::EchoHandle, broken: &mesh_echo::EchoHandle) -> ProxyConfig {
    outbound_config(
        table(json!([{
            "name": "app", "domains": ["*"],
            "routes": [
                { "match": { "path": { "prefix": "/broken" } }, "route": {
                    "clusters": [{ "cluster": "broken", "weight": 100 }],
                    "retryPolicy": { "numRetries": 0 } } },
                { "match": { "path": { "prefix": "/" } }, "route": {
                    "clusters": [{ "cluster": "ok", "weight": 100 }] } },
            ]
        }])),
        json!([cluster("ok", &[ok]), cluster("broken", &[broken])]),
    )
}

#[tokio::test]
async fn a_filter_keeps_503s_and_drops_200s() {
    let ok = echo("ok", "v1").await;
    let broken = echo_with("broken", "v1", Some(503)).await;
    let log = LogFile::new("filter");
    let server = logging_proxy(
        None,
        &log,
        with_logs(
            ok_and_broken(&ok, &broken),
            json!([
                { "name": "errors", "format": "TEXT",
                  "filter": "response.code == 503 || response.code == 404" },
                // Unfiltered, to know when both requests have been through the logs.
                { "name": "all", "format": "JSON" },
            ]),
        ),
    )
    .await;
    assert_eq!(
        get(out_addr(&server), "app", "/fine").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(out_addr(&server), "app", "/broken").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    log.wait_for("\"path\":\"/fine\"").await;
    log.wait_for("\"path\":\"/broken\"").await;
    let text: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.starts_with('['))
        .collect();
    assert_eq!(text.len(), 1, "{text:#?}");
    assert!(
        text[0].contains("\"GET /broken HTTP/1.1\" 503 "),
        "{}",
        text[0]
    );
}

/// A client slow to send its head: the request's duration counts from the head's first bytes
/// (as Envoy's), the upstream service time from when the proxy took the request up.
#[tokio::test]
async fn a_slow_head_counts_in_the_duration_and_start_time_not_in_the_upstream_service_time() {
    let ok = echo("ok", "v1").await;
    let broken = echo_with("broken", "v1", Some(503)).await;
    let log = LogFile::new("slow-head");
    let server = logging_proxy(
        None,
        &log,
        with_logs(
            ok_and_broken(&ok, &broken),
            json!([{ "name": "all", "format": "JSON" }]),
        ),
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(out_addr(&server))
        .await
        .unwrap();
    let first_bytes = std::time::SystemTime::now();
    conn.write_all(b"GET /slow HTTP/1.1\r\nho").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(b"st: app\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{reply:?}");

    let line = log.wait_for("\"path\":\"/slow\"").await;
    let j: Value = serde_json::from_str(&line).unwrap();
    let duration = j["duration"].as_u64().unwrap();
    let service: u64 = j["upstream_service_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(duration >= 300, "{line}");
    assert!(service < 300, "{line}");
    // The start is when the head began, not when the proxy took the request up 300 ms later
    // (the format is fixed-width, so its text orders as time does).
    let start = j["start_time"].as_str().unwrap();
    let at = |t: std::time::SystemTime| mesh_proxy::access_log::format::start_time(Some(t));
    assert!(
        start <= at(first_bytes + Duration::from_millis(150)).as_str(),
        "{line}"
    );
    assert!(
        start >= at(first_bytes - Duration::from_millis(50)).as_str(),
        "{line}"
    );
}

/// A single text log writes a connection's downstream part once and reuses it: lines of
/// two connections, interleaved, each show their own client address.
#[tokio::test]
async fn each_connection_s_lines_show_its_own_downstream_address() {
    let app = echo("ok", "v1").await;
    let log = LogFile::new("connections");
    let server = logging_proxy(
        None,
        &log,
        with_logs(
            outbound(vec![endpoint(app.addr(), false, &[])], json!({})),
            json!([{ "name": "envoy", "format": "TEXT" }]),
        ),
    )
    .await;
    let mut conns = Vec::new();
    for _ in 0..2 {
        conns.push(
            tokio::net::TcpStream::connect(out_addr(&server))
                .await
                .unwrap(),
        );
    }
    let mut sent = Vec::new();
    // Interleaved: first, second, first, second.
    for i in 0..4 {
        let conn = &mut conns[i % 2];
        let path = format!("/conn-{i}");
        let req = format!("GET {path} HTTP/1.1\r\nhost: app\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        read_response_head(conn).await;
        sent.push((path, conn.local_addr().unwrap()));
    }
    for (path, client) in sent {
        let line = log.wait_for(&format!("GET {path} ")).await;
        assert!(
            line.contains(&format!(" {client} ")),
            "{client} missing in {line}"
        );
    }
}

/// Reads one response with a `content-length` body off a keep-alive connection.
async fn read_response_head(conn: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if buf.len() >= end + 4 + length {
                return;
            }
        }
    }
}

#[tokio::test]
async fn access_logs_turn_on_and_off_with_the_config() {
    let app = echo("app", "v1").await;
    let log = LogFile::new("live");
    let plain = outbound_config(
        table(json!([{ "name": "app", "domains": ["*"], "routes": [to("app")] }])),
        json!([cluster("app", &[&app])]),
    );
    let logged = |version: &str| {
        let mut cfg = with_logs(
            plain.clone(),
            json!([{ "name": "envoy", "format": "TEXT" }]),
        );
        cfg.version = version.into();
        cfg
    };
    let server = logging_proxy(None, &log, plain.clone()).await;
    let addr = out_addr(&server);
    assert_eq!(get(addr, "app", "/one").await.status, StatusCode::OK);
    server.apply(logged("2")).await.unwrap();
    // The listener is the same one: logging changed without a restart.
    assert_eq!(out_addr(&server), addr);
    assert_eq!(get(addr, "app", "/two").await.status, StatusCode::OK);
    server.apply(plain.clone()).await.unwrap();
    assert_eq!(get(addr, "app", "/three").await.status, StatusCode::OK);
    server.apply(logged("4")).await.unwrap();
    assert_eq!(get(addr, "app", "/four").await.status, StatusCode::OK);
    log.wait_for("GET /two ").await;
    log.wait_for("GET /four ").await;
    // Whether a request is logged is decided when it starts, with the config of that moment.
    let lines = log.lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");

    // A filter the proxy cannot evaluate is refused, naming the log, and changes nothing.
    let bad = with_logs(
        plain,
        json!([{ "name": "envoy", "filter": "response.code in [503]" }]),
    );
    let err = server.apply(bad).await.unwrap_err();
    assert_eq!(err.field(), "telemetry.accessLogging.logs[0].filter");
    assert_eq!(get(addr, "app", "/five").await.status, StatusCode::OK);
    log.wait_for("GET /five ").await;

    // A request the proxy refuses before routing (no host) is logged too.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /nohost HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut reply)).await;
    assert!(
        reply.starts_with(b"HTTP/1.0 400"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let line = log.wait_for("GET /nohost ").await;
    assert!(line.contains("\"GET /nohost HTTP/1.0\" 400 "), "{line}");
}

/// The proxy process, killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the `mesh-proxy` binary on a config file with a JSON access log, with `extra`
/// arguments and its stdout and stderr in files of `dir`; sends one request through it.
async fn run_binary(dir: &Path, extra: &[&str], path: &str) -> Running {
    let app = echo("app", "v1").await;
    let port = mesh_echo::ports::free_loopback_addr();
    let config = dir.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "version: \"1\"
listeners:
- {{name: out, address: \"{port}\", direction: OUTBOUND, protocol: HTTP, routeTable: out}}
routeTables:
- name: out
  virtualHosts: [{{name: app, domains: [\"*\"], routes: [{{route: {{clusters: [{{cluster: app, weight: 100}}]}}}}]}}]
clusters: [{{name: app, endpoints: [{{address: \"{}\"}}]}}]
telemetry: {{accessLogging: {{logs: [{{name: envoy-json, format: JSON}}]}}}}
",
            app.addr()
        ),
    )
    .unwrap();
    let admin = mesh_echo::ports::free_loopback_addr();
    let proxy = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--admin-addr", &admin.to_string()])
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("MESH_ACCESS_LOG_FILE")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .expect("mesh-proxy starts"),
    );
    for attempt in 0.. {
        if tokio::net::TcpStream::connect(port).await.is_ok() {
            let reply = get(port, "app", path).await;
            if reply.status == StatusCode::OK {
                break;
            }
        }
        assert!(attempt < 400, "the proxy never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(app);
    proxy
}

/// Waits (bounded) for a line of `file` containing `needle`.
async fn line_in(file: &Path, needle: &str) -> String {
    for _ in 0..200 {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "no line with {needle:?} in {}:\n{}",
        file.display(),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

#[tokio::test]
async fn the_binary_logs_to_stdout_by_default_and_to_the_access_log_file_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let _proxy = run_binary(dir.path(), &[], "/to-stdout").await;
    let line = line_in(&dir.path().join("stdout"), "/to-stdout").await;
    let j: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(j["response_code"], 200);
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(!stderr.contains("/to-stdout"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let _proxy = run_binary(
        dir.path(),
        &["--access-log-file", file.to_str().unwrap()],
        "/to-file",
    )
    .await;
    let line = line_in(&file, "/to-file").await;
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap()["path"],
        "/to-file"
    );
    let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    assert!(!stdout.contains("/to-file"), "{stdout}");
}
