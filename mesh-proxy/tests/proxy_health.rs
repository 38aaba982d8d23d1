//! The proxy's own health beside Istio's metrics, scraped over HTTP from `/stats/prometheus`
//! as Prometheus reads it: open downstream connections, the config in force (version and when
//! it was applied) and rejected ones, and the workload certificate's expiry.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::mesh::*;
use common::*;
use http::StatusCode;
use mesh_proxy::Server;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

/// Serves `server`'s metrics port on a loopback port.
async fn metrics_port(server: &Arc<Server>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(mesh_proxy::admin::serve_metrics(listener, server.clone()));
    addr
}

async fn scrape(addr: SocketAddr) -> String {
    let reply = get(addr, "localhost", "/stats/prometheus").await;
    assert_eq!(reply.status, StatusCode::OK);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// An outbound TCP listener "out" to `backend`, at config `version`.
fn tcp_config(backend: SocketAddr, version: &str) -> mesh_proto::config::v1::ProxyConfig {
    let mut cfg = outbound_tcp(vec![json!({ "address": backend.to_string() })], json!({}));
    cfg.version = version.into();
    cfg
}

#[tokio::test]
async fn config_version_and_age_and_rejections_are_exported() {
    let backend = tcp_echo().await;
    let before = unix_now();
    let server = sidecar(None, tcp_config(backend, "v1")).await;
    server.apply(tcp_config(backend, "v2")).await.unwrap();
    let after = unix_now();
    let metrics = metrics_port(&server).await;
    let text = scrape(metrics).await;
    // Only the version in force, valued 1.
    assert_eq!(
        metric(&text, "mesh_proxy_config_version_info", "version=\"v2\""),
        1.0,
        "{text}"
    );
    assert!(!text.contains("version=\"v1\""), "{text}");
    let applied = metric(&text, "mesh_proxy_config_last_update_timestamp_seconds", "");
    assert!(
        (before..=after).contains(&applied),
        "{before} <= {applied} <= {after}"
    );
    assert!(text.contains("# HELP mesh_proxy_config_last_update_timestamp_seconds"));

    // A config the proxy refuses changes neither, and is counted.
    let mut bad = tcp_config(backend, "v3");
    bad.listeners[0].address = "not an address".into();
    assert!(server.apply(bad).await.is_err());
    let text = scrape(metrics).await;
    assert_eq!(
        metric(
            &text,
            "mesh_proxy_config_updates_total",
            "result=\"rejected\""
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "mesh_proxy_config_updates_total",
            "result=\"accepted\""
        ),
        2.0
    );
    assert_eq!(
        metric(&text, "mesh_proxy_config_version_info", "version=\"v2\""),
        1.0
    );
    assert_eq!(
        metric(&text, "mesh_proxy_config_last_update_timestamp_seconds", ""),
        applied
    );
}

#[tokio::test]
async fn open_downstream_connections_are_a_gauge_per_listener() {
    let backend = tcp_echo().await;
    let server = sidecar(None, tcp_config(backend, "v1")).await;
    let metrics = metrics_port(&server).await;
    let active = |text: &str| {
        metric(
            text,
            "mesh_proxy_downstream_connections_active",
            "listener=\"out\"",
        )
    };
    let first = TcpStream::connect(out_addr(&server)).await.unwrap();
    let second = TcpStream::connect(out_addr(&server)).await.unwrap();
    let mut seen = 0.0;
    for _ in 0..100 {
        seen = active(&scrape(metrics).await);
        if seen == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 2.0);
    drop((first, second));
    for _ in 0..100 {
        seen = active(&scrape(metrics).await);
        if seen == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 0.0, "closed connections leave the gauge");
    let text = scrape(metrics).await;
    assert_eq!(
        metric(
            &text,
            "mesh_proxy_downstream_connections_total",
            "listener=\"out\""
        ),
        2.0
    );
}

#[tokio::test]
async fn the_workload_certificates_expiry_is_exported() {
    let validity = Duration::from_secs(3600);
    let citadel = Citadel::start(Some(validity)).await;
    let backend = tcp_echo().await;
    let without = sidecar(None, tcp_config(backend, "v1")).await;
    let text = scrape(metrics_port(&without).await).await;
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("istio_agent_cert_expiry_seconds{")),
        "no certificate, no sample: {text}"
    );

    let server = sidecar(
        Some(citadel.identity("reviews").await),
        tcp_config(backend, "v1"),
    )
    .await;
    let text = scrape(metrics_port(&server).await).await;
    let remaining = metric(
        &text,
        "istio_agent_cert_expiry_seconds",
        "resource_name=\"default\"",
    );
    // Issued a moment ago for an hour (citadel may backdate the start a little).
    assert!(
        remaining > 3000.0 && remaining <= 3600.0,
        "{remaining}: {text}"
    );
    let not_after = metric(
        &text,
        "mesh_proxy_certificate_expiration_timestamp_seconds",
        "",
    );
    assert!(
        (not_after - (unix_now() + remaining)).abs() < 5.0,
        "{not_after} vs now + {remaining}"
    );
    assert!(text.contains("# TYPE istio_agent_cert_expiry_seconds gauge"));
}
