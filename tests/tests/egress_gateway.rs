//! `meshctl up examples/egress-gateway` runs Istio's egress gateway task with real processes:
//! `sleep`'s request for the external host edition.cnn.com goes from its sidecar over mesh
//! mTLS (checked against the gateway's identity) to the egress gateway, which alone talks to
//! the stand-in external server on loopback.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use mesh_e2e::*;

const SLEEP_OUTBOUND: &str = "127.0.0.1:15301";
const SLEEP_ADMIN: &str = "127.0.0.1:15311";
const GATEWAY_ADMIN: &str = "127.0.0.1:15312";
const GATEWAY_PORT: &str = "127.0.0.1:18443";
const EXTERNAL: &str = "127.0.0.1:29399";

fn addr(a: &str) -> SocketAddr {
    a.parse().unwrap()
}

/// The sum of the samples of `metric` whose labels contain every one of `labels`.
fn sum(stats: &str, metric: &str, labels: &[&str]) -> f64 {
    stats
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn stats(admin: &str) -> String {
    http_get(addr(admin), "localhost", "/stats/prometheus")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[test]
fn a_sidecars_request_for_an_external_host_leaves_through_the_egress_gateway_over_mtls() {
    let echo = binary("mesh-echo");
    let _external = Proc::spawn(
        "external",
        std::process::Command::new(echo).args([
            "--addr",
            EXTERNAL,
            "--name",
            "cnn",
            "--version",
            "external",
        ]),
    );
    let _mesh = LocalMesh::up("egress-gateway", Stdio::inherit());

    let call = || http_get(addr(SLEEP_OUTBOUND), "edition.cnn.com", "/politics");
    assert!(
        eventually(Duration::from_secs(40), || call()
            .is_ok_and(|(s, b)| s == 200 && b.contains("\"name\":\"cnn\""))),
        "sleep reaches the external host: {:?}",
        call()
    );
    let (_, body) = call().unwrap();
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["path"], "/politics", "{reply}");

    // The sidecar's requests went to the gateway over mTLS with the gateway's identity, and
    // the gateway sent them on to the external host: both proxies' standard metrics say so.
    let sidecar = stats(SLEEP_ADMIN);
    let through_gateway = sum(
        &sidecar,
        "istio_requests_total",
        &[
            "destination_principal=\"spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway\"",
            "response_code=\"200\"",
        ],
    );
    assert!(through_gateway >= 2.0, "{sidecar}");
    let gateway = stats(GATEWAY_ADMIN);
    let forwarded = sum(
        &gateway,
        "istio_requests_total",
        &[
            "reporter=\"source\"",
            "source_workload=\"istio-egressgateway\"",
            "destination_service=\"edition.cnn.com\"",
            "response_code=\"200\"",
        ],
    );
    assert!(forwarded >= 2.0, "{gateway}");

    // The gateway's port speaks mesh mTLS only: a plaintext client gets nothing from it.
    assert!(
        http_get(addr(GATEWAY_PORT), "edition.cnn.com", "/").is_err(),
        "plaintext refused at the egress gateway"
    );
}
