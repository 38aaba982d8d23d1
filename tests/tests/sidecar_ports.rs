//! The proxy binary's Kubernetes-facing ports as the injected sidecar runs it: the health port
//! (`/healthz/ready`, the app's rewritten probes), the metrics-only port, and `mesh-proxy wait`,
//! the start hook that holds the app back until the proxy is ready.

use std::process::Command;
use std::time::Duration;

use mesh_e2e::*;

fn wait(url: &str, timeout: &str) -> std::process::ExitStatus {
    Command::new(binary("mesh-proxy"))
        .args(["wait", "--timeout", timeout, "--url", url])
        .status()
        .expect("mesh-proxy wait runs")
}

#[test]
fn health_metrics_and_wait_follow_readiness() {
    let app = format!("127.0.0.1:{}", free_port());
    let _app = Proc::spawn(
        "mesh-echo",
        Command::new(binary("mesh-echo")).args([
            "--addr",
            &app,
            "--name",
            "app",
            "--version",
            "v1",
        ]),
    );
    let (health, metrics, admin) = (free_port(), free_port(), free_port());
    let pilot = format!("127.0.0.1:{}", free_port());
    let probers = format!(
        r#"{{"/app-health/app/readyz": {{"httpGet": {{"path": "/status/200", "port": {}}}}},
            "/app-health/app/livez": {{"httpGet": {{"path": "/status/503", "port": {}}}}}}}"#,
        app.rsplit(':').next().unwrap(),
        app.rsplit(':').next().unwrap()
    );
    let ready_url = format!("http://127.0.0.1:{health}/healthz/ready");

    // Pilot is not there yet: the proxy has no config, so it is not ready and `wait` gives up.
    let mut proxy = Command::new(binary("mesh-proxy"));
    proxy
        .args([
            "--discovery-addr",
            &format!("http://{pilot}"),
            "--workload",
            "app.default",
        ])
        .args(["--inbound-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--app-addr", &app])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--health-addr", &format!("127.0.0.1:{health}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .env("MESH_KUBE_APP_PROBERS", &probers);
    let _proxy = Proc::spawn("mesh-proxy", &mut proxy);
    assert!(
        eventually(Duration::from_secs(10), || http_get(
            format!("127.0.0.1:{health}").parse().unwrap(),
            "health",
            "/healthz/ready"
        )
        .is_ok_and(|(s, _)| s == 503)),
        "not ready without config"
    );
    assert!(!wait(&ready_url, "1s").success(), "wait times out");

    // The app's probes go through the proxy whatever its readiness: the app's own status.
    let health_addr = format!("127.0.0.1:{health}").parse().unwrap();
    assert_eq!(
        http_get(health_addr, "h", "/app-health/app/readyz")
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        http_get(health_addr, "h", "/app-health/app/livez")
            .unwrap()
            .0,
        503
    );
    assert_eq!(
        http_get(health_addr, "h", "/app-health/other/readyz")
            .unwrap()
            .0,
        404
    );

    // The metrics port serves the stats and nothing of the admin API.
    let metrics_addr = format!("127.0.0.1:{metrics}").parse().unwrap();
    let (status, body) = http_get(metrics_addr, "m", "/stats/prometheus").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("mesh_proxy_upstream_connections_total"),
        "{body}"
    );
    assert_eq!(http_get(metrics_addr, "m", "/config_dump").unwrap().0, 404);
    assert_eq!(http_get(metrics_addr, "m", "/ready").unwrap().0, 404);

    // Pilot comes up with the workload: the proxy gets its config, turns ready, `wait` passes.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("workload.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: app, namespace: default }\nspec: { address: 127.0.0.1, ports: { http: 8080 }, labels: { app: app } }\n",
    )
    .unwrap();
    let _pilot = Proc::spawn(
        "mesh-pilot",
        Command::new(binary("mesh-pilot")).args([
            "--config-dir",
            dir.path().to_str().unwrap(),
            "--grpc-addr",
            &pilot,
            "--http-addr",
            &format!("127.0.0.1:{}", free_port()),
        ]),
    );
    assert!(wait(&ready_url, "20s").success(), "wait passes once ready");
    assert_eq!(http_get(health_addr, "h", "/healthz/ready").unwrap().0, 200);
}

#[test]
fn malformed_app_probers_stop_the_proxy_with_the_reason() {
    let out = Command::new(binary("mesh-proxy"))
        .args(["--config", "/nonexistent-unused.yaml"])
        .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
        .env("MESH_KUBE_APP_PROBERS", "{not json")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MESH_KUBE_APP_PROBERS"), "{stderr}");
}
