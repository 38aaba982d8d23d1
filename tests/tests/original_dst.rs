//! ServiceEntry `resolution: NONE` on an HTTP port, as pilot translates it (an ORIGINAL_DST
//! cluster): a captured request for the entry's host goes on to the address the application
//! connected to, through the proxy's route (so the host's policy applies), while a request
//! through an explicit listener has no original destination and gets 503. Needs root.

use mesh_e2e::*;

/// What pilot gives for `hosts: [api.example.com]`, `resolution: NONE`, port 80 HTTP (see
/// `mesh-pilot` `resolution_none_http_ports_go_to_the_original_destination`), with a header
/// added by the route so the test sees the request took it, and an explicit listener.
fn proxy_config() -> String {
    r#"
version: "original-dst"
listeners:
  - name: outbound
    address: "127.0.0.1:15001"
    direction: OUTBOUND
    protocol: HTTP
    routeTable: out
    transparent: true
    outboundTrafficPolicy: REGISTRY_ONLY
  - name: "egress|127.0.0.1:8081"
    address: "127.0.0.1:8081"
    direction: OUTBOUND
    protocol: HTTP
    routeTable: out
routeTables:
  - name: out
    virtualHosts:
      - name: "api.example.com:80"
        domains: ["api.example.com", "api.example.com:80", "api.example.com:8081"]
        routes:
          - requestHeaders: { set: [{ name: x-routed, value: api }] }
            route: { clusters: [{ cluster: "outbound|80||api.example.com", weight: 100 }] }
clusters:
  - { name: "outbound|80||api.example.com", discovery: ORIGINAL_DST }
"#
    .to_string()
}

#[test]
fn captured_requests_for_a_resolution_none_host_go_to_their_original_destination() {
    if !mesh_test_support::require_root("network namespaces and iptables") {
        return;
    }
    let ns = Netns::new("odst");
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
    ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth0-peer", "up"]);
    let iptables = |args: &[&str]| {
        ns.exec("iptables", args);
    };
    iptables(&[
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
    ]);
    iptables(&[
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
    ]);

    // Two external servers on port 80: whichever the application connects to answers.
    let echo = binary("mesh-echo");
    let spawn_echo = |name: &str, addr: &str| {
        Proc::spawn(
            name,
            ns.command(echo.to_str().unwrap()).args([
                "--addr",
                addr,
                "--name",
                name,
                "--version",
                "v1",
            ]),
        )
    };
    let _one = spawn_echo("one", "198.18.0.1:80");
    let _two = spawn_echo("two", "198.18.0.2:80");

    let (_files, _proxy) = ns.static_proxy(&proxy_config());
    let curl = |args: &[&str]| ns.curl(args);

    // The host's route is taken (REGISTRY_ONLY would 404 anything unrouted), and the request
    // goes to the address the application connected to, each time its own.
    for (addr, name) in [("198.18.0.1", "one"), ("198.18.0.2", "two")] {
        let body = curl(&["-H", "Host: api.example.com", &format!("http://{addr}/x")]);
        let reply: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        assert_eq!(reply["name"], name, "{reply}");
        assert_eq!(reply["headers"]["x-routed"], "api", "{reply}");
    }

    // Through the explicit listener the original destination would be the proxy itself:
    // 503, no loop.
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Host: api.example.com",
        "http://127.0.0.1:8081/x",
    ]);
    assert_eq!(status, "503");
}
