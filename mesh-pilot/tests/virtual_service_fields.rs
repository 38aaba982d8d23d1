//! VirtualService fields through a local mesh (pilot, proxies, echo apps, an HTTP client):
//! match `authority` and `scheme`, `uriRegexRewrite` and `rewrite.uri` after a regex match,
//! `redirect.derivePort`, `delegate`.

mod local;

use local::{Caller, Mesh};

fn reviews_vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: reviews, namespace: default }}\nspec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_on_authority_and_scheme() {
    let mut mesh = Mesh::bookinfo().await;
    mesh.write(
        "vs.yaml",
        &reviews_vs(
            r"  - match: [{ authority: { exact: 'reviews.default.svc.cluster.local:9080' } }]
    route: [{ destination: { host: reviews, subset: v2 } }]
  - match: [{ authority: { regex: 'reviews\.default(\.svc)?:9080' } }]
    route: [{ destination: { host: reviews, subset: v3 } }]
  - match: [{ scheme: { exact: https } }]
    route: [{ destination: { host: ratings } }]
  - match: [{ scheme: { exact: http }, headers: { x-scheme: { exact: plain } } }]
    route: [{ destination: { host: reviews, subset: v3 } }]
  - route: [{ destination: { host: reviews, subset: v1 } }]
",
        ),
    );
    mesh.wait_synced().await;
    let caller = Caller::new(mesh.outbound());
    for (host, headers, expected) in [
        (
            "reviews.default.svc.cluster.local:9080",
            &[][..],
            "reviews/v2",
        ),
        ("reviews.default:9080", &[], "reviews/v3"),
        ("reviews.default.svc:9080", &[], "reviews/v3"),
        // The authority is matched as sent, port included.
        ("reviews.default.svc.cluster.local", &[], "reviews/v1"),
        ("reviews:9080", &[], "reviews/v1"),
        // Plaintext from the app: the scheme is http, never https.
        ("reviews:9080", &[("x-scheme", "plain")], "reviews/v3"),
    ] {
        let a = caller.get(host, "/", headers).await;
        assert_eq!(a.status, 200, "{host}: {}", a.body);
        assert_eq!(a.served_by(), expected, "{host} {headers:?}");
    }
    assert!(
        !mesh.problems().contains("authority"),
        "{}",
        mesh.problems()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_regex_rewrite_and_uri_rewrite_after_regex_or_case_insensitive_matches() {
    let mut mesh = Mesh::bookinfo().await;
    mesh.write(
        "vs.yaml",
        &reviews_vs(
            r"  - match: [{ uri: { prefix: /rx/ } }]
    rewrite: { uriRegexRewrite: { match: '^/rx/([^/]+)/(.*)$', rewrite: '/\2/\1' } }
    route: [{ destination: { host: reviews, subset: v1 } }]
  - match: [{ uri: { prefix: /all-o } }]
    rewrite: { uriRegexRewrite: { match: 'o', rewrite: '0' } }
    route: [{ destination: { host: reviews, subset: v1 } }]
  - match: [{ uri: { regex: '/old/[0-9]+' } }]
    rewrite: { uri: /new }
    route: [{ destination: { host: reviews, subset: v2 } }]
  - match: [{ uri: { prefix: /Upper/ }, ignoreUriCase: true }]
    rewrite: { uri: /lower/ }
    route: [{ destination: { host: reviews, subset: v3 } }]
",
        ),
    );
    mesh.wait_synced().await;
    let caller = Caller::new(mesh.outbound());
    for (path, expected, served_by) in [
        // Envoy's regex_rewrite: groups substituted, the query kept.
        (
            "/rx/alpha/beta/gamma?q=1",
            "/beta/gamma/alpha?q=1",
            "reviews/v1",
        ),
        // Every match is replaced.
        ("/all-of-you/too", "/all-0f-y0u/t00", "reviews/v1"),
        // rewrite.uri after a regex match: the whole path is replaced (Envoy's
        // prefix_rewrite on a regex route), the query kept.
        ("/old/42?x=1", "/new?x=1", "reviews/v2"),
        // ignoreUriCase: the matched prefix, whatever its case, is replaced.
        ("/UPPER/Case", "/lower/Case", "reviews/v3"),
        ("/upper/x", "/lower/x", "reviews/v3"),
    ] {
        let a = caller.get("reviews:9080", path, &[]).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(a.served_by(), served_by, "{path}");
        assert_eq!(a.path(), expected, "{path}");
    }
    assert!(!mesh.problems().contains("rewrite"), "{}", mesh.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_derive_port() {
    let mut mesh = Mesh::bookinfo().await;
    mesh.write(
        "vs.yaml",
        &reviews_vs(
            r"  - match: [{ uri: { prefix: /secure } }]
    redirect: { scheme: https, derivePort: FROM_PROTOCOL_DEFAULT }
  - match: [{ uri: { prefix: /plain } }]
    redirect: { uri: /moved, derivePort: FROM_PROTOCOL_DEFAULT }
  - match: [{ uri: { prefix: /elsewhere } }]
    redirect: { authority: other.example, derivePort: FROM_REQUEST_PORT }
  - route: [{ destination: { host: reviews, subset: v1 } }]
",
        ),
    );
    mesh.wait_synced().await;
    let caller = Caller::new(mesh.outbound());
    for (path, location) in [
        // The scheme's default port: none in the Location, whatever the request's was.
        ("/secure/a?b=1", "https://reviews/secure/a?b=1"),
        ("/plain", "http://reviews/moved"),
        // The port the request was addressed to (the service port), with the new host.
        ("/elsewhere", "http://other.example:9080/elsewhere"),
    ] {
        let a = caller.get("reviews:9080", path, &[]).await;
        assert_eq!(a.status, 301, "{path}: {}", a.body);
        assert_eq!(a.headers["location"], location, "{path}");
    }
    assert!(
        !mesh.problems().contains("derivePort"),
        "{}",
        mesh.problems()
    );
}

/// The gateway's workload and a Gateway for it on port 80, any host.
const EDGE: &str = "\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: istio-ingressgateway, namespace: istio-system }
spec:
  address: 127.0.0.1
  labels: { istio: ingressgateway }
  serviceAccount: istio-ingressgateway
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: edge, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 80, name: http, protocol: HTTP }
    hosts: ['*']
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_virtual_services_at_a_gateway() {
    let mut mesh = Mesh::bookinfo().await;
    mesh.write("edge.yaml", EDGE);
    mesh.write(
        "routes.yaml",
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: shop, namespace: default }
spec:
  hosts: [shop.example.com]
  gateways: [edge]
  http:
  - match: [{ uri: { prefix: /reviews } }]
    headers: { response: { set: { x-root: shop } } }
    delegate: { name: reviews-team, namespace: team }
  - route: [{ destination: { host: ratings, port: { number: 9080 } } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews-team, namespace: team }
spec:
  http:
  - match: [{ uri: { prefix: /reviews/v2 } }]
    route: [{ destination: { host: reviews.default.svc.cluster.local, subset: v2, port: { number: 9080 } } }]
  - match: [{ uri: { prefix: /other } }]
    route: [{ destination: { host: reviews.default.svc.cluster.local, subset: v3, port: { number: 9080 } } }]
  - route: [{ destination: { host: reviews.default.svc.cluster.local, subset: v1, port: { number: 9080 } } }]
",
    );
    let gateway = mesh
        .add_gateway("istio-ingressgateway", "istio-system")
        .await;
    mesh.wait_synced().await;
    let client = Caller::new(gateway);
    for (path, served_by) in [
        // The delegate's routes, each under the root's match.
        ("/reviews/v2/1", "reviews/v2"),
        ("/reviews/1", "reviews/v1"),
        // The delegate's /other route conflicts with the root's /reviews: dropped, so /other
        // is not the delegate's and falls to the root's next route.
        ("/other", "ratings/v1"),
        ("/", "ratings/v1"),
    ] {
        let a = client.get("shop.example.com", path, &[]).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(a.served_by(), served_by, "{path}");
        let delegated = served_by.starts_with("reviews");
        assert_eq!(
            a.headers.get("x-root").is_some(),
            delegated,
            "{path}: the root's settings apply to the delegate's routes"
        );
    }
    assert!(
        mesh.problems().contains("conflicts"),
        "the dropped route is reported: {}",
        mesh.problems()
    );
}
