//! Pilot's Kubernetes source against a local API server that serves real list and watch JSON:
//! the registry and store it builds, pushes to a connected proxy, relists after `410 Gone`,
//! resuming from bookmarks, unready pods leaving, and an invalid object keeping its last good
//! version.

#[path = "kube/api_server.rs"]
mod api_server;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use api_server::{FakeApi, gone};
use mesh_pilot::kube::registry::RegistryOptions;
use mesh_pilot::server::{KubeOptions, Pilot};
use mesh_pilot::watch::Debounce;
use mesh_proto::discovery::v1::{Node, ProxyAddresses};
use mesh_proxy::Server;
use mesh_proxy::discovery::DiscoveryClient;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NAMESPACES: &str = "/api/v1/namespaces";
const SERVICES: &str = "/api/v1/services";
const PODS: &str = "/api/v1/pods";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const VIRTUAL_SERVICES: &str = "/apis/networking.istio.io/v1/virtualservices";

const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local";
const PRODUCTPAGE_POD: &str = "productpage-v1-7c9d8b6f5-abcde";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/kube/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The `name`d item of a list fixture, with `kind` and `apiVersion` as a watch event carries.
fn item(list: &str, name: &str) -> Value {
    let list: Value = serde_json::from_str(&fixture(list)).unwrap();
    let kind = list["kind"].as_str().unwrap().trim_end_matches("List");
    let mut obj = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} in list"))
        .clone();
    obj["kind"] = json!(kind);
    obj["apiVersion"] = list["apiVersion"].clone();
    obj
}

fn event(kind: &str, object: &Value) -> String {
    serde_json::to_string(&json!({"type": kind, "object": object})).unwrap()
}

fn fast() -> Debounce {
    Debounce {
        poll: Duration::from_millis(20),
        quiet: Duration::from_millis(30),
        max: Duration::from_secs(1),
    }
}

/// Polls `cond` every 20 ms for up to 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn api_with_fixtures() -> FakeApi {
    let api = FakeApi::start().await;
    api.set_list(NAMESPACES, fixture("namespaces.json"));
    api.set_list(SERVICES, fixture("services.json"));
    api.set_list(PODS, fixture("pods.json"));
    api.set_list(SLICES, fixture("endpointslices.json"));
    api.set_list(VIRTUAL_SERVICES, fixture("virtualservices.json"));
    api
}

async fn pilot(api: &FakeApi) -> Pilot {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kube = KubeOptions {
        client: api.client(),
        registry: RegistryOptions::default(),
        sync_timeout: Duration::from_secs(10),
    };
    Pilot::start_kube(None, kube, grpc, http, fast())
        .await
        .unwrap()
}

/// Addresses of a service's endpoints in pilot's current registry.
fn registry_endpoints(pilot: &Pilot, host: &str) -> BTreeSet<String> {
    let mesh = pilot.discovery.mesh();
    mesh.index
        .registry()
        .services_for_host(host)
        .flat_map(|s| s.endpoints.iter().map(|e| e.address.clone()))
        .collect()
}

/// A real proxy connected to pilot as a pod's sidecar (`--workload <pod>.<namespace>`).
struct Proxy {
    server: Arc<Server>,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Proxy {
    fn connect(pilot: &Pilot, pod: &str, namespace: &str) -> Proxy {
        let server = Server::new();
        let node = Node {
            id: format!("{pod}.{namespace}"),
            workload: pod.into(),
            namespace: namespace.into(),
            // The proxy binds its listeners on ports of its choosing (the two need different
            // addresses); the application address is only a destination no request goes to.
            addresses: Some(ProxyAddresses {
                outbound: "127.0.0.1:0".into(),
                inbound: "127.0.0.2:0".into(),
                application: "127.0.0.1:9080".into(),
                transparent: false,
                gateway: None,
            }),
            ..Default::default()
        };
        let stop = CancellationToken::new();
        let client =
            DiscoveryClient::new(server.clone(), format!("http://{}", pilot.grpc_addr), node);
        tokio::spawn(client.run(stop.clone()));
        Proxy { server, stop }
    }

    /// Endpoint addresses of the proxy's clusters for `host`, as the proxy applied them.
    fn endpoints(&self, host: &str) -> BTreeSet<String> {
        self.server
            .snapshot()
            .source
            .clusters
            .iter()
            .filter(|c| c.name.contains(host))
            .flat_map(|c| c.endpoints.iter().map(|e| e.address.clone()))
            .collect()
    }

    /// Route timeouts of the proxy's virtual hosts for `host`.
    fn timeouts(&self, host: &str) -> BTreeSet<u64> {
        use mesh_proto::config::v1::route::Action;
        let snapshot = self.server.snapshot();
        snapshot
            .source
            .route_tables
            .iter()
            .flat_map(|t| &t.virtual_hosts)
            .filter(|v| v.domains.iter().any(|d| d.starts_with(host)))
            .flat_map(|v| &v.routes)
            .filter_map(|r| match &r.action {
                Some(Action::Route(a)) => Some(a.timeout_ms),
                _ => None,
            })
            .collect()
    }
}

fn set(addrs: &[&str]) -> BTreeSet<String> {
    addrs.iter().map(|a| a.to_string()).collect()
}

#[tokio::test]
async fn registry_from_the_cluster_and_pushes_to_a_pods_proxy() {
    let api = api_with_fixtures().await;
    let pilot = pilot(&api).await;

    // Listed before serving: Services with their ready endpoints, Pods as workloads.
    assert_eq!(
        registry_endpoints(&pilot, REVIEWS),
        set(&["198.18.1.11", "198.18.1.12"]),
        "reviews-v3 is not ready"
    );
    {
        let mesh = pilot.discovery.mesh();
        let registry = mesh.index.registry();
        let w = registry.workload(PRODUCTPAGE_POD, "bookinfo").unwrap();
        assert_eq!(
            w.identity,
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage"
        );
        let ratings = registry
            .services_for_host("ratings.bookinfo.svc.cluster.local")
            .next()
            .unwrap();
        assert_eq!(ratings.ports[0].protocol.as_str(), "HTTP2", "appProtocol");
        let pp = registry
            .services_for_host("productpage.bookinfo.svc.cluster.local")
            .next()
            .unwrap();
        assert!(pp.endpoints[0].sidecar, "injected status annotation");
    }
    // Every watch asked for bookmarks.
    let watches = api.wait_requests(PODS, 1, |r| r.is_watch()).await;
    assert_eq!(watches[0].query["allowWatchBookmarks"], "true");
    assert_eq!(watches[0].query["resourceVersion"], "41207");

    // The proxy of the productpage pod is found by its Pod and gets the endpoints.
    let proxy = Proxy::connect(&pilot, PRODUCTPAGE_POD, "bookinfo");
    eventually("the proxy has the reviews endpoints", || {
        proxy.endpoints(REVIEWS) == set(&["198.18.1.11:9080", "198.18.1.12:9080"])
    })
    .await;
    assert_eq!(
        proxy.timeouts(REVIEWS),
        BTreeSet::from([3000]),
        "VirtualService from the cluster"
    );

    // reviews-v3 becomes ready: its Pod and its slice endpoint say so.
    let mut v3 = item("pods.json", "reviews-v3-7d6e5f4a3-q8r9s");
    v3["metadata"]["resourceVersion"] = json!("41300");
    for c in v3["status"]["conditions"].as_array_mut().unwrap() {
        c["status"] = json!("True");
        c.as_object_mut().unwrap().remove("reason");
        c.as_object_mut().unwrap().remove("message");
    }
    api.send(PODS, &event("MODIFIED", &v3)).await;
    let mut slice = item("endpointslices.json", "reviews-9qz4m");
    slice["metadata"]["resourceVersion"] = json!("41301");
    slice["endpoints"][2]["conditions"] =
        json!({"ready": true, "serving": true, "terminating": false});
    api.send(SLICES, &event("MODIFIED", &slice)).await;
    eventually("reviews-v3 is pushed", || {
        proxy.endpoints(REVIEWS)
            == set(&["198.18.1.11:9080", "198.18.1.12:9080", "198.18.1.13:9080"])
    })
    .await;

    // reviews-v1 fails its readiness probe: the slice marks it not ready, it leaves.
    slice["metadata"]["resourceVersion"] = json!("41302");
    slice["endpoints"][0]["conditions"] =
        json!({"ready": false, "serving": false, "terminating": false});
    api.send(SLICES, &event("MODIFIED", &slice)).await;
    eventually("reviews-v1 left", || {
        proxy.endpoints(REVIEWS) == set(&["198.18.1.12:9080", "198.18.1.13:9080"])
    })
    .await;

    // A Service deleted: its host leaves the registry.
    let mut ratings = item("services.json", "ratings");
    ratings["metadata"]["resourceVersion"] = json!("41303");
    api.send(SERVICES, &event("DELETED", &ratings)).await;
    eventually("ratings is gone", || {
        pilot
            .discovery
            .mesh()
            .index
            .registry()
            .services_for_host("ratings.bookinfo.svc.cluster.local")
            .next()
            .is_none()
    })
    .await;
    let syncz = mesh_pilot::debug::syncz(&pilot.discovery);
    assert_eq!(syncz["proxies"][0]["problems"], json!([]), "{syncz}");
}

#[tokio::test]
async fn an_expired_watch_relists() {
    let api = api_with_fixtures().await;
    let pilot = pilot(&api).await;
    api.wait_requests(SERVICES, 1, |r| r.is_watch()).await;
    let lists_before = api
        .requests_of(SERVICES)
        .iter()
        .filter(|r| !r.is_watch())
        .count();

    // The watch cache no longer has the version: an ERROR event with a 410 Status. The
    // relist shows a Service added meanwhile.
    let mut services: Value = serde_json::from_str(&fixture("services.json")).unwrap();
    let mut details = services["items"][0].clone();
    details["metadata"]["name"] = json!("details");
    details["metadata"]["resourceVersion"] = json!("42000");
    services["items"].as_array_mut().unwrap().push(details);
    services["metadata"]["resourceVersion"] = json!("42001");
    api.set_list(SERVICES, services.to_string());
    let status: Value = serde_json::from_str(&gone("41207", "41900")).unwrap();
    api.send(SERVICES, &event("ERROR", &status)).await;
    api.wait_requests(SERVICES, lists_before + 1, |r| !r.is_watch())
        .await;
    eventually("the relisted Service is served", || {
        pilot
            .discovery
            .mesh()
            .index
            .registry()
            .services_for_host("details.bookinfo.svc.cluster.local")
            .next()
            .is_some()
    })
    .await;
    let watch = api
        .wait_requests(SERVICES, 2, |r| r.is_watch())
        .await
        .pop()
        .unwrap();
    assert_eq!(
        watch.query["resourceVersion"], "42001",
        "watches from the relist"
    );

    // The same refusal as the watch request's own status: the watch ends, the next watch is
    // answered `410 Gone`, and the source relists (the Service removed meanwhile leaves).
    let lists_before = api
        .requests_of(SERVICES)
        .iter()
        .filter(|r| !r.is_watch())
        .count();
    api.set_list(SERVICES, fixture("services.json").replace("41207", "42100"));
    api.refuse_next_watch(SERVICES, 410, gone("42001", "42050"));
    api.close_watch(SERVICES);
    api.wait_requests(SERVICES, lists_before + 1, |r| !r.is_watch())
        .await;
    eventually("the Service deleted meanwhile is gone", || {
        pilot
            .discovery
            .mesh()
            .index
            .registry()
            .services_for_host("details.bookinfo.svc.cluster.local")
            .next()
            .is_none()
    })
    .await;
}

#[tokio::test]
async fn a_bookmark_sets_the_version_the_next_watch_resumes_from() {
    let api = api_with_fixtures().await;
    let _pilot = pilot(&api).await;
    api.wait_requests(PODS, 1, |r| r.is_watch()).await;
    // A bookmark as the API server sends it for Pods: only the kind and resourceVersion.
    api.send(
        PODS,
        r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"45123","creationTimestamp":null},"spec":{"containers":null},"status":{}}}"#,
    )
    .await;
    // The server ends the watch (timeoutSeconds elapsed). No wait is needed: the end comes
    // after the bookmark on the same response body, so the client reads the bookmark first.
    api.close_watch(PODS);
    let watches = api.wait_requests(PODS, 2, |r| r.is_watch()).await;
    assert_eq!(watches[1].query["resourceVersion"], "45123");
    assert_eq!(watches[1].query["allowWatchBookmarks"], "true");
    let lists = api
        .requests_of(PODS)
        .iter()
        .filter(|r| !r.is_watch())
        .count();
    assert_eq!(lists, 1, "resumed without a relist");
}

#[tokio::test]
async fn an_invalid_virtual_service_is_rejected_and_the_last_good_one_stays() {
    let api = api_with_fixtures().await;
    let pilot = pilot(&api).await;
    let proxy = Proxy::connect(&pilot, PRODUCTPAGE_POD, "bookinfo");
    eventually("the proxy has the VirtualService", || {
        proxy.timeouts(REVIEWS) == BTreeSet::from([3000])
    })
    .await;

    let mut vs = item("virtualservices.json", "reviews");
    vs["metadata"]["resourceVersion"] = json!("41400");
    vs["metadata"]["generation"] = json!(2);
    vs["spec"]["http"][0]["timeout"] = json!("7s");
    vs["spec"]["http"][0]["route"][0]["weight"] = json!(150);
    api.send(VIRTUAL_SERVICES, &event("MODIFIED", &vs)).await;
    eventually("the bad version is counted as a config error", || {
        pilot.discovery.metrics.config_errors.get() == 1
    })
    .await;
    // Still the last good version (3 s, not the rejected 7 s) at the proxy.
    assert_eq!(proxy.timeouts(REVIEWS), BTreeSet::from([3000]));

    // Fixed: the new version is served and the error clears.
    vs["metadata"]["resourceVersion"] = json!("41401");
    vs["spec"]["http"][0]["route"][0]
        .as_object_mut()
        .unwrap()
        .remove("weight");
    api.send(VIRTUAL_SERVICES, &event("MODIFIED", &vs)).await;
    eventually("the fixed version reaches the proxy", || {
        proxy.timeouts(REVIEWS) == BTreeSet::from([7000])
    })
    .await;
    eventually("the error clears", || {
        pilot.discovery.metrics.config_errors.get() == 0
    })
    .await;

    // Deleted: the default route (no timeout) again.
    api.send(VIRTUAL_SERVICES, &event("DELETED", &vs)).await;
    eventually("the VirtualService is gone", || {
        !proxy.timeouts(REVIEWS).contains(&7000)
    })
    .await;
}
