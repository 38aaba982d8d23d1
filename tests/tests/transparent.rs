//! Transparent capture: iptables in a network namespace redirects an application's outbound
//! connections to the proxy, which reads SO_ORIGINAL_DST. Needs root (CI runs as root).

use std::time::Duration;

use mesh_e2e::*;

fn proxy_config() -> String {
    r#"
version: "transparent"
listeners:
  - name: outbound
    address: "127.0.0.1:15001"
    direction: OUTBOUND
    protocol: HTTP
    routeTable: out
    transparent: true
    outboundTrafficPolicy: ALLOW_ANY
routeTables:
  - name: out
    virtualHosts:
      - { name: reviews, domains: ["reviews", "reviews:80"], routes: [{ route: { clusters: [{ cluster: reviews, weight: 1 }] } }] }
clusters:
  - { name: reviews, endpoints: [{ address: "198.18.0.1:9080" }] }
"#
    .to_string()
}

#[test]
fn redirected_connections_are_routed_or_passed_through_to_their_original_destination() {
    if !mesh_test_support::require_root("network namespaces and iptables") {
        return;
    }
    let ns = Netns::new("tp");
    // A veth pair inside the pod gives 198.18.0.0/24 a route (no dummy driver needed).
    ns.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0-peer",
    ]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth0-peer", "up"]);
    // As Istio's init container does: the proxy's own connections are never captured.
    ns.exec(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-m",
            "owner",
            "--uid-owner",
            PROXY_UID,
            "-j",
            "RETURN",
        ],
    );
    ns.exec(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "198.18.0.0/24",
            "--dport",
            "80",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ],
    );

    let echo = binary("mesh-echo");
    let _reviews = Proc::spawn(
        "reviews",
        ns.command(echo.to_str().unwrap()).args([
            "--addr",
            "198.18.0.1:9080",
            "--name",
            "reviews",
            "--version",
            "v1",
        ]),
    );
    let _direct = Proc::spawn(
        "direct",
        ns.command(echo.to_str().unwrap()).args([
            "--addr",
            "198.18.0.1:80",
            "--name",
            "direct",
            "--version",
            "v1",
        ]),
    );

    let (_files, _proxy) = ns.static_proxy(&proxy_config());
    let curl = |args: &[&str]| ns.curl(args);
    assert!(eventually(Duration::from_secs(10), || curl(&[
        "http://198.18.0.1:9080/"
    ])
    .contains("reviews")));

    // The app calls some address of the service on port 80; the proxy routes by Host.
    let routed: serde_json::Value = serde_json::from_str(&curl(&[
        "-H",
        "Host: reviews",
        "http://198.18.0.77/productpage",
    ]))
    .expect("JSON");
    assert_eq!(routed["name"], "reviews", "{routed}");
    assert_eq!(routed["path"], "/productpage");

    // An unknown host goes on to where the app was connecting (ALLOW_ANY).
    let passed: serde_json::Value =
        serde_json::from_str(&curl(&["http://198.18.0.1/x"])).expect("JSON");
    assert_eq!(passed["name"], "direct", "{passed}");

    // Both went through the proxy, and the proxy's own upstream connections were not captured
    // again (else the passthrough would have looped back into the proxy).
    let stats = curl(&["http://127.0.0.1:15000/stats/prometheus"]);
    let served: f64 = stats
        .lines()
        .filter(|l| {
            l.starts_with("mesh_proxy_requests_total{") && l.contains("response_code=\"200\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(served, 2.0, "{stats}");
}
