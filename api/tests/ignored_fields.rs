//! Fields that validate but that the mesh does not act on are warned about, with their path
//! and line, never dropped without a word.

use mesh_api::load_str;
use mesh_api::validate::warnings;

fn warned(yaml: &str) -> Vec<String> {
    let (ok, errors) = load_str("f.yaml", yaml);
    assert!(errors.is_empty(), "{errors:?}");
    ok.iter()
        .flat_map(warnings)
        .map(|w| w.to_string())
        .collect()
}

fn has(warned: &[String], field: &str) -> bool {
    warned.iter().any(|w| w.contains(field))
}

#[test]
fn virtual_service_stat_prefix_and_remote_localities() {
    let w = warned(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}, statPrefix: a}]
    retries: {attempts: 2, retryRemoteLocalities: true}
    route: [{destination: {host: reviews}}]
",
    );
    assert!(has(&w, "spec.http[0].match[0].statPrefix"), "{w:?}");
    assert!(
        has(&w, "spec.http[0].retries.retryRemoteLocalities"),
        "{w:?}"
    );
    assert!(
        w.iter().all(|l| l.contains("f.yaml:")),
        "with file and line: {w:?}"
    );
}

#[test]
fn destination_rule_tunnel_proxy_protocol_ring_sizes_and_cookie_attributes() {
    let w = warned(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tunnel: {protocol: CONNECT, targetHost: egress, targetPort: 8080}
    proxyProtocol: {version: V1}
    loadBalancer:
      consistentHash:
        httpCookie: {name: u, ttl: 0s, attributes: [{name: SameSite, value: Strict}]}
        ringHash: {minimumRingSize: 2048}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 80}
        loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}
",
    );
    for field in [
        "spec.trafficPolicy.tunnel",
        "spec.trafficPolicy.proxyProtocol",
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes",
        "spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize",
        "spec.subsets[0].trafficPolicy.portLevelSettings[0].loadBalancer.consistentHash.maglev.tableSize",
    ] {
        assert!(has(&w, field), "{field}: {w:?}");
    }
}

#[test]
fn endpoints_networks_localities_sidecar_ingress_and_workload_groups() {
    let w = warned(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 198.18.0.9, network: n2, locality: us/east}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: '127.0.0.1:8080'}]
  outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress.example.com, port: {number: 80}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: vm, namespace: default}
spec:
  template: {serviceAccount: vm}
",
    );
    for field in [
        "spec.endpoints[0].network",
        "spec.endpoints[0].locality",
        "spec.ingress",
        "spec.outboundTrafficPolicy.egressProxy",
        "WorkloadGroup is not implemented",
    ] {
        assert!(has(&w, field), "{field}: {w:?}");
    }
}

#[test]
fn service_entry_location_and_gateway_server_names() {
    let w = warned(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  location: MESH_INTERNAL
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 198.18.0.9}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - name: public
    port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 8080, name: http-alt, protocol: HTTP}
    hosts: ['*']
",
    );
    let at = |field: &str| w.iter().filter(|l| l.contains(field)).count();
    assert_eq!(
        at("spec.location"),
        2,
        "both values, not the absent one: {w:?}"
    );
    assert_eq!(at("spec.servers[0].name"), 1, "{w:?}");
    assert_eq!(at("spec.servers[1]"), 0, "{w:?}");
    assert_eq!(w.len(), 3, "{w:?}");
}

#[test]
fn fields_the_mesh_implements_are_not_warned() {
    let w = warned(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
    outlierDetection: {consecutive5xxErrors: 3}
",
    );
    assert!(w.is_empty(), "{w:?}");
}
