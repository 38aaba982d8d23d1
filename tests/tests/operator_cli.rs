//! The operator commands against a running local mesh (`meshctl up examples/bookinfo`):
//! proxy-status from pilot, proxy-config from a proxy's admin endpoint found through pilot,
//! the certificate without its key, a live log level change, and analyze / describe against
//! the running pilot, following a live edit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_e2e::*;

fn meshctl(args: &[&str]) -> Output {
    Command::new(binary("meshctl"))
        .args(args)
        .env_remove("MESH_PILOT")
        .output()
        .expect("meshctl runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn operator_commands_against_the_running_bookinfo_mesh() {
    let mut mesh = LocalMesh::up("bookinfo", Stdio::piped());
    let summary = Arc::new(Mutex::new(String::new()));
    let stdout = mesh.meshctl.child.stdout.take().unwrap();
    let collected = summary.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            collected.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let pilot = mesh.pilot_http.to_string();
    let outbound = "127.0.0.1:15001".parse().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || http_get(
            outbound,
            "reviews:9080",
            "/"
        )
        .is_ok_and(|(s, _)| s == 200)),
        "the local mesh came up"
    );

    // meshctl up's summary lists each proxy's admin address and the commands to try.
    assert!(
        eventually(Duration::from_secs(10), || summary
            .lock()
            .unwrap()
            .contains("Ctrl-C stops the mesh")),
        "meshctl printed its summary"
    );
    let printed = summary.lock().unwrap().clone();
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("workload ") && l.trim_end().ends_with("admin")),
        "{printed}"
    );
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("reviews-v1 ") && l.trim_end().ends_with("127.0.0.1:15102")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("meshctl proxy-status --pilot {pilot}")),
        "{printed}"
    );
    // The ingress gateway's address, with the Gateway it serves.
    assert!(
        printed
            .lines()
            .any(|l| l.trim_start().starts_with("istio-ingressgateway ")
                && l.contains("80 -> 127.0.0.1:18080")
                && l.trim_end().ends_with("default/bookinfo-gateway")),
        "{printed}"
    );
    assert!(
        printed.contains("curl http://127.0.0.1:18080/productpage"),
        "{printed}"
    );

    // proxy-status: the six proxies of the example and its ingress gateway, each SYNCED with
    // its admin address.
    let mut status = String::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            status = text(&meshctl(&["proxy-status", "--pilot", &pilot]));
            status.lines().filter(|l| l.contains("SYNCED")).count() == 7
        }),
        "{status}"
    );
    let reviews_row = status
        .lines()
        .find(|l| l.starts_with("reviews-v1.default "))
        .expect("a row for reviews-v1");
    assert!(reviews_row.contains("127.0.0.1:15102"), "{status}");
    assert!(status.starts_with("NAME "), "{status}");

    // proxy-config through pilot's record of the admin address.
    let pc = |what: &str, proxy: &str| meshctl(&["proxy-config", what, proxy, "--pilot", &pilot]);
    let routes = pc("routes", "productpage-v1");
    assert!(routes.status.success(), "{}", text(&routes));
    assert!(
        text(&routes).contains("|v1|reviews.default.svc.cluster.local 80%")
            && text(&routes).contains("|v3|reviews.default.svc.cluster.local 20%"),
        "the example's 80/20 split: {}",
        text(&routes)
    );
    let clusters = text(&pc("clusters", "productpage-v1.default"));
    let reviews_v1 = clusters
        .lines()
        .find(|l| l.starts_with("outbound|9080|v1|reviews.default.svc.cluster.local "))
        .unwrap_or_else(|| panic!("{clusters}"));
    assert_eq!(
        reviews_v1.split_whitespace().last(),
        Some("1"),
        "one endpoint in subset v1: {clusters}"
    );
    let listeners = text(&pc("listeners", "reviews-v1"));
    assert!(
        listeners
            .lines()
            .any(|l| l.contains("INBOUND") && l.contains("STRICT")),
        "{listeners}"
    );
    let endpoints = text(&pc("endpoints", "productpage-v1"));
    assert!(
        endpoints.contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{endpoints}"
    );

    // secret: the identity, a valid leaf and the root; never a key.
    let secret = text(&pc("secret", "reviews-v1"));
    let leaf = secret
        .lines()
        .find(|l| l.starts_with("default "))
        .unwrap_or_else(|| panic!("{secret}"));
    assert!(
        leaf.contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
            && leaf.contains(" VALID "),
        "{secret}"
    );
    assert!(secret.lines().any(|l| l.starts_with("ROOTCA ")), "{secret}");
    let secret_json = text(&meshctl(&[
        "proxy-config",
        "secret",
        "reviews-v1",
        "--pilot",
        &pilot,
        "-o",
        "json",
    ]));
    assert!(!secret_json.contains("PRIVATE"), "{secret_json}");
    let certs: serde_json::Value = serde_json::from_str(&secret_json).unwrap();
    assert_eq!(
        certs["identity"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );

    // The log level of the running proxy, changed and read back; --admin skips pilot.
    let set = meshctl(&[
        "proxy-config",
        "log",
        "details-v1",
        "--admin",
        "127.0.0.1:15101",
        "--level",
        "debug",
    ]);
    assert_eq!(text(&set), "details-v1: level: debug\n");
    let get = text(&pc("log", "details-v1"));
    assert_eq!(get, "details-v1: level: debug\n");

    // describe against pilot: the example's routing and mesh-wide STRICT mTLS.
    let describe = meshctl(&["describe", "reviews-v3.default", "--pilot", &pilot]);
    let described = text(&describe);
    assert!(describe.status.success(), "{described}");
    assert!(
        described.contains("to this workload's subset v3")
            && described
                .contains("Effective mTLS: STRICT (PeerAuthentication istio-system/default)"),
        "{described}"
    );

    // analyze against pilot: clean, then a live edit brings a subset no rule defines.
    let clean = meshctl(&["analyze", "--pilot", &pilot]);
    assert!(clean.status.success(), "{}", text(&clean));
    let vs = mesh.dir.path().join("virtual-service-reviews.yaml");
    let edited = std::fs::read_to_string(&vs)
        .unwrap()
        .replace("subset: v3 }", "subset: v4 }");
    std::fs::write(&vs, edited).unwrap();
    let mut report = String::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            let out = meshctl(&["analyze", "--pilot", &pilot]);
            report = text(&out);
            out.status.code() == Some(79)
        }),
        "{report}"
    );
    assert_eq!(
        report,
        format!(
            "Error [IST0101] (VirtualService default/reviews {}:14) Referenced host+subset in destinationrule not found: \"reviews+v4\"\n",
            vs.display()
        )
    );
}
