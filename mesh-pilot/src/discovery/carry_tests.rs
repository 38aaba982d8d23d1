//! A generation that carries outbound configs over an endpoint change gives every proxy the
//! config a full build gives, and a change of anything but endpoints is not carried.

use std::sync::Arc;
use std::time::Instant;

use mesh_api::Resource;
use mesh_proto::config::v1::ProxyConfig;
use mesh_proto::discovery::v1::{Node, ProxyAddresses};

use super::{Mesh, SnapshotCache};

const SERVICES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: shop}
spec: {address: 198.18.0.1, labels: {app: reviews, version: v1}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-1, namespace: shop}
spec: {address: 198.18.0.3, labels: {app: ratings}, serviceAccount: ratings}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: web}
spec: {address: 198.18.1.1, labels: {app: client}}
"#;

const REVIEWS_V2: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: shop}
spec: {address: 198.18.0.2, labels: {app: reviews, version: v2}, serviceAccount: reviews}
"#;

const ROUTE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews.shop.svc.cluster.local, subset: v2}
"#;

fn load(docs: &[&str]) -> Vec<Arc<Resource>> {
    let (resources, errors) = mesh_api::load_str("mesh.yaml", &docs.join("---\n"));
    assert!(errors.is_empty(), "{errors:?}");
    resources.into_iter().map(Arc::new).collect()
}

fn client() -> Node {
    Node {
        id: "client.web".into(),
        workload: "client".into(),
        namespace: "web".into(),
        addresses: Some(ProxyAddresses {
            outbound: "127.0.0.1:15001".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `mesh`'s config for the client, building its scope as a push does.
fn config(mesh: &Mesh) -> ProxyConfig {
    mesh.snapshot_for(&client(), &SnapshotCache::default())
        .expect("config")
        .config()
}

fn endpoints_of(config: &ProxyConfig, cluster: &str) -> Vec<String> {
    let c = config.clusters.iter().find(|c| c.name == cluster).unwrap();
    c.endpoints.iter().map(|e| e.address.clone()).collect()
}

#[test]
fn an_endpoint_change_is_carried_and_equals_a_full_build() {
    let before = Mesh::new(1, Instant::now(), load(&[SERVICES]));
    let _ = config(&before);
    let resources = load(&[SERVICES, REVIEWS_V2]);

    let carried = Mesh::new(2, Instant::now(), resources.clone());
    assert_eq!(
        carried.carry_from(&before),
        1,
        "the client's scope is carried"
    );
    let full = Mesh::new(2, Instant::now(), resources);

    let config = config(&carried);
    assert_eq!(config, self::config(&full));
    let v2 = "outbound|9080|v2|reviews.shop.svc.cluster.local";
    assert_eq!(endpoints_of(&config, v2), ["198.18.0.2:9080"]);
    assert_eq!(
        endpoints_of(&config, "outbound|9080||reviews.shop.svc.cluster.local"),
        ["198.18.0.1:9080", "198.18.0.2:9080"]
    );
}

#[test]
fn changes_beyond_endpoints_are_built_in_full() {
    let before = Mesh::new(1, Instant::now(), load(&[SERVICES, REVIEWS_V2]));
    let _ = config(&before);

    // A route changed: nothing is carried, and the new route is in the config.
    let routed = Mesh::new(2, Instant::now(), load(&[SERVICES, REVIEWS_V2, ROUTE]));
    assert_eq!(routed.carry_from(&before), 0);
    let table = &config(&routed).route_tables[0];
    assert!(format!("{table:?}").contains("outbound|9080|v2|reviews"));

    // A service lost its last endpoint (ratings): its routes may change, so not carried.
    let without_ratings: Vec<&str> = vec![SERVICES, REVIEWS_V2];
    let mut resources = load(&without_ratings);
    resources.retain(|r| r.name() != "ratings-1");
    let emptied = Mesh::new(2, Instant::now(), resources);
    assert_eq!(emptied.carry_from(&before), 0);
}

#[test]
fn a_route_read_from_another_line_does_not_stop_the_carry() {
    let before = Mesh::new(1, Instant::now(), load(&[SERVICES, ROUTE]));
    let _ = config(&before);
    // The new endpoint is written above the unchanged VirtualService, which moves down.
    let resources = load(&[SERVICES, REVIEWS_V2, ROUTE]);
    let carried = Mesh::new(2, Instant::now(), resources.clone());
    assert_eq!(carried.carry_from(&before), 1);
    assert_eq!(
        config(&carried),
        config(&Mesh::new(2, Instant::now(), resources))
    );
}
