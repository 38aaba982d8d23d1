use std::sync::Arc;

use mesh_proto::config::v1::{Direction, Listener, RouteTable, route};
use mesh_proto::discovery::v1::{GatewayAddresses, ProxyAddresses};

use crate::registry::Registry;
use crate::translate::{MeshIndex, ProxyContext, Translated, translate};

const MESH: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http}]
  workloadSelector: {labels: {app: productpage}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 443, name: tls, protocol: TLS}]
  workloadSelector: {labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-v1, namespace: default}
spec: {address: 198.18.0.11, labels: {app: productpage}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-v1, namespace: default}
spec: {address: 198.18.0.12, labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingressgateway, namespace: istio-system}
spec: {address: 127.0.0.1, labels: {istio: ingressgateway}, serviceAccount: ingressgateway}
";

fn run(extra: &str, gateway: GatewayAddresses) -> Translated {
    let (resources, errors) = mesh_api::load_str("t.yaml", &format!("{MESH}---\n{extra}"));
    assert!(errors.is_empty(), "{errors:?}");
    let registry = Arc::new(Registry::build(&resources));
    let mesh = MeshIndex::new(&resources, registry);
    let w = mesh
        .registry()
        .workload("ingressgateway", "istio-system")
        .expect("workload")
        .clone();
    translate(
        &mesh,
        &ProxyContext {
            id: "gw",
            workload: &w,
            addresses: &ProxyAddresses {
                gateway: Some(gateway),
                ..Default::default()
            },
        },
    )
    .expect("translate")
}

fn listener<'a>(t: &'a Translated, name: &str) -> &'a Listener {
    t.config
        .listeners
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no listener {name}: {:?}", t.config.listeners))
}

fn table<'a>(t: &'a Translated, name: &str) -> &'a RouteTable {
    t.config
        .route_tables
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route table {name}"))
}

const BOOKINFO_GATEWAY: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ['*']
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {exact: /productpage}}, {uri: {prefix: /static}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
";

#[test]
fn an_http_server_routes_the_virtual_services_bound_to_its_gateway() {
    let t = run(
        BOOKINFO_GATEWAY,
        GatewayAddresses {
            ports: [(80, "127.0.0.1:18080".to_string())].into(),
            ..Default::default()
        },
    );
    let l = listener(&t, "gateway-80");
    assert_eq!(l.address, "127.0.0.1:18080");
    assert_eq!(l.direction(), Direction::Gateway);
    assert!(l.downstream_tls.is_none());
    let vhosts = &table(&t, "gateway-80").virtual_hosts;
    assert_eq!(vhosts.len(), 1);
    assert_eq!(vhosts[0].domains, ["*"]);
    assert_eq!(vhosts[0].routes.len(), 2);
    let Some(route::Action::Route(a)) = &vhosts[0].routes[0].action else {
        panic!("{:?}", vhosts[0].routes[0]);
    };
    assert_eq!(
        a.clusters[0].cluster,
        "outbound|9080||productpage.default.svc.cluster.local"
    );
    // The cluster it names is in the config: the gateway carries the outbound clusters.
    assert!(
        t.config
            .clusters
            .iter()
            .any(|c| c.name == a.clusters[0].cluster && c.endpoints[0].sidecar)
    );
    // No sidecar listeners on a gateway.
    assert_eq!(t.config.listeners.len(), 1);
}

#[test]
fn mesh_only_and_unbound_virtual_services_stay_off_the_gateway() {
    let t = run(
        &format!(
            "{BOOKINFO_GATEWAY}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: mesh-only, namespace: default}}
spec:
  hosts: [mesh.example.com]
  http: [{{route: [{{destination: {{host: productpage}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: other-gateway, namespace: default}}
spec:
  hosts: [other.example.com]
  gateways: [istio-system/other]
  http: [{{route: [{{destination: {{host: productpage}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: by-full-name, namespace: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [default/bookinfo-gateway]
  http: [{{route: [{{destination: {{host: productpage.default.svc.cluster.local}}}}]}}]
"
        ),
        GatewayAddresses::default(),
    );
    let vhosts = &table(&t, "gateway-80").virtual_hosts;
    let names: Vec<&str> = vhosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["*", "shop.example.com"]);
    assert_eq!(
        vhosts[1].domains,
        ["shop.example.com", "shop.example.com:80"]
    );
    assert_eq!(listener(&t, "gateway-80").address, "0.0.0.0:80");
}

const TWO_HTTPS: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*/a.example.com']
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: ['*/a.example.com']
    tls: {mode: SIMPLE, serverCertificate: /certs/a.pem, privateKey: /certs/a.key}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: ['default/b.example.com']
    tls: {mode: MUTUAL, serverCertificate: /certs/b.pem, privateKey: /certs/b.key, caCertificates: /certs/ca.pem}
  - port: {number: 443, name: https-c, protocol: HTTPS}
    hosts: [c.example.com]
    tls: {mode: MUTUAL, credentialName: 'kubernetes://c-cert'}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sites, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [istio-system/edge]
  http: [{route: [{destination: {host: productpage}}]}]
";

#[test]
fn https_servers_share_a_port_with_a_certificate_each_and_http_redirects() {
    let t = run(
        TWO_HTTPS,
        GatewayAddresses {
            bind_host: "127.0.0.1".into(),
            ..Default::default()
        },
    );
    let l = listener(&t, "gateway-443");
    assert_eq!(l.address, "127.0.0.1:443");
    let certs = &l
        .downstream_tls
        .as_ref()
        .expect("TLS terminated")
        .certificates;
    assert_eq!(certs.len(), 3);
    assert_eq!(certs[0].sni_hosts, ["a.example.com"]);
    assert_eq!(certs[0].certificate_chain, "/certs/a.pem");
    assert!(certs[0].ca_certificates.is_empty() && !certs[0].require_client_certificate);
    assert_eq!(certs[1].sni_hosts, ["b.example.com"]);
    assert_eq!(certs[1].ca_certificates, "/certs/ca.pem");
    assert!(certs[1].require_client_certificate);
    // A credential: its Secret's name only, no file and no key through pilot.
    assert_eq!(certs[2].sni_hosts, ["c.example.com"]);
    assert_eq!(certs[2].credential_name, "c-cert");
    assert!(certs[2].credential_client_ca && certs[2].require_client_certificate);
    assert!(certs[2].certificate_chain.is_empty() && certs[2].private_key.is_empty());
    let https: Vec<&str> = table(&t, "gateway-443")
        .virtual_hosts
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(https, ["a.example.com", "b.example.com"]);

    // Port 80 has only the redirecting server's host.
    let http = &table(&t, "gateway-80").virtual_hosts;
    assert_eq!(http.len(), 1);
    assert_eq!(http[0].name, "a.example.com");
    let Some(route::Action::Redirect(r)) = &http[0].routes[0].action else {
        panic!("{:?}", http[0].routes);
    };
    assert_eq!((r.scheme.as_str(), r.response_code), ("https", 301));
    assert_eq!(http[0].routes.len(), 1);
    assert!(
        !t.warnings.iter().any(|w| w.contains("credentialName")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn passthrough_servers_route_tls_by_server_name() {
    let t = run(
        "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: pass, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  gateways: [pass]
  tls:
  - match: [{sniHosts: [db.example.com], port: 443}]
    route: [{destination: {host: db, port: {number: 443}}}]
",
        GatewayAddresses::default(),
    );
    let l = listener(&t, "gateway-443");
    assert!(l.downstream_tls.is_none());
    assert_eq!(l.tcp_routes.len(), 1);
    assert_eq!(l.tcp_routes[0].matches[0].sni_hosts, ["db.example.com"]);
    assert_eq!(
        l.tcp_routes[0].clusters[0].cluster,
        "outbound|443||db.default.svc.cluster.local"
    );
}

#[test]
fn a_gateway_whose_selector_does_not_match_gives_no_listener() {
    let t = run(
        "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other, namespace: default}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
",
        GatewayAddresses::default(),
    );
    assert!(t.config.listeners.is_empty());
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("no Gateway selects its labels"))
    );
}

#[test]
fn source_conditions_name_the_gateway_workload() {
    let t = run(
        "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: ['*']
  gateways: [edge]
  http:
  - name: from-egress
    match: [{sourceLabels: {istio: egressgateway}}]
    route: [{destination: {host: productpage}}]
  - name: other-namespace
    match: [{sourceNamespace: shop}]
    route: [{destination: {host: productpage}}]
  - name: from-ingress
    match: [{sourceLabels: {istio: ingressgateway}, sourceNamespace: istio-system}]
    route: [{destination: {host: productpage}}]
",
        GatewayAddresses::default(),
    );
    let routes = &table(&t, "gateway-80").virtual_hosts[0].routes;
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["from-ingress"]);
}

#[test]
fn an_istio_mutual_server_terminates_mesh_mtls_and_routes_to_an_external_host() {
    use mesh_proto::config::v1::MtlsMode;
    let t = run(
        "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http-port, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [edition.cnn.com]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 443, name: http, protocol: HTTP}
    hosts: [other.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct-cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
  - match: [{gateways: [istio-egressgateway], port: 443}]
    route: [{destination: {host: edition.cnn.com, port: {number: 80}}}]
",
        GatewayAddresses {
            ports: [(443, "127.0.0.1:18443".to_string())].into(),
            ..Default::default()
        },
    );
    let l = listener(&t, "gateway-443");
    assert_eq!(
        l.mtls_mode(),
        MtlsMode::Strict,
        "mesh mTLS, the gateway's identity"
    );
    assert!(l.downstream_tls.is_none());
    let vhosts = &table(&t, "gateway-443").virtual_hosts;
    assert_eq!(
        vhosts.len(),
        1,
        "the plaintext server of the port is skipped"
    );
    assert!(vhosts[0].domains.iter().any(|d| d == "edition.cnn.com"));
    let Some(route::Action::Route(a)) = &vhosts[0].routes[0].action else {
        panic!("{:?}", vhosts[0].routes[0]);
    };
    assert_eq!(a.clusters[0].cluster, "outbound|80||edition.cnn.com");
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("port 443 already serves mesh mTLS")),
        "{:?}",
        t.warnings
    );
    mesh_proxy::config::check(&t.config).expect("the proxy accepts the gateway config");
}
