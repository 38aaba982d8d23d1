use std::sync::Arc;

use mesh_proto::config::v1::{Cluster, LbPolicy, Route, UpstreamProtocol, VirtualHost, route};

use super::*;
use crate::registry::Registry;

const SERVICES: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9080, name: http}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 198.18.0.11, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec: {address: 198.18.0.12, labels: {app: reviews, version: v2}, ports: {http: 19082}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 80, name: http-web}, {number: 8443, name: grpc-admin}, {number: 5432, name: tcp-db}]
  endpoints: [{address: 198.18.0.21}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: cart, namespace: shop}
spec: {address: 198.18.0.31, labels: {app: cart}, serviceAccount: cart}
";

fn load(yaml: &str) -> Vec<mesh_api::Resource> {
    let (r, e) = mesh_api::load_str("t.yaml", yaml);
    assert!(e.is_empty(), "{e:?}");
    r
}

fn mesh(extra: &str) -> MeshIndex {
    let resources = load(&format!("{SERVICES}---\n{extra}"));
    let registry = Arc::new(Registry::build(&resources));
    MeshIndex::new(&resources, registry)
}

fn run(mesh: &MeshIndex, workload: &str, ns: &str, addresses: ProxyAddresses) -> Translated {
    let w = mesh
        .registry()
        .workload(workload, ns)
        .expect("workload")
        .clone();
    translate(
        mesh,
        &ProxyContext {
            id: "p1",
            workload: &w,
            addresses: &addresses,
        },
    )
    .expect("translate")
}

fn outbound_only() -> ProxyAddresses {
    ProxyAddresses {
        outbound: "127.0.0.1:15001".into(),
        ..Default::default()
    }
}

fn vhost<'a>(t: &'a Translated, name: &str) -> Option<&'a VirtualHost> {
    t.config.route_tables[0]
        .virtual_hosts
        .iter()
        .find(|v| v.name == name)
}

fn cluster<'a>(t: &'a Translated, name: &str) -> &'a Cluster {
    t.config
        .clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

fn targets(r: &Route) -> Vec<(String, u32)> {
    match r.action.as_ref().unwrap() {
        route::Action::Route(a) => a
            .clusters
            .iter()
            .map(|c| (c.cluster.clone(), c.weight))
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn default_routes_domains_and_endpoints() {
    let m = mesh("");
    let t = run(&m, "reviews-v1", "default", outbound_only());
    let l = &t.config.listeners[0];
    assert_eq!(
        (l.name.as_str(), l.address.as_str()),
        ("outbound", "127.0.0.1:15001")
    );
    assert_eq!(l.route_table, "outbound");
    assert_eq!(l.outbound_traffic_policy, 1, "ALLOW_ANY by default");

    let vh = vhost(&t, "reviews.default.svc.cluster.local:9080").unwrap();
    // Single-port service: bare names too; same namespace: the short name too.
    for d in [
        "reviews:9080",
        "reviews",
        "reviews.default",
        "reviews.default.svc.cluster.local",
    ] {
        assert!(vh.domains.iter().any(|x| x == d), "{d} in {:?}", vh.domains);
    }
    assert_eq!(
        targets(&vh.routes[0]),
        [(
            "outbound|9080||reviews.default.svc.cluster.local".to_string(),
            100
        )]
    );
    let c = cluster(&t, "outbound|9080||reviews.default.svc.cluster.local");
    let eps: Vec<_> = c.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(eps, ["198.18.0.11:9080", "198.18.0.12:19082"]);
    assert_eq!(c.endpoints[0].labels["version"], "v1");
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
    assert_eq!(c.protocol, UpstreamProtocol::Http1 as i32);

    // From another namespace: no bare short name; port 80 gets bare host names.
    let t = run(&m, "cart", "shop", outbound_only());
    let vh = vhost(&t, "reviews.default.svc.cluster.local:9080").unwrap();
    assert!(!vh.domains.iter().any(|d| d == "reviews:9080"));
    assert!(vh.domains.iter().any(|d| d == "reviews.default:9080"));
    let web80 = vhost(&t, "web.shop.svc.cluster.local:80").unwrap();
    assert!(web80.domains.iter().any(|d| d == "web"));
    let web8443 = vhost(&t, "web.shop.svc.cluster.local:8443").unwrap();
    assert!(
        !web8443.domains.iter().any(|d| d == "web"),
        "multi-port: bare host is port 80's"
    );
    assert_eq!(
        cluster(&t, "outbound|8443||web.shop.svc.cluster.local").protocol,
        UpstreamProtocol::Http2 as i32
    );
    // A TCP port has a cluster, no virtual host: it is routed at layer 4 (see l4_tests).
    assert!(vhost(&t, "web.shop.svc.cluster.local:5432").is_none());
    let tcp = cluster(&t, "outbound|5432||web.shop.svc.cluster.local");
    assert_eq!(tcp.endpoints[0].address, "198.18.0.21:5432");
    assert_eq!(tcp.protocol, UpstreamProtocol::SameAsDownstream as i32);
    assert!(
        !t.warnings.iter().any(|w| w.contains("5432")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn export_to_hides_services_and_configs() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: default}
spec:
  hosts: [private.default.svc.cluster.local]
  exportTo: [.]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 198.18.0.41}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-private, namespace: default}
spec:
  hosts: [reviews]
  exportTo: [.]
  http: [{route: [{destination: {host: reviews}}], timeout: 3s}]
",
    );
    let own = run(&m, "reviews-v1", "default", outbound_only());
    assert!(vhost(&own, "private.default.svc.cluster.local:80").is_some());
    let vh = vhost(&own, "reviews.default.svc.cluster.local:9080").unwrap();
    assert_eq!(vh.routes[0].name, "", "the VirtualService's route");

    let other = run(&m, "cart", "shop", outbound_only());
    assert!(vhost(&other, "private.default.svc.cluster.local:80").is_none());
    let vh = vhost(&other, "reviews.default.svc.cluster.local:9080").unwrap();
    assert_eq!(
        vh.routes[0].name, "default",
        "the private VirtualService is not seen"
    );
}

#[test]
fn sidecar_egress_and_outbound_policy() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress: [{hosts: [./*]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress: [{hosts: [shop/*]}]
",
    );
    let shop = run(&m, "cart", "shop", outbound_only());
    assert!(vhost(&shop, "web.shop.svc.cluster.local:80").is_some());
    assert!(vhost(&shop, "reviews.default.svc.cluster.local:9080").is_none());
    assert!(
        shop.config
            .clusters
            .iter()
            .all(|c| !c.name.contains("reviews"))
    );
    assert_eq!(shop.config.listeners[0].outbound_traffic_policy, 2);

    // default has no Sidecar: the root namespace's applies.
    let def = run(&m, "reviews-v1", "default", outbound_only());
    assert!(vhost(&def, "reviews.default.svc.cluster.local:9080").is_none());
    assert!(vhost(&def, "web.shop.svc.cluster.local:80").is_some());
    assert_eq!(def.config.listeners[0].outbound_traffic_policy, 1);
}

#[test]
fn destination_rule_lookup_prefers_the_proxy_namespace() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-ns, namespace: default}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: client-ns, namespace: shop}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
",
    );
    let def = run(&m, "reviews-v1", "default", outbound_only());
    let c = cluster(&def, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(c.lb_policy, LbPolicy::Random as i32);
    let v1 = cluster(&def, "outbound|9080|v1|reviews.default.svc.cluster.local");
    let eps: Vec<_> = v1.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(eps, ["198.18.0.11:9080"], "subset endpoints by labels");
    assert_eq!(
        v1.lb_policy,
        LbPolicy::Random as i32,
        "subset inherits top level"
    );

    let shop = run(&m, "cart", "shop", outbound_only());
    let c = cluster(&shop, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
    assert!(
        !shop.config.clusters.iter().any(|c| c.name.contains("|v1|")),
        "the shop rule has no subsets"
    );
}

#[test]
fn connection_lifetimes_and_stream_limits_reach_every_cluster_and_the_proxy_accepts_them() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {idleTimeout: 300s, maxConnectionDuration: 30m}
      http: {maxConcurrentStreams: 50}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {connectionPool: {http: {maxConcurrentStreams: 7}}}
",
    );
    let def = run(&m, "reviews-v1", "default", outbound_only());
    assert!(def.warnings.is_empty(), "{:?}", def.warnings);
    let all = cluster(&def, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(all.tcp_idle_timeout_ms, Some(300_000));
    assert_eq!(all.max_connection_duration_ms, 1_800_000);
    assert_eq!(all.max_concurrent_streams, 50);
    // The subset's connectionPool replaces the top level's as a whole (Istio's merge).
    let v1 = cluster(&def, "outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_eq!(v1.max_concurrent_streams, 7);
    assert_eq!(v1.tcp_idle_timeout_ms, None);
    assert_eq!(v1.max_connection_duration_ms, 0);
    mesh_proxy::config::check(&def.config).expect("the proxy accepts the config");
}

#[test]
fn destination_rule_limits_outlier_detection_and_retry_budget_reach_every_cluster() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
  annotations: {networking.mesh.dev/retry-budget: 'off'}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}
    outlierDetection: {consecutive5xxErrors: 2}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}
",
    );
    let def = run(&m, "reviews-v1", "default", outbound_only());
    let all = cluster(&def, "outbound|9080||reviews.default.svc.cluster.local");
    let limits = all.circuit_breakers.unwrap();
    assert_eq!(
        (limits.max_connections, limits.max_pending_requests),
        (1, 1)
    );
    assert_eq!(all.outlier_detection.as_ref().unwrap().consecutive_5xx, 2);
    assert!(all.retry_budget.as_ref().unwrap().disabled);
    // The subset's connectionPool replaces the top level's as a whole (Istio's merge).
    let v1 = cluster(&def, "outbound|9080|v1|reviews.default.svc.cluster.local");
    let limits = v1.circuit_breakers.unwrap();
    assert_eq!(
        (limits.max_connections, limits.max_requests_per_connection),
        (0, 1)
    );
    assert_eq!(v1.outlier_detection.as_ref().unwrap().consecutive_5xx, 2);
    assert!(v1.retry_budget.as_ref().unwrap().disabled);
    assert!(def.warnings.is_empty(), "{:?}", def.warnings);

    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
  annotations: {networking.mesh.dev/retry-budget: sometimes}
spec: {host: reviews}
",
    );
    let def = run(&m, "reviews-v1", "default", outbound_only());
    let all = cluster(&def, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(all.retry_budget, None, "the default budget stays");
    assert!(
        def.warnings
            .iter()
            .any(|w| w.starts_with("default/reviews (outbound|9080||reviews")
                && w.contains("retry-budget")),
        "{:?}",
        def.warnings
    );
}

#[test]
fn virtual_service_precedence_and_source_labels() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: old, namespace: default, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: cart}}]
    route: [{destination: {host: reviews}}]
    timeout: 1s
  - route: [{destination: {host: reviews}}]
    timeout: 2s
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: new, namespace: default, creationTimestamp: '2024-06-01T00:00:00Z'}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}], timeout: 9s}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gateway-only, namespace: default}
spec:
  hosts: [reviews]
  gateways: [my-gateway]
  http: [{route: [{destination: {host: reviews}}], timeout: 7s}]
",
    );
    let timeouts = |t: &Translated| -> Vec<u64> {
        vhost(t, "reviews.default.svc.cluster.local:9080")
            .unwrap()
            .routes
            .iter()
            .map(|r| match r.action.as_ref().unwrap() {
                route::Action::Route(a) => a.timeout_ms,
                _ => panic!(),
            })
            .collect()
    };
    let cart = run(&m, "cart", "shop", outbound_only());
    assert_eq!(
        timeouts(&cart),
        [1000, 2000],
        "the oldest VirtualService, with its cart match"
    );
    let reviews = run(&m, "reviews-v1", "default", outbound_only());
    assert_eq!(timeouts(&reviews), [2000]);
    assert_ne!(
        m.scope(m.registry().workload("cart", "shop").unwrap()),
        m.scope(m.registry().workload("reviews-v1", "default").unwrap())
    );
}

#[test]
fn proxies_of_one_scope_share_the_outbound_config() {
    let m = mesh("");
    let a = run(&m, "reviews-v1", "default", outbound_only());
    let b = run(&m, "reviews-v2", "default", outbound_only());
    assert_eq!(m.cached_scopes(), 1);
    assert_eq!(a, b);
    run(&m, "cart", "shop", outbound_only());
    assert_eq!(m.cached_scopes(), 2);
}

#[test]
fn output_is_deterministic() {
    let a = run(&mesh(""), "cart", "shop", outbound_only());
    let b = run(&mesh(""), "cart", "shop", outbound_only());
    assert_eq!(
        prost::Message::encode_to_vec(&a.config.route_tables[0]),
        prost::Message::encode_to_vec(&b.config.route_tables[0])
    );
    assert_eq!(a, b);
}

#[test]
fn inbound_listener_to_the_application() {
    let m = mesh("");
    let t = run(
        &m,
        "reviews-v1",
        "default",
        ProxyAddresses {
            inbound: "198.18.0.11:9080".into(),
            application: "127.0.0.1:19080".into(),
            transparent: true,
            ..Default::default()
        },
    );
    assert_eq!(t.config.listeners.len(), 1);
    let l = &t.config.listeners[0];
    assert_eq!(
        (l.name.as_str(), l.direction, l.transparent),
        ("inbound", 2, true)
    );
    let vh = &t.config.route_tables[0].virtual_hosts[0];
    assert_eq!(vh.domains, ["*"]);
    let route::Action::Route(a) = vh.routes[0].action.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!(a.clusters[0].cluster, "inbound|app");
    assert_eq!(a.retry_policy.as_ref().unwrap().num_retries, 0);
    let c = &t.config.clusters[0];
    assert_eq!(c.endpoints[0].address, "127.0.0.1:19080");
    assert_eq!(c.protocol, UpstreamProtocol::SameAsDownstream as i32);
    assert_eq!(t.config.version, "");
}

#[test]
fn inbound_listener_names_the_workloads_services_for_its_metrics() {
    let m = mesh("");
    let t = run(&m, "reviews-v1", "default", inbound_only());
    assert_eq!(
        t.config.listeners[0].services,
        ["reviews.default.svc.cluster.local"]
    );
}

#[test]
fn bad_addresses_are_errors() {
    let m = mesh("");
    let w = m.registry().workload("cart", "shop").unwrap().clone();
    let err = |addresses: ProxyAddresses| {
        translate(
            &m,
            &ProxyContext {
                id: "p",
                workload: &w,
                addresses: &addresses,
            },
        )
        .unwrap_err()
    };
    assert!(matches!(
        err(ProxyAddresses {
            outbound: "localhost".into(),
            ..Default::default()
        }),
        TranslateError::BadAddress { .. }
    ));
    assert!(matches!(
        err(ProxyAddresses {
            outbound: "127.0.0.1:1".into(),
            inbound: "127.0.0.1:1".into(),
            application: "127.0.0.1:2".into(),
            ..Default::default()
        }),
        TranslateError::AddressConflict { .. }
    ));
}

#[test]
fn unknown_destination_host_answers_503_with_a_warning() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: nowhere}}]}]
",
    );
    let t = run(&m, "cart", "shop", outbound_only());
    let vh = vhost(&t, "reviews.default.svc.cluster.local:9080").unwrap();
    assert!(matches!(
        vh.routes[0].action,
        Some(route::Action::DirectResponse(ref d)) if d.status == 503
    ));
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("nowhere.default.svc.cluster.local is not a service")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn destination_rule_specificity_and_workload_selector() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wildcard, namespace: shop}
spec:
  host: '*.default.svc.cluster.local'
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: exact, namespace: shop}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart-only, namespace: shop}
spec:
  host: web.shop.svc.cluster.local
  workloadSelector: {labels: {app: cart}}
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
",
    );
    let t = run(&m, "cart", "shop", outbound_only());
    let lb = |t: &Translated, c: &str| cluster(t, c).lb_policy;
    assert_eq!(
        lb(&t, "outbound|9080||reviews.default.svc.cluster.local"),
        LbPolicy::RoundRobin as i32,
        "the exact host beats the wildcard"
    );
    assert_eq!(
        lb(&t, "outbound|80||web.shop.svc.cluster.local"),
        LbPolicy::Random as i32,
        "the rule selecting cart applies to cart"
    );
}

fn inbound_only() -> ProxyAddresses {
    ProxyAddresses {
        inbound: "198.18.0.11:9080".into(),
        application: "127.0.0.1:19080".into(),
        ..Default::default()
    }
}

#[test]
fn inbound_listener_carries_the_workload_security() {
    use mesh_proto::config::v1::{MtlsMode, PortMtls, authorization_policy as ap};
    let m = mesh(
        "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {'9080': {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-only, namespace: shop}
spec: {action: ALLOW}
",
    );
    let t = run(&m, "reviews-v1", "default", inbound_only());
    let l = &t.config.listeners[0];
    assert_eq!(
        l.mtls_mode(),
        MtlsMode::Strict,
        "mesh-wide STRICT inherited"
    );
    assert_eq!(
        l.port_mtls,
        [PortMtls {
            port: 9080,
            mode: MtlsMode::Permissive as i32
        }]
    );
    assert_eq!(l.authorization_policies.len(), 1);
    assert_eq!(l.authorization_policies[0].name, "default/deny-admin");
    assert_eq!(l.authorization_policies[0].action(), ap::Action::Deny);

    // The shop workload gets its namespace's policy and the mesh-wide mode, no port overrides.
    let cart = run(&m, "cart", "shop", inbound_only());
    let l = &cart.config.listeners[0];
    assert_eq!(l.mtls_mode(), MtlsMode::Strict);
    assert!(l.port_mtls.is_empty());
    assert_eq!(l.authorization_policies[0].name, "shop/cart-only");

    // Nothing configured: PERMISSIVE, no policies.
    let plain = run(&mesh(""), "reviews-v1", "default", inbound_only());
    let l = &plain.config.listeners[0];
    assert_eq!(l.mtls_mode(), MtlsMode::Permissive);
    assert!(l.authorization_policies.is_empty());
}

#[test]
fn custom_authorization_policy_is_enforced_as_deny_and_warned() {
    use mesh_proto::config::v1::authorization_policy as ap;
    let m = mesh(
        "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  action: CUSTOM
  provider: {name: my-ext-authz}
  rules: [{to: [{operation: {paths: [/admin/*]}}]}]
",
    );
    let t = run(&m, "reviews-v1", "default", inbound_only());
    let p = &t.config.listeners[0].authorization_policies[0];
    assert_eq!(p.action(), ap::Action::Deny);
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("default/ext-authz") && w.contains("CUSTOM")),
        "{:?}",
        t.warnings
    );
}

const EXTERNAL_DB: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 8443, name: http-api, protocol: HTTP}]
  subjectAltNames: [spiffe://partner.example/ns/db/sa/api, db.example.com]
  endpoints:
  - {address: 198.18.5.1, serviceAccount: db}
  - {address: 198.18.5.2, labels: {version: v2}}
";

#[test]
fn service_entry_subject_alt_names_are_endpoint_identities() {
    let m = mesh(EXTERNAL_DB);
    let t = run(&m, "reviews-v1", "default", outbound_only());
    let c = cluster(&t, "outbound|8443||db.example.com");
    assert_eq!(
        c.endpoints[0].identities,
        [
            "spiffe://cluster.local/ns/default/sa/db",
            "spiffe://partner.example/ns/db/sa/api",
            "db.example.com"
        ]
    );
    // No serviceAccount: only the ServiceEntry's names.
    assert_eq!(
        c.endpoints[1].identities,
        ["spiffe://partner.example/ns/db/sa/api", "db.example.com"]
    );
    // Other services are unaffected.
    let r = cluster(&t, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(
        r.endpoints[0].identities,
        ["spiffe://cluster.local/ns/default/sa/default"]
    );
}

#[test]
fn destination_rule_tls_reaches_the_clusters() {
    use mesh_proto::config::v1::upstream_tls::Mode;
    let m = mesh(&format!(
        "{EXTERNAL_DB}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: default}}
spec:
  host: db.example.com
  trafficPolicy:
    tls: {{mode: SIMPLE, sni: db.example.com, caCertificates: /etc/certs/ca.pem}}
  subsets:
  - name: v2
    labels: {{version: v2}}
    trafficPolicy:
      tls: {{mode: MUTUAL, clientCertificate: /etc/certs/c.pem, privateKey: /etc/certs/k.pem}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"
    ));
    let t = run(&m, "reviews-v1", "default", outbound_only());
    let top = cluster(&t, "outbound|8443||db.example.com")
        .tls
        .clone()
        .unwrap();
    assert_eq!(top.mode(), Mode::Simple);
    assert_eq!(top.sni, "db.example.com");
    assert_eq!(top.ca_certificates, "/etc/certs/ca.pem");
    let v2 = cluster(&t, "outbound|8443|v2|db.example.com")
        .tls
        .clone()
        .unwrap();
    assert_eq!(v2.mode(), Mode::Mutual);
    assert_eq!(v2.client_certificate, "/etc/certs/c.pem");
    assert!(!top.auto_sni, "a configured sni is sent as it is");
    // The subset's tls replaces the whole field, so it names no sni: each request's host is
    // sent, and the service's host on TCP connections (Istio's auto SNI).
    assert!(v2.auto_sni);
    assert_eq!(v2.sni, "db.example.com");
    let reviews = cluster(&t, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(reviews.tls.as_ref().unwrap().mode(), Mode::IstioMutual);
    // A service without DestinationRule tls stays on auto mTLS.
    assert_eq!(
        cluster(&t, "outbound|80||web.shop.svc.cluster.local").tls,
        None
    );
}

#[test]
fn telemetry_access_logs_reach_each_proxy_by_namespace_and_workload() {
    let m = mesh(
        "
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop-json, namespace: shop}
spec:
  accessLogging:
  - providers: [{name: envoy-json}]
    filter: {expression: 'response.code >= 500'}
  - providers: [{name: envoy}]
    disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews-v2-errors, namespace: default}
spec:
  selector: {matchLabels: {version: v2}}
  accessLogging:
  - match: {mode: SERVER}
    filter: {expression: 'response.code >= 400'}
",
    );
    let summary = |t: &Translated| {
        t.config
            .telemetry
            .as_ref()
            .and_then(|t| t.access_logging.as_ref())
            .map(|a| {
                a.logs
                    .iter()
                    .map(|l| format!("{} {:?} {:?} {}", l.name, l.format(), l.mode(), l.filter))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let v1 = run(&m, "reviews-v1", "default", outbound_only());
    assert_eq!(summary(&v1), ["envoy Text ClientAndServer "]);
    let v2 = run(&m, "reviews-v2", "default", outbound_only());
    assert_eq!(
        summary(&v2),
        [
            "envoy Text Client ",
            "envoy Text Server response.code >= 400"
        ]
    );
    let cart = run(&m, "cart", "shop", outbound_only());
    assert_eq!(
        summary(&cart),
        ["envoy-json Json ClientAndServer response.code >= 500"]
    );
    // What pilot sends passes the proxy's own check.
    for t in [&v1, &v2, &cart] {
        mesh_proxy::config::check(&t.config).expect("the proxy accepts it");
    }
}

#[test]
fn local_rate_limits_go_on_the_inbound_listener_or_are_warned_about() {
    let m = mesh(
        "apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: reviews, namespace: default}
spec: {workloadSelector: {matchLabels: {app: reviews}}, requestsPerUnit: 5, unit: SECOND}
",
    );
    let with_inbound = ProxyAddresses {
        inbound: "127.0.0.1:15006".into(),
        application: "127.0.0.1:9080".into(),
        ..outbound_only()
    };
    let t = run(&m, "reviews-v1", "default", with_inbound);
    let inbound = t
        .config
        .listeners
        .iter()
        .find(|l| l.name == INBOUND)
        .unwrap();
    assert_eq!(inbound.local_rate_limits.len(), 1);
    assert_eq!(inbound.local_rate_limits[0].name, "default/reviews");
    assert!(
        t.config
            .listeners
            .iter()
            .filter(|l| l.name != INBOUND)
            .all(|l| l.local_rate_limits.is_empty())
    );
    assert!(!t.warnings.iter().any(|w| w.contains("LocalRateLimit")));

    // Without an inbound listener there is nothing to limit: said, not silently dropped.
    let t = run(&m, "reviews-v1", "default", outbound_only());
    assert!(
        t.warnings.iter().any(|w| w
            == "proxy p1: LocalRateLimit default/reviews selects it, but it has no inbound listener to limit; not applied"),
        "{:?}",
        t.warnings
    );
    // A workload it does not select gets neither.
    let t = run(&m, "cart", "shop", outbound_only());
    assert!(!t.warnings.iter().any(|w| w.contains("LocalRateLimit")));
}

#[test]
fn dns_service_entries_give_dns_clusters_of_names_the_proxy_resolves() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mirror, namespace: default}
spec:
  hosts: [mirror.example.com]
  resolution: DNS_ROUND_ROBIN
  ports: [{number: 443, name: tls, protocol: TLS, targetPort: 8443}]
  endpoints: [{address: cdn.example.net}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mixed, namespace: default}
spec:
  hosts: [mixed.example.com]
  resolution: DNS
  ports: [{number: 8080, name: http}]
  endpoints: [{address: 198.18.5.1}, {address: a.example.net, labels: {zone: a}}]
",
    );
    let t = run(&m, "reviews-v1", "default", outbound_only());
    let api = cluster(&t, "outbound|80||api.example.com");
    assert_eq!(
        api.discovery,
        mesh_proto::config::v1::cluster::Discovery::StrictDns as i32
    );
    let eps: Vec<_> = api.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(eps, ["api.example.com:80"], "the host itself, at its port");
    let rr = cluster(&t, "outbound|443||mirror.example.com");
    assert_eq!(
        rr.discovery,
        mesh_proto::config::v1::cluster::Discovery::LogicalDns as i32
    );
    assert_eq!(rr.endpoints[0].address, "cdn.example.net:8443");
    let mixed = cluster(&t, "outbound|8080||mixed.example.com");
    let eps: Vec<_> = mixed.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(eps, ["198.18.5.1:8080", "a.example.net:8080"]);
    assert_eq!(mixed.endpoints[1].labels["zone"], "a");
    let static_cluster = cluster(&t, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(static_cluster.discovery, 0, "STATIC");
    assert!(
        !t.warnings.iter().any(|w| w.contains("DNS name")),
        "{:?}",
        t.warnings
    );
    // The proxy accepts the names (pilot checks every config with the proxy's compile).
    mesh_proxy::config::check(&t.config).expect("the proxy accepts DNS clusters");
}

#[test]
fn resolution_none_http_ports_go_to_the_original_destination() {
    use mesh_proto::config::v1::cluster::Discovery;
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  resolution: NONE
  ports: [{number: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - port: {number: 8081, protocol: HTTP, name: http-egress}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: [./*]
  - hosts: [./*]
",
    );
    let t = run(&m, "cart", "shop", outbound_only());
    let c = cluster(&t, "outbound|80||api.example.com");
    assert_eq!(c.discovery, Discovery::OriginalDst as i32);
    assert!(c.endpoints.is_empty());
    let vh = vhost(&t, "api.example.com:80").unwrap();
    assert_eq!(
        targets(&vh.routes[0]),
        [("outbound|80||api.example.com".to_string(), 100)]
    );
    // Through the explicit listener there is no original destination: said, not hidden.
    assert!(
        t.warnings.iter().any(|w| w.contains("127.0.0.1:8081")
            && w.contains("api.example.com has resolution NONE")
            && w.contains("503")),
        "{:?}",
        t.warnings
    );
    mesh_proxy::config::check(&t.config).expect("the proxy accepts ORIGINAL_DST clusters");
    // A static service keeps static endpoints.
    assert_eq!(
        cluster(&t, "outbound|80||web.shop.svc.cluster.local").discovery,
        Discovery::Static as i32
    );
}

#[test]
fn an_http_route_may_go_to_an_https_port_carried_by_the_destination_rules_tls() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  resolution: DNS
  ports: [{number: 80, name: http-port, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: egress, namespace: default}
spec:
  hosts: [egress.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 443, name: https, protocol: HTTPS}]
  endpoints: [{address: 198.18.0.40}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: via-egress, namespace: default}
spec:
  hosts: [edition.cnn.com]
  http:
  - route: [{destination: {host: egress.default.svc.cluster.local, port: {number: 443}}}]
",
    );
    let t = run(&m, "reviews-v1", "default", outbound_only());
    let vh = vhost(&t, "edition.cnn.com:80").unwrap();
    assert_eq!(
        targets(&vh.routes[0]),
        [(
            "outbound|443||egress.default.svc.cluster.local".to_string(),
            100
        )]
    );
    assert!(
        !t.warnings.iter().any(|w| w.contains("not HTTP")),
        "{:?}",
        t.warnings
    );
}
