//! Layer 4 translation: VirtualService `tcp` and `tls` routes, the defaults of non-HTTP
//! ports, and Sidecar egress listeners, with Istio's precedence.

use std::sync::Arc;

use mesh_proto::config::v1::{Listener, ListenerProtocol, TcpMatch, TcpRoute};

use super::*;
use crate::registry::Registry;

const SERVICES: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  hosts: [db.shop.svc.cluster.local]
  addresses: [198.18.10.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp-pg}]
  endpoints:
  - {address: 198.18.0.41, labels: {version: v1}}
  - {address: 198.18.0.42, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db.shop.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql-old, namespace: shop, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  hosts: [mysql-old.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: mysql}]
  endpoints: [{address: 198.18.0.51}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql-new, namespace: shop, creationTimestamp: '2025-01-01T00:00:00Z'}
spec:
  hosts: [mysql-new.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: mysql}]
  endpoints: [{address: 198.18.0.52}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mirror, namespace: shop}
spec:
  hosts: [mirror.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: cart, namespace: shop}
spec: {address: 198.18.0.31, labels: {app: cart}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web, namespace: shop}
spec: {address: 198.18.0.32, labels: {app: web}}
";

fn mesh(extra: &str) -> MeshIndex {
    let (resources, errors) = mesh_api::load_str("t.yaml", &format!("{SERVICES}---\n{extra}"));
    assert!(errors.is_empty(), "{errors:?}");
    let registry = Arc::new(Registry::build(&resources));
    MeshIndex::new(&resources, registry)
}

fn transparent() -> ProxyAddresses {
    ProxyAddresses {
        outbound: "0.0.0.0:15001".into(),
        transparent: true,
        ..Default::default()
    }
}

fn run(mesh: &MeshIndex, workload: &str, addresses: ProxyAddresses) -> Translated {
    let w = mesh.registry().workload(workload, "shop").unwrap().clone();
    let ctx = ProxyContext {
        id: "p",
        workload: &w,
        addresses: &addresses,
    };
    translate(mesh, &ctx).unwrap()
}

fn listener<'a>(t: &'a Translated, name: &str) -> &'a Listener {
    t.config
        .listeners
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no listener {name}: {:?}", t.config.listeners))
}

/// Routes as (name, matches as "port subnets sni", clusters as "cluster=weight").
fn show(routes: &[TcpRoute]) -> Vec<(String, Vec<String>, Vec<String>)> {
    let m = |m: &TcpMatch| {
        format!(
            "{} {:?} {:?}",
            m.destination_port, m.destination_subnets, m.sni_hosts
        )
    };
    routes
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.matches.iter().map(m).collect(),
                r.clusters
                    .iter()
                    .map(|c| format!("{}={}", c.cluster, c.weight))
                    .collect(),
            )
        })
        .collect()
}

fn route_of<'a>(t: &'a Translated, listener_name: &str, port: u32) -> Vec<&'a TcpRoute> {
    listener(t, listener_name)
        .tcp_routes
        .iter()
        .filter(|r| r.matches.iter().any(|m| m.destination_port == port))
        .collect()
}

const DB_V1: &str = "outbound|5432|v1|db.shop.svc.cluster.local";
const DB_V2: &str = "outbound|5432|v2|db.shop.svc.cluster.local";
const DB: &str = "outbound|5432||db.shop.svc.cluster.local";

#[test]
fn defaults_match_addresses_or_port_and_sni() {
    let m = mesh("");
    let t = run(&m, "cart", transparent());
    let routes = show(&listener(&t, OUTBOUND).tcp_routes);
    assert_eq!(
        routes,
        vec![
            // With an address: matched by it, first.
            (
                "db.shop.svc.cluster.local".into(),
                vec![r#"5432 ["198.18.10.1"] []"#.into()],
                vec![format!("{DB}=100")]
            ),
            // TLS and HTTPS without addresses: by server name.
            (
                "api.example.com".into(),
                vec![r#"443 [] ["api.example.com"]"#.into()],
                vec!["outbound|443||api.example.com=100".into()]
            ),
            (
                "mirror.example.com".into(),
                vec![r#"443 [] ["mirror.example.com"]"#.into()],
                vec!["outbound|443||mirror.example.com=100".into()]
            ),
            // Plain TCP without addresses: by port; the oldest service of the port wins.
            (
                "mysql-old.shop.svc.cluster.local".into(),
                vec!["3306 [] []".into()],
                vec!["outbound|3306||mysql-old.shop.svc.cluster.local=100".into()]
            ),
        ]
    );
    assert!(
        t.warnings.iter().any(|w| w.contains("mysql-new")
            && w.contains(
                "mysql-old.shop.svc.cluster.local already takes every connection to port 3306"
            )),
        "{:?}",
        t.warnings
    );
    // Every TCP port has its clusters, subsets included, with endpoints.
    let db_v2 = t.config.clusters.iter().find(|c| c.name == DB_V2).unwrap();
    assert_eq!(db_v2.endpoints.len(), 1);
    assert_eq!(db_v2.endpoints[0].address, "198.18.0.42:5432");

    // An explicit (not redirected) outbound listener is an HTTP proxy: no layer 4 routes.
    let explicit = ProxyAddresses {
        outbound: "127.0.0.1:15001".into(),
        ..Default::default()
    };
    assert!(
        listener(&run(&m, "cart", explicit), OUTBOUND)
            .tcp_routes
            .is_empty()
    );
}

#[test]
fn tcp_routes_first_match_wins_with_source_labels() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db-vs, namespace: shop}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432, sourceLabels: {app: cart}}]
    route: [{destination: {host: db, subset: v2}}]
  - match: [{destinationSubnets: [198.18.20.0/24]}, {port: 9999}]
    route: [{destination: {host: db, subset: v2}}]
  - route:
    - {destination: {host: db, subset: v1}, weight: 80}
    - {destination: {host: db, subset: v2}, weight: 20}
  - route: [{destination: {host: db}}]
",
    );
    // cart: the first route applies and has no subnets, so it takes every connection.
    let cart = run(&m, "cart", transparent());
    assert_eq!(
        show(
            &route_of(&cart, OUTBOUND, 5432)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        ),
        vec![(
            "shop/db-vs".into(),
            vec![r#"5432 ["198.18.10.1"] []"#.into()],
            vec![format!("{DB_V2}=100")]
        )]
    );
    // web: the first is not for it; the second by its own subnets (its port match is not
    // this port's); the third takes the rest by weight; the fourth and the default are
    // never reached, so they are not emitted.
    let web = run(&m, "web", transparent());
    assert_eq!(
        show(
            &route_of(&web, OUTBOUND, 5432)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        ),
        vec![
            (
                "shop/db-vs".into(),
                vec![r#"5432 ["198.18.20.0/24"] []"#.into()],
                vec![format!("{DB_V2}=100")]
            ),
            (
                "shop/db-vs".into(),
                vec![r#"5432 ["198.18.10.1"] []"#.into()],
                vec![format!("{DB_V1}=80"), format!("{DB_V2}=20")]
            ),
        ]
    );
}

#[test]
fn tls_routes_by_sni_then_tcp_then_default() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  tls:
  - match: [{port: 443, sniHosts: [api.example.com]}, {port: 8443, sniHosts: [api.example.com]}]
    route: [{destination: {host: api.example.com, port: {number: 443}}}]
  - match: [{sniHosts: [api.example.com], gateways: [some-gateway]}]
    route: [{destination: {host: nowhere.example.com}}]
  - match: [{sniHosts: [api.example.com], sourceNamespace: other}]
    route: [{destination: {host: nowhere.example.com}}]
  tcp:
  - match: [{destinationSubnets: [198.18.30.0/24]}]
    route: [{destination: {host: nowhere.example.com, port: {number: 443}}}]
",
    );
    let t = run(&m, "cart", transparent());
    assert_eq!(
        show(
            &route_of(&t, OUTBOUND, 443)
                .into_iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
        ),
        vec![
            (
                "shop/api".into(),
                vec![r#"443 [] ["api.example.com"]"#.into()],
                vec!["outbound|443||api.example.com=100".into()]
            ),
            // A destination that does not exist: closed, not passed to a later route.
            (
                "shop/api".into(),
                vec![r#"443 ["198.18.30.0/24"] []"#.into()],
                vec![format!("{BLACKHOLE}=100")]
            ),
            (
                "api.example.com".into(),
                vec![r#"443 [] ["api.example.com"]"#.into()],
                vec!["outbound|443||api.example.com=100".into()]
            ),
        ]
    );
    assert!(
        t.config
            .clusters
            .iter()
            .any(|c| c.name == BLACKHOLE && c.endpoints.is_empty())
    );
    assert!(
        t.warnings.iter().any(|w| w
            == "VirtualService shop/api: tcp[0]: destination host nowhere.example.com is not a service visible here; its connections are closed"),
        "{:?}",
        t.warnings
    );
}

#[test]
fn sidecar_egress_port_is_an_explicit_tcp_listener() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: cart, namespace: shop}
spec:
  workloadSelector: {labels: {app: cart}}
  egress:
  - port: {number: 15432, name: tcp-db}
    captureMode: NONE
    hosts: [./db.shop.svc.cluster.local]
  - port: {number: 3306, name: tcp-mysql}
    bind: 127.0.0.7
    hosts: [./mysql-new.shop.svc.cluster.local]
  - port: {number: 9080, name: http}
    captureMode: NONE
    hosts: ['./*']
  - port: {number: 7000, name: tcp}
    captureMode: NONE
    hosts: [./db.shop.svc.cluster.local]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db-vs, namespace: shop}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 15432}]
    route:
    - {destination: {host: db, subset: v1}, weight: 100}
    - {destination: {host: db, subset: v2}, weight: 0}
",
    );
    let t = run(&m, "cart", ProxyAddresses::default());
    // The one-port service is reached on the listener's own port; the VirtualService's
    // match is for that port.
    let db = listener(&t, "egress|127.0.0.1:15432");
    assert_eq!(db.address, "127.0.0.1:15432");
    assert_eq!(db.protocol(), ListenerProtocol::Tcp);
    assert_eq!(
        show(&db.tcp_routes),
        vec![(
            "shop/db-vs".into(),
            vec!["15432 [] []".into()],
            vec![format!("{DB_V1}=100"), format!("{DB_V2}=0")]
        )]
    );
    // The listener's hosts decide which service it reaches, not the port's oldest service.
    let mysql = listener(&t, "egress|127.0.0.7:3306");
    assert_eq!(
        show(&mysql.tcp_routes),
        vec![(
            "mysql-new.shop.svc.cluster.local".into(),
            vec!["3306 [] []".into()],
            vec!["outbound|3306||mysql-new.shop.svc.cluster.local=100".into()]
        )]
    );
    // A VirtualService match for another port does not apply: the default route.
    let other = listener(&t, "egress|127.0.0.1:7000");
    assert_eq!(other.tcp_routes[0].clusters[0].cluster, DB);
    // An HTTP egress port serves the outbound route table.
    let http = listener(&t, "egress|127.0.0.1:9080");
    assert_eq!(http.protocol(), ListenerProtocol::Http);
    assert_eq!(http.route_table, OUTBOUND);
    // The clusters come along although the proxy has no outbound listener.
    assert!(t.config.clusters.iter().any(|c| c.name == DB_V2));
    assert!(!t.config.listeners.iter().any(|l| l.name == OUTBOUND));

    // Other workloads of the namespace are not selected by the Sidecar.
    let web = run(&m, "web", ProxyAddresses::default());
    assert!(web.config.listeners.is_empty());
}

#[test]
fn resolution_none_goes_to_the_original_destination() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mongo, namespace: shop}
spec:
  hosts: [mongo.example.com]
  addresses: [198.18.200.0/24]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{number: 27017, name: mongo, protocol: MONGO}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: cart, namespace: shop}
spec:
  workloadSelector: {labels: {app: cart}}
  egress:
  - port: {number: 27017, protocol: MONGO, name: mongo}
    captureMode: NONE
    hosts: [./mongo.example.com]
  - hosts: ['./*']
",
    );
    let t = run(&m, "cart", transparent());
    assert_eq!(
        show(
            &route_of(&t, OUTBOUND, 27017)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        ),
        vec![(
            "mongo.example.com".into(),
            vec![r#"27017 ["198.18.200.0/24"] []"#.into()],
            vec!["PassthroughCluster=100".into()]
        )]
    );
    // No original destination behind an explicit listener: none, with the reason.
    assert!(
        !t.config
            .listeners
            .iter()
            .any(|l| l.name.starts_with("egress|"))
    );
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("mongo.example.com has resolution NONE")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn tcp_routes_for_a_port_of_unknown_protocol_are_reported() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.shop.svc.cluster.local]
  addresses: [198.18.50.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7000, name: legacy}]
  endpoints: [{address: 198.18.0.91}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.shop.svc.cluster.local]
  tcp:
  - route: [{destination: {host: legacy.shop.svc.cluster.local}}]
",
    );
    let t = run(&m, "cart", transparent());
    assert!(route_of(&t, OUTBOUND, 7000).is_empty());
    assert!(
        t.warnings.iter().any(|w| w.starts_with(
            "VirtualService shop/legacy: tcp and tls routes do not apply to port 7000 of legacy.shop.svc.cluster.local"
        )),
        "{:?}",
        t.warnings
    );
}

#[test]
fn inbound_listener_routes_declared_tcp_ports_as_tcp() {
    let m = mesh(
        "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache, namespace: shop}
spec:
  hosts: [cache.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 6379, name: redis, targetPort: 16379}, {number: 8080, name: http}]
  workloadSelector: {labels: {app: cart}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cart-admin, namespace: shop}
spec:
  hosts: [cart-admin.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: tcp-admin}, {number: 8081, name: tcp-metrics, targetPort: 8080}]
  workloadSelector: {labels: {app: cart}}
",
    );
    let inbound = |transparent: bool| ProxyAddresses {
        inbound: "127.0.0.1:15006".into(),
        application: "127.0.0.1:8080".into(),
        transparent,
        ..Default::default()
    };
    // The workload's ports behind TCP service ports (targetPort applied); 8080 is also
    // behind an HTTP port, so it stays HTTP, with a warning.
    let t = run(&m, "cart", inbound(false));
    assert_eq!(
        show(&listener(&t, INBOUND).tcp_routes),
        vec![(
            "inbound|tcp".into(),
            vec!["9000 [] []".into(), "16379 [] []".into()],
            vec!["inbound|app=100".into()]
        )]
    );
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("workload port 8080 serves both")),
        "{:?}",
        t.warnings
    );
    // Redirected connections go on to the port they were sent to.
    let t = run(&m, "cart", inbound(true));
    assert_eq!(
        listener(&t, INBOUND).tcp_routes[0].clusters[0].cluster,
        "PassthroughCluster"
    );
    // A workload behind no TCP service port has no inbound routes.
    assert!(
        listener(&run(&m, "web", inbound(false)), INBOUND)
            .tcp_routes
            .is_empty()
    );
}
