//! PeerAuthentication through a local mesh whose proxies run mTLS (workload certificates of
//! one CA): what the server side enforces, and what callers' auto mTLS learns from it.

mod local;

use local::{Caller, Mesh};

fn peer_authentication(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{ name: {name}, namespace: default }}\nspec:\n{spec}"
    )
}

/// `reviews` by the `x-version` header, so each call lands on the workload it names.
const REVIEWS_BY_VERSION: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews]
  http:
  - match: [{ headers: { x-version: { exact: v2 } } }]
    route: [{ destination: { host: reviews, subset: v2 } }]
  - match: [{ headers: { x-version: { exact: v3 } } }]
    route: [{ destination: { host: reviews, subset: v3 } }]
  - route: [{ destination: { host: reviews, subset: v1 } }]
";

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";

/// Every policy is in place before the first call, so no pooled connection of an earlier
/// mode can carry a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_send_plaintext_to_a_workload_whose_mtls_is_disabled() {
    let mut mesh = Mesh::bookinfo_with_mtls().await;
    let v2_port = mesh.inbound_port("reviews", "v2");
    mesh.write("vs.yaml", REVIEWS_BY_VERSION);
    // Mesh-wide DISABLE (reviews v1 inherits it); v2 STRICT but DISABLE on the port the
    // call reaches; v3 STRICT.
    mesh.write(
        "pa.yaml",
        &[
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec:\n  mtls: { mode: DISABLE }\n".to_string(),
            peer_authentication(
                "reviews-v2",
                &format!(
                    "  selector: {{ matchLabels: {{ app: reviews, version: v2 }} }}\n  mtls: {{ mode: STRICT }}\n  portLevelMtls: {{ '{v2_port}': {{ mode: DISABLE }} }}\n"
                ),
            ),
            peer_authentication(
                "reviews-v3",
                "  selector: { matchLabels: { app: reviews, version: v3 } }\n  mtls: { mode: STRICT }\n",
            ),
        ]
        .join("---\n"),
    );
    mesh.wait_synced().await;
    let caller = Caller::new(mesh.outbound());
    for (version, identity) in [("v1", None), ("v2", None), ("v3", Some(PRODUCTPAGE))] {
        for _ in 0..3 {
            let a = caller
                .get("reviews:9080", "/", &[("x-version", version)])
                .await;
            assert_eq!(a.status, 200, "{version}: {}", a.body);
            assert_eq!(a.served_by(), format!("reviews/{version}"));
            // Plaintext calls carry no client identity; mTLS ones carry productpage's.
            assert_eq!(
                a.json["client_identity"].as_str(),
                identity,
                "{version}: {}",
                a.body
            );
        }
    }
}
