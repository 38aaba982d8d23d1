//! The Kubernetes service registry: Services, EndpointSlices, Pods and Namespaces into the
//! source-neutral model (`registry::Service`, `Endpoint`, `Workload`), with Istio's rules.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service as KubeService, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::cluster::Cluster;
use super::protocol::port_protocol;
use crate::registry::{
    Endpoint, Location, Platform, Resolution, Service, ServiceOrigin, ServicePort, TLS_MODE_LABEL,
    Workload, spiffe_id,
};

/// Label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Annotation listing the namespaces a Service is visible from (Istio's).
const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
/// Network of a pod (its label) or of every pod of a namespace (the namespace's label).
const NETWORK_LABEL: &str = "topology.istio.io/network";
/// Annotations an injector writes on a pod it gave a sidecar (Istio's and the mesh's own).
const SIDECAR_STATUS_ANNOTATIONS: &[&str] = &["sidecar.istio.io/status", "sidecar.mesh.dev/status"];
/// Service account of a pod that names none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Names that depend on the cluster's setup.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// DNS suffix of Services: `<svc>.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// Trust domain of the pods' SPIFFE identities.
    pub trust_domain: String,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
            trust_domain: crate::registry::DEFAULT_TRUST_DOMAIN.into(),
        }
    }
}

/// Every Service with its ready endpoints, and every running Pod as a workload.
pub fn build(cluster: &Cluster, opts: &RegistryOptions) -> Platform {
    let mut slices_by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in cluster.endpoint_slices.iter() {
        if let Some(svc) = slice.labels().get(SERVICE_NAME_LABEL) {
            slices_by_service
                .entry((slice.namespace().unwrap_or_default(), svc.clone()))
                .or_default()
                .push(slice);
        }
    }
    let services = cluster
        .services
        .iter()
        .filter_map(|svc| {
            let key = (svc.namespace().unwrap_or_default(), svc.name_any());
            let slices = slices_by_service.get(&key).map_or(&[][..], Vec::as_slice);
            service(svc, slices, cluster, opts)
        })
        .collect();
    let workloads = cluster
        .pods
        .iter()
        .filter(|p| !is_finished(p))
        .map(|p| workload(p, cluster, opts))
        .collect();
    Platform {
        services,
        workloads,
    }
}

fn service(
    svc: &KubeService,
    slices: &[&EndpointSlice],
    cluster: &Cluster,
    opts: &RegistryOptions,
) -> Option<Service> {
    let spec = svc.spec.as_ref()?;
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let mut ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| ServicePort {
            name: p.name.clone().unwrap_or_default(),
            number: p.port as u32,
            protocol: port_protocol(
                p.port,
                p.name.as_deref(),
                p.protocol.as_deref(),
                p.app_protocol.as_deref(),
            ),
            target_port: match &p.target_port {
                Some(IntOrString::Int(n)) => Some(*n as u32),
                _ => None,
            },
        })
        .collect();
    ports.sort_by_key(|p| p.number);
    let external_name = (spec.type_.as_deref() == Some("ExternalName"))
        .then(|| spec.external_name.clone())
        .flatten();
    let (resolution, location, endpoints) = match external_name {
        // An alias for a DNS name: the proxy resolves it, nothing in the mesh serves it.
        Some(target) => (
            Resolution::Dns,
            Location::MeshExternal,
            vec![Endpoint {
                address: target,
                ports: ports.iter().map(|p| (p.number, p.number)).collect(),
                weight: 1,
                ..Endpoint::default()
            }],
        ),
        None => {
            let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
            let endpoints = endpoints(&ports, slices, publish_not_ready, cluster, opts);
            (Resolution::Static, Location::MeshInternal, endpoints)
        }
    };
    Some(Service {
        hostname: format!("{name}.{namespace}.svc.{}", opts.cluster_domain),
        addresses: cluster_ips(spec),
        export_to: svc
            .annotations()
            .get(EXPORT_TO_ANNOTATION)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        ports,
        resolution,
        location,
        endpoints,
        origin: ServiceOrigin {
            kind: "Service",
            namespace: namespace.clone(),
            name,
        },
        namespace,
        created: svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
    })
}

/// A Service's virtual IPs: `clusterIPs` (both families of a dual-stack Service), else
/// `clusterIP`; none for a headless Service ("None") or an ExternalName one.
fn cluster_ips(spec: &ServiceSpec) -> Vec<String> {
    let ips = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) => vec![ip.clone()],
        _ => Vec::new(),
    };
    ips.into_iter()
        .filter(|ip| !ip.is_empty() && ip != "None")
        .collect()
}

/// The ready endpoints of all slices of one Service, one per address (an address in two
/// slices, as while slices are being rebalanced, is one endpoint).
fn endpoints(
    ports: &[ServicePort],
    slices: &[&EndpointSlice],
    publish_not_ready: bool,
    cluster: &Cluster,
    opts: &RegistryOptions,
) -> Vec<Endpoint> {
    let mut by_address: BTreeMap<String, Endpoint> = BTreeMap::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        // The service port a slice port serves is the one of the same name.
        let port_map: BTreeMap<u32, u32> = ports
            .iter()
            .filter_map(|sp| {
                let served = slice.ports.iter().flatten().find(|p| {
                    p.name.as_deref().unwrap_or_default() == sp.name && p.port.is_some()
                })?;
                Some((sp.number, served.port? as u32))
            })
            .collect();
        let namespace = slice.namespace().unwrap_or_default();
        for e in slice.endpoints.iter().flatten() {
            let pod = pod_of(e, &namespace, cluster);
            if !publish_not_ready && !is_ready(e, pod) {
                continue;
            }
            let Some(address) = e.addresses.first() else {
                continue;
            };
            let endpoint = by_address
                .entry(address.clone())
                .or_insert_with(|| endpoint(address, pod, &namespace, cluster, opts));
            endpoint
                .ports
                .extend(port_map.iter().map(|(k, v)| (*k, *v)));
        }
    }
    by_address.into_values().collect()
}

fn pod_of<'a>(e: &SliceEndpoint, namespace: &str, cluster: &'a Cluster) -> Option<&'a Pod> {
    let target = e.target_ref.as_ref()?;
    if target.kind.as_deref() != Some("Pod") {
        return None;
    }
    let ns = target.namespace.as_deref().unwrap_or(namespace);
    cluster.pods.get(ns, target.name.as_deref()?)
}

/// The slice's `ready` condition (unset means ready, as the API documents); a pod known to be
/// not ready leaves even before its slice is updated.
fn is_ready(e: &SliceEndpoint, pod: Option<&Pod>) -> bool {
    let slice_ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
    slice_ready && pod.is_none_or(pod_ready)
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn endpoint(
    address: &str,
    pod: Option<&Pod>,
    namespace: &str,
    cluster: &Cluster,
    opts: &RegistryOptions,
) -> Endpoint {
    let Some(pod) = pod else {
        // An address without a pod (a Service without selector): not a mesh workload.
        return Endpoint {
            address: address.to_string(),
            weight: 1,
            ..Endpoint::default()
        };
    };
    let sa = service_account(pod);
    Endpoint {
        address: address.to_string(),
        ports: BTreeMap::new(),
        labels: pod.labels().clone(),
        identity: spiffe_id(&opts.trust_domain, namespace, &sa),
        service_account: sa,
        locality: None,
        network: network(pod, cluster),
        weight: 1,
        sidecar: has_sidecar(pod),
        workload: Some((namespace.to_string(), pod.name_any())),
    }
}

fn workload(pod: &Pod, cluster: &Cluster, opts: &RegistryOptions) -> Workload {
    let namespace = pod.namespace().unwrap_or_default();
    let sa = service_account(pod);
    Workload {
        name: pod.name_any(),
        identity: spiffe_id(&opts.trust_domain, &namespace, &sa),
        namespace,
        labels: pod.labels().clone(),
        service_account: sa,
        address: pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        ports: pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| Some((p.name.clone()?, p.container_port as u32)))
            .collect(),
        locality: None,
        network: network(pod, cluster),
        weight: 1,
    }
}

fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string())
}

/// Istio's rule: the TLS-mode label decides when set; else an injector's status annotation
/// says the pod has a sidecar.
fn has_sidecar(pod: &Pod) -> bool {
    match pod.labels().get(TLS_MODE_LABEL) {
        Some(mode) => mode == "istio",
        None => SIDECAR_STATUS_ANNOTATIONS
            .iter()
            .any(|a| pod.annotations().contains_key(*a)),
    }
}

fn network(pod: &Pod, cluster: &Cluster) -> Option<String> {
    pod.labels().get(NETWORK_LABEL).cloned().or_else(|| {
        let ns = pod.namespace()?;
        cluster
            .namespaces
            .get("", &ns)
            .and_then(|n| n.labels().get(NETWORK_LABEL).cloned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Protocol;

    fn list<K: serde::de::DeserializeOwned>(json: &str) -> Vec<K> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        serde_json::from_value(v["items"].clone()).unwrap()
    }

    fn cluster() -> Cluster {
        let mut c = Cluster::default();
        c.services
            .replace(list(include_str!("../../tests/kube/services.json")));
        c.endpoint_slices
            .replace(list(include_str!("../../tests/kube/endpointslices.json")));
        c.pods
            .replace(list(include_str!("../../tests/kube/pods.json")));
        c.namespaces
            .replace(list(include_str!("../../tests/kube/namespaces.json")));
        c
    }

    #[test]
    fn services_ports_and_ready_endpoints() {
        let p = build(&cluster(), &RegistryOptions::default());
        let reviews = p
            .services
            .iter()
            .find(|s| s.hostname == "reviews.bookinfo.svc.cluster.local")
            .unwrap();
        assert_eq!(reviews.origin.kind, "Service");
        assert_eq!(reviews.location, Location::MeshInternal);
        assert_eq!(reviews.ports[0].number, 9080);
        assert_eq!(reviews.ports[0].protocol, Protocol::Http);
        let addrs: Vec<_> = reviews
            .endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect();
        // reviews-v3's endpoint is not ready in the slice.
        assert_eq!(addrs, ["198.18.1.11", "198.18.1.12"]);
        let e = &reviews.endpoints[0];
        assert_eq!(e.ports.get(&9080), Some(&9080));
        assert_eq!(e.service_account, "bookinfo-reviews");
        assert_eq!(
            e.identity,
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
        );
        assert_eq!(e.labels.get("version").map(String::as_str), Some("v1"));
        assert!(e.sidecar, "tlsMode label");
        assert_eq!(e.network.as_deref(), Some("network-a"), "namespace label");
        assert_eq!(e.workload.as_ref().unwrap().1, "reviews-v1-6f8f9c5d4-x7kq2");
    }

    #[test]
    fn cluster_ips_are_the_service_addresses() {
        let p = build(&cluster(), &RegistryOptions::default());
        let reviews = p
            .services
            .iter()
            .find(|s| s.hostname == "reviews.bookinfo.svc.cluster.local")
            .unwrap();
        assert_eq!(reviews.addresses, ["198.19.0.31"]);
        // As the API server writes a headless and a dual-stack Service's spec.
        let spec = |json: &str| -> ServiceSpec { serde_json::from_str(json).unwrap() };
        let headless = spec(r#"{"clusterIP":"None","clusterIPs":["None"],"type":"ClusterIP"}"#);
        assert!(cluster_ips(&headless).is_empty());
        let dual = spec(
            r#"{"clusterIP":"198.19.0.7","clusterIPs":["198.19.0.7","2001:db8::7"],"ipFamilyPolicy":"PreferDualStack"}"#,
        );
        assert_eq!(cluster_ips(&dual), ["198.19.0.7", "2001:db8::7"]);
        let old = spec(r#"{"clusterIP":"198.19.0.8"}"#);
        assert_eq!(cluster_ips(&old), ["198.19.0.8"]);
        let external = spec(r#"{"type":"ExternalName","externalName":"db.example.com"}"#);
        assert!(cluster_ips(&external).is_empty());
    }

    #[test]
    fn pods_become_workloads() {
        let p = build(&cluster(), &RegistryOptions::default());
        let w = p
            .workloads
            .iter()
            .find(|w| w.name == "productpage-v1-7c9d8b6f5-abcde")
            .unwrap();
        assert_eq!(w.namespace, "bookinfo");
        assert_eq!(w.service_account, "bookinfo-productpage");
        assert_eq!(w.address, "198.18.1.10");
        assert_eq!(w.labels.get("app").map(String::as_str), Some("productpage"));
    }

    #[test]
    fn a_kubernetes_service_wins_over_a_service_entry_of_its_host() {
        let (entries, errors) = mesh_api::load_str(
            "se.yaml",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews-vm, namespace: bookinfo}\nspec:\n  hosts: [reviews.bookinfo.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 198.18.9.9}]\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let platform = build(&cluster(), &RegistryOptions::default());
        let registry =
            crate::registry::Registry::build_merged(&entries, "cluster.local", &platform);
        let reviews: Vec<_> = registry
            .services_for_host("reviews.bookinfo.svc.cluster.local")
            .collect();
        assert_eq!(reviews.len(), 1);
        assert_eq!(reviews[0].origin.kind, "Service");
        assert!(
            registry.warnings().iter().any(|w| w.contains("reviews-vm")),
            "{:?}",
            registry.warnings()
        );
        // Pods are the workloads proxies are found by.
        assert!(
            registry
                .workload("reviews-v2-5b7c8d9e6-m3n4p", "bookinfo")
                .is_some()
        );
    }
}
