//! A registry made from the previous one equals one built from scratch, and shares the
//! services nothing touched.

use std::sync::Arc;

use mesh_api::Resource;

use super::{DEFAULT_TRUST_DOMAIN, Platform, Registry, Workload};

const ENTRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http}]
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: shop}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: tls}]
"#;

fn workload_entry(name: &str, app: &str, address: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{address: {address}, labels: {{app: {app}}}}}\n"
    )
}

fn load(docs: &[String]) -> Vec<Arc<Resource>> {
    let (resources, errors) = mesh_api::load_str("mesh.yaml", &docs.join("---\n"));
    assert!(errors.is_empty(), "{errors:?}");
    resources.into_iter().map(Arc::new).collect()
}

fn next(previous: &Registry, resources: &[Arc<Resource>]) -> Registry {
    Registry::next(
        Some(previous),
        resources,
        "cluster.local",
        &Platform::default(),
    )
}

fn scratch(resources: &[Arc<Resource>]) -> Registry {
    Registry::next(None, resources, "cluster.local", &Platform::default())
}

fn assert_same(a: &Registry, b: &Registry) {
    assert_eq!(
        a.services().collect::<Vec<_>>(),
        b.services().collect::<Vec<_>>()
    );
    assert_eq!(
        a.workloads().collect::<Vec<_>>(),
        b.workloads().collect::<Vec<_>>()
    );
    assert_eq!(a.subject_alt_names, b.subject_alt_names);
    assert_eq!(a.warnings, b.warnings);
}

fn service<'a>(r: &'a Registry, host: &str) -> &'a Arc<super::Service> {
    r.services.iter().find(|s| s.hostname == host).unwrap()
}

fn addresses(r: &Registry, host: &str) -> Vec<String> {
    let svc = service(r, host);
    svc.endpoints.iter().map(|e| e.address.clone()).collect()
}

const REVIEWS: &str = "reviews.shop.svc.cluster.local";
const RATINGS: &str = "ratings.shop.svc.cluster.local";

#[test]
fn changes_rebuild_only_what_they_touch_and_equal_a_build_from_scratch() {
    let base = vec![
        ENTRIES.to_string(),
        workload_entry("reviews-1", "reviews", "198.18.0.1"),
        workload_entry("ratings-1", "ratings", "198.18.0.2"),
    ];
    let first = scratch(&load(&base));

    // A WorkloadEntry added to reviews: reviews rebuilt, ratings and the external entry shared.
    // (The store hands the unchanged objects of a re-read file over as new objects, here
    // also on other lines: ratings-1 moves down.)
    let mut added = base.clone();
    added.insert(1, workload_entry("reviews-2", "reviews", "198.18.0.3"));
    let resources = load(&added);
    let second = next(&first, &resources);
    assert_same(&second, &scratch(&resources));
    assert_eq!(addresses(&second, REVIEWS), ["198.18.0.1", "198.18.0.3"]);
    assert!(!Arc::ptr_eq(
        service(&first, REVIEWS),
        service(&second, REVIEWS)
    ));
    assert!(Arc::ptr_eq(
        service(&first, RATINGS),
        service(&second, RATINGS)
    ));
    assert!(Arc::ptr_eq(
        service(&first, "api.example.com"),
        service(&second, "api.example.com")
    ));

    // The new workload's label moves it from reviews to ratings: both rebuilt.
    let mut moved = base.clone();
    moved.push(workload_entry("reviews-2", "ratings", "198.18.0.3"));
    let resources = load(&moved);
    let third = next(&second, &resources);
    assert_same(&third, &scratch(&resources));
    assert_eq!(addresses(&third, REVIEWS), ["198.18.0.1"]);
    assert_eq!(addresses(&third, RATINGS), ["198.18.0.2", "198.18.0.3"]);

    // Removed again, and a ServiceEntry changed (a port added): equal to a build from scratch.
    let mut changed = base.clone();
    changed[0] = ENTRIES.replace(
        "ports: [{number: 9080, name: http}]\n  workloadSelector: {labels: {app: ratings}}",
        "ports: [{number: 9080, name: http}, {number: 9090, name: grpc}]\n  workloadSelector: {labels: {app: ratings}}",
    );
    let resources = load(&changed);
    let fourth = next(&third, &resources);
    assert_same(&fourth, &scratch(&resources));
    assert_eq!(service(&fourth, RATINGS).ports.len(), 2);
    assert_eq!(addresses(&fourth, RATINGS), ["198.18.0.2"]);
}

#[test]
fn another_trust_domain_rebuilds_everything() {
    let resources = load(&[
        ENTRIES.to_string(),
        workload_entry("reviews-1", "reviews", "198.18.0.1"),
    ]);
    let first = scratch(&resources);
    let other = Registry::next(
        Some(&first),
        &resources,
        "example.org",
        &Platform::default(),
    );
    assert_eq!(
        service(&other, REVIEWS).endpoints[0].identity,
        "spiffe://example.org/ns/shop/sa/default"
    );
}

#[test]
fn a_service_entry_selector_that_matches_pods_is_warned() {
    let (resources, errors) = mesh_api::load_str(
        "t.yaml",
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: shop}
spec:
  hosts: [vms.shop.svc]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: vm}}
",
    );
    assert!(errors.is_empty(), "{errors:?}");
    let pod = |name: &str, ns: &str, app: &str| Workload {
        name: name.into(),
        namespace: ns.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        service_account: "default".into(),
        identity: String::new(),
        address: "198.18.0.20".into(),
        ports: Default::default(),
        locality: None,
        network: None,
        weight: 1,
    };
    let platform = Platform {
        services: Vec::new(),
        workloads: vec![
            pod("vm-1", "shop", "vm"),
            pod("vm-2", "shop", "vm"),
            pod("web-1", "shop", "web"),
            pod("vm-3", "other", "vm"),
        ],
    };
    let registry = Registry::build_merged(&resources, DEFAULT_TRUST_DOMAIN, &platform);
    let warned: Vec<&String> = registry
        .warnings()
        .iter()
        .filter(|w| w.contains("workloadSelector"))
        .collect();
    assert_eq!(
        warned,
        [
            "ServiceEntry shop/vms: spec.workloadSelector matches Pod shop/vm-1 and 1 more; Pods are not endpoints of a ServiceEntry here (WorkloadEntries only)"
        ]
    );
    // Without Pods (the local mesh) nothing is said.
    let registry = Registry::build_merged(&resources, DEFAULT_TRUST_DOMAIN, &Platform::default());
    assert!(
        !registry
            .warnings()
            .iter()
            .any(|w| w.contains("workloadSelector")),
        "{:?}",
        registry.warnings()
    );
}
