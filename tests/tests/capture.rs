//! Traffic capture between two "pods": network namespaces on one bridge (198.18.0.0/24), each
//! with a sample app and a mesh-proxy behind `mesh-proxy iptables`, as the init container sets
//! them up in Kubernetes. Pilot and citadel run in a third namespace, the "node". The app in
//! pod A calls pod B's address and port directly; both proxies handle the call over mTLS, B's
//! app sees A's SPIFFE identity, and an excluded port bypasses both proxies. Needs root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_e2e::*;

const NODE_IP: &str = "198.18.0.1";
const APP_PORT: &str = "8080";
const EXCLUDED_PORT: &str = "9090";

/// The mesh as pilot reads it: service `b` on port 8080, and the two workloads with their
/// service accounts.
const MESH_YAML: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: b, namespace: default }
spec:
  hosts: [b.default.svc.cluster.local]
  addresses: [198.18.1.10]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: b } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: a, namespace: default }
spec:
  address: 198.18.0.2
  ports: { http: 8080 }
  labels: { app: a }
  serviceAccount: sleep
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: b, namespace: default }
spec:
  address: 198.18.0.3
  ports: { http: 8080 }
  labels: { app: b }
  serviceAccount: httpbin
"#;

/// A pod: its namespace, joined to the node's bridge, with its address on eth0.
fn pod(tag: &str, ip: &str, node: &Netns) -> Netns {
    let ns = Netns::new(tag);
    let peer = format!("veth-{tag}");
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", &peer]);
    ns.ip(&["link", "set", &peer, "netns", &node.name]);
    node.ip(&["link", "set", &peer, "master", "br0"]);
    node.ip(&["link", "set", &peer, "up"]);
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns
}

struct Pod {
    ns: Netns,
    _procs: Vec<Proc>,
}

impl Pod {
    fn curl(&self, args: &[&str]) -> String {
        self.ns.curl(args)
    }

    /// Requests the proxy served, by direction, from its Prometheus stats.
    fn served(&self, direction: &str) -> f64 {
        self.curl(&["http://127.0.0.1:15000/stats/prometheus"])
            .lines()
            .filter(|l| {
                l.starts_with("mesh_proxy_requests_total{")
                    && l.contains(&format!("direction=\"{direction}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Starts a pod's app (on the app port and the excluded port), captures its traffic the way
/// the init container does, and starts its proxy as uid 1337.
fn start_pod(
    ns: Netns,
    name: &str,
    service_account: &str,
    files: &Path,
    proxy_bin: &Path,
    root_cert: &Path,
    token: &Path,
) -> Pod {
    let echo = binary("mesh-echo");
    let mut procs = Vec::new();
    for (port, app) in [
        (APP_PORT, name.to_string()),
        (EXCLUDED_PORT, format!("{name}-excluded")),
    ] {
        procs.push(Proc::spawn(
            &app,
            ns.command(echo.to_str().unwrap()).args([
                "--addr",
                &format!("0.0.0.0:{port}"),
                "--name",
                &app,
                "--version",
                "v1",
            ]),
        ));
    }
    ns.exec(
        proxy_bin.to_str().unwrap(),
        &[
            "iptables",
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            PROXY_UID,
            "-i",
            "*",
            "-b",
            "*",
            "-d",
            EXCLUDED_PORT,
            "-o",
            EXCLUDED_PORT,
        ],
    );
    let token = readable_copy(token, files.join(format!("{name}.token")), 0o644);
    procs.push(Proc::spawn(
        &format!("{name} proxy"),
        ns.command("setpriv").args([
            "--reuid",
            PROXY_UID,
            "--regid",
            PROXY_UID,
            "--clear-groups",
            proxy_bin.to_str().unwrap(),
            "--discovery-addr",
            &format!("http://{NODE_IP}:15010"),
            "--workload",
            &format!("{name}.default"),
            "--outbound-addr",
            "0.0.0.0:15001",
            "--inbound-addr",
            "0.0.0.0:15006",
            "--app-addr",
            &format!("127.0.0.1:{APP_PORT}"),
            "--transparent",
            "--admin-addr",
            "127.0.0.1:15000",
            "--ca-addr",
            &format!("https://{NODE_IP}:15012"),
            "--root-cert-file",
            root_cert.to_str().unwrap(),
            "--token-file",
            token.to_str().unwrap(),
            "--service-account",
            service_account,
        ]),
    ));
    let pod = Pod { ns, _procs: procs };
    assert!(
        eventually(Duration::from_secs(20), || pod
            .curl(&["http://127.0.0.1:15000/ready"])
            .starts_with("LIVE")),
        "{name}'s proxy has its config and certificate"
    );
    pod
}

#[test]
fn pod_to_pod_calls_are_captured_by_both_proxies_and_carry_the_callers_identity() {
    if !mesh_test_support::require_root("network namespaces and iptables") {
        return;
    }
    let node = Netns::new("node");
    node.ip(&["link", "add", "br0", "type", "bridge"]);
    node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "br0"]);
    node.ip(&["link", "set", "br0", "up"]);
    let (ns_a, ns_b) = (pod("a", "198.18.0.2", &node), pod("b", "198.18.0.3", &node));

    let files = shared_dir();
    let config = files.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("mesh.yaml"), MESH_YAML).unwrap();
    let citadel = binary("mesh-citadel");
    let (ca_dir, tokens) = (files.path().join("ca"), files.path().join("tokens"));
    let token = |sa: &str| -> PathBuf {
        let out = Command::new(&citadel)
            .args(["token", "--tokens", tokens.to_str().unwrap()])
            .args(["--namespace", "default", "--service-account", sa])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    };
    let (token_a, token_b) = (token("sleep"), token("httpbin"));
    let _citadel = Proc::spawn(
        "mesh-citadel",
        node.command(citadel.to_str().unwrap()).args([
            "--dir",
            ca_dir.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
            "--grpc-addr",
            &format!("{NODE_IP}:15012"),
        ]),
    );
    let _pilot = Proc::spawn(
        "mesh-pilot",
        node.command(binary("mesh-pilot").to_str().unwrap()).args([
            "--config-dir",
            config.to_str().unwrap(),
            "--grpc-addr",
            &format!("{NODE_IP}:15010"),
            "--http-addr",
            "127.0.0.1:15014",
        ]),
    );
    let root_cert = ca_dir.join("root-cert.pem");
    assert!(
        eventually(Duration::from_secs(10), || root_cert.exists()),
        "citadel made its root"
    );
    let root_cert = readable_copy(&root_cert, files.path().join("root-cert.pem"), 0o644);
    // The proxy runs as another uid, which may not be able to enter the checkout.
    let proxy_bin = readable_copy(
        &binary("mesh-proxy"),
        files.path().join("mesh-proxy"),
        0o755,
    );

    let a = start_pod(
        ns_a,
        "a",
        "sleep",
        files.path(),
        &proxy_bin,
        &root_cert,
        &token_a,
    );
    let b = start_pod(
        ns_b,
        "b",
        "httpbin",
        files.path(),
        &proxy_bin,
        &root_cert,
        &token_b,
    );

    // A's app connects straight to B's address and port, naming the service as a resolved
    // Kubernetes name would.
    let call = || -> Option<serde_json::Value> {
        serde_json::from_str(&a.curl(&[
            "-H",
            "Host: b.default.svc.cluster.local:8080",
            &format!("http://198.18.0.3:{APP_PORT}/hello"),
        ]))
        .ok()
    };
    assert!(
        eventually(Duration::from_secs(10), || call()
            .is_some_and(|r| r["name"] == "b")),
        "A reaches B's app"
    );
    let (a_out, b_in) = (a.served("Outbound"), b.served("Inbound"));
    let reply = call().unwrap();
    assert_eq!(reply["name"], "b", "{reply}");
    assert_eq!(
        reply["client_identity"], "spiffe://cluster.local/ns/default/sa/sleep",
        "B's app sees A's identity: {reply}"
    );
    assert!(
        reply["headers"]["x-forwarded-client-cert"]
            .as_str()
            .is_some_and(|x| x.starts_with("By=spiffe://cluster.local/ns/default/sa/httpbin;")),
        "{reply}"
    );
    // Both proxies handled the call; A's proxy's own connection to B was not captured again
    // (it would have looped into A's outbound listener).
    assert_eq!(a.served("Outbound"), a_out + 1.0);
    assert_eq!(b.served("Inbound"), b_in + 1.0);
    assert_eq!(a.served("Inbound"), 0.0);
    let (a_out, b_in) = (a_out + 1.0, b_in + 1.0);

    // By the service's VIP, where nothing listens: the Host is the address, a virtual-host
    // domain of the service (Istio's generateVirtualHostDomains), so A's proxy routes it to B.
    a.ns.ip(&["route", "add", "198.18.1.0/24", "via", NODE_IP]);
    let by_vip: serde_json::Value =
        serde_json::from_str(&a.curl(&[&format!("http://198.18.1.10:{APP_PORT}/vip")]))
            .expect("the VIP is routed to the service");
    assert_eq!(by_vip["name"], "b", "{by_vip}");
    assert_eq!(
        by_vip["client_identity"], "spiffe://cluster.local/ns/default/sa/sleep",
        "{by_vip}"
    );
    let (a_out, b_in) = (a_out + 1.0, b_in + 1.0);
    assert_eq!(a.served("Outbound"), a_out);
    assert_eq!(b.served("Inbound"), b_in);

    // The excluded port bypasses both proxies: no identity, no new requests in their stats.
    let bypass: serde_json::Value =
        serde_json::from_str(&a.curl(&[&format!("http://198.18.0.3:{EXCLUDED_PORT}/")]))
            .expect("the excluded port answers");
    assert_eq!(bypass["name"], "b-excluded", "{bypass}");
    assert!(bypass["client_identity"].is_null(), "{bypass}");
    assert_eq!(a.served("Outbound"), a_out);
    assert_eq!(b.served("Inbound"), b_in);
}
