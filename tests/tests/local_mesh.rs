//! `meshctl up` runs the bookinfo example as real processes: pilot, citadel, a proxy and an
//! app per workload. Proxies talk mTLS (the example is STRICT), requests through productpage's
//! outbound listener follow the VirtualService, and an edit of it takes effect while the mesh
//! runs. Istio's bookinfo gateway sample brings clients from outside to productpage through
//! the ingress gateway.

use std::process::Stdio;
use std::time::{Duration, Instant};

use mesh_e2e::*;

fn field_of(body: &str, field: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .map(|j| j[field].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|_| body.to_string())
}

fn version_of(body: &str) -> String {
    field_of(body, "version")
}

#[test]
fn meshctl_up_runs_bookinfo_and_follows_live_edits() {
    let mesh = LocalMesh::up("bookinfo", Stdio::inherit());
    let outbound = "127.0.0.1:15001".parse().unwrap();
    let reviews = || http_get(outbound, "reviews:9080", "/").map(|(s, b)| (s, version_of(&b)));
    assert!(
        eventually(Duration::from_secs(30), || reviews()
            .is_ok_and(|(s, _)| s == 200)),
        "the local mesh came up"
    );

    // The call went over mTLS: the reviews app sees productpage's identity, vouched for by
    // the reviews proxy, and a plaintext call straight at the reviews proxy is refused.
    let (_, body) = http_get(outbound, "reviews:9080", "/").unwrap();
    assert_eq!(
        field_of(&body, "client_identity"),
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "{body}"
    );
    let reviews_v1_inbound = "127.0.0.1:19082".parse().unwrap();
    assert!(
        http_get(reviews_v1_inbound, "reviews:9080", "/").is_err(),
        "STRICT refuses plaintext"
    );
    assert!(
        mesh.state.path().join("ca/root-cert.pem").exists(),
        "the CA keeps its root in the state directory"
    );

    // The example routes 80 % to v1 and 20 % to v3.
    let mut seen = std::collections::HashMap::<String, u32>::new();
    for _ in 0..100 {
        let (status, version) = reviews().unwrap();
        assert_eq!(status, 200);
        *seen.entry(version).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen["v1"] > seen["v3"], "{seen:?}");

    // Edit the VirtualService: everything to v2.
    let vs = mesh.dir.path().join("virtual-service-reviews.yaml");
    let text = std::fs::read_to_string(&vs).unwrap();
    let all_v2 = text
        .replace(
            "subset: v1 }\n          weight: 80",
            "subset: v2 }\n          weight: 100",
        )
        .replace(
            "        - destination: { host: reviews, subset: v3 }\n          weight: 20\n",
            "",
        );
    assert_ne!(all_v2, text, "the edit applies to the example");
    std::fs::write(&vs, all_v2).unwrap();
    let edited = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || (0..10)
            .all(|_| reviews().is_ok_and(|(_, v)| v == "v2"))),
        "the edit took effect"
    );
    eprintln!("edit took effect after {:?}", edited.elapsed());

    // The ingress gateway (bookinfo-gateway.yaml, Istio's sample unchanged): /productpage
    // reaches productpage over mTLS with the gateway's own identity; other paths get 404.
    let gateway = "127.0.0.1:18080".parse().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || http_get(
            gateway,
            "127.0.0.1:18080",
            "/productpage"
        )
        .is_ok_and(|(s, _)| s == 200)),
        "the gateway serves /productpage"
    );
    let (_, body) = http_get(gateway, "bookinfo.example.com", "/productpage").unwrap();
    assert_eq!(field_of(&body, "name"), "productpage", "{body}");
    assert_eq!(
        field_of(&body, "client_identity"),
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway",
        "{body}"
    );
    let (status, _) = http_get(gateway, "bookinfo.example.com", "/admin").unwrap();
    assert_eq!(status, 404, "no route of the gateway's VirtualService");

    // Pilot's sync status lists every proxy of the example, the gateway's included.
    let (status, body) = http_get(mesh.pilot_http, "pilot", "/debug/syncz").unwrap();
    assert_eq!(status, 200);
    let syncz: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(syncz["proxies"].as_array().unwrap().len(), 7, "{syncz:#}");
}
