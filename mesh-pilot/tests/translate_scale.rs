//! Translation cost at the scale of the benchmark: 1000 services of 10 endpoints, each with a
//! VirtualService and a DestinationRule of two subsets. Prints the timings (run with
//! `--release --nocapture` for real numbers); asserts only what the output must contain.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use mesh_api::networking::{
    Destination, DestinationRule, HttpRoute, HttpRouteDestination, Port, ServiceEntry, Subset,
    VirtualService, WorkloadEntry, WorkloadSelector,
};
use mesh_api::{Object, ObjectMeta, Resource};
use mesh_pilot::registry::Registry;
use mesh_pilot::translate::{MeshIndex, ProxyContext, translate, translate_shared};
use mesh_proto::config::v1::ProxyConfig;
use mesh_proto::discovery::v1::ProxyAddresses;

const SERVICES: usize = 1000;
const ENDPOINTS: usize = 10;
const NAMESPACES: usize = 10;

fn meta(name: String, ns: String) -> ObjectMeta {
    ObjectMeta {
        name,
        namespace: Some(ns),
        ..Default::default()
    }
}

fn obj<T>(name: String, ns: String, spec: T) -> Box<Object<T>> {
    Box::new(Object {
        api_version: "networking.istio.io/v1".into(),
        metadata: meta(name, ns),
        spec,
        source: Default::default(),
    })
}

fn labels(kv: &[(&str, String)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn resources() -> Vec<Resource> {
    let mut out = Vec::new();
    for i in 0..SERVICES {
        let ns = format!("ns{}", i % NAMESPACES);
        let name = format!("svc{i}");
        let host = format!("{name}.{ns}.svc.cluster.local");
        out.push(Resource::ServiceEntry(obj(
            name.clone(),
            ns.clone(),
            ServiceEntry {
                hosts: vec![host.clone()],
                ports: vec![Port {
                    number: 8080,
                    protocol: "HTTP".into(),
                    name: "http".into(),
                    target_port: None,
                }],
                workload_selector: Some(WorkloadSelector {
                    labels: labels(&[("app", name.clone())]),
                }),
                ..Default::default()
            },
        )));
        for e in 0..ENDPOINTS {
            out.push(Resource::WorkloadEntry(obj(
                format!("{name}-{e}"),
                ns.clone(),
                WorkloadEntry {
                    address: format!("198.18.{}.{}", i / 25, (i % 25) * 10 + e),
                    labels: labels(&[
                        ("app", name.clone()),
                        ("version", format!("v{}", e % 2 + 1)),
                    ]),
                    ..Default::default()
                },
            )));
        }
        let dest = |subset: &str, weight| HttpRouteDestination {
            destination: Destination {
                host: name.clone(),
                subset: Some(subset.into()),
                port: None,
            },
            weight,
            headers: None,
        };
        out.push(Resource::VirtualService(obj(
            name.clone(),
            ns.clone(),
            VirtualService {
                hosts: vec![name.clone()],
                http: vec![HttpRoute {
                    route: vec![dest("v1", 90), dest("v2", 10)],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )));
        let subset = |v: &str| Subset {
            name: v.into(),
            labels: labels(&[("version", v.to_string())]),
            ..Default::default()
        };
        out.push(Resource::DestinationRule(obj(
            name.clone(),
            ns,
            DestinationRule {
                host,
                subsets: vec![subset("v1"), subset("v2")],
                ..Default::default()
            },
        )));
    }
    out
}

#[test]
fn translation_at_scale() {
    let resources = resources();
    let t = Instant::now();
    let registry = Arc::new(Registry::build(&resources));
    let registry_time = t.elapsed();
    let t = Instant::now();
    let mesh = MeshIndex::new(&resources, registry);
    let index_time = t.elapsed();

    let addresses = ProxyAddresses {
        outbound: "127.0.0.1:15001".into(),
        inbound: "127.0.0.1:15006".into(),
        application: "127.0.0.1:8080".into(),
        transparent: true,
        gateway: None,
    };
    let proxy = |name: &str, ns: &str| mesh.registry().workload(name, ns).unwrap().clone();
    let w0 = proxy("svc0-0", "ns0");
    let ctx = |w| ProxyContext {
        id: "p",
        workload: w,
        addresses: &addresses,
    };

    let t = Instant::now();
    let cold = translate(&mesh, &ctx(&w0)).unwrap();
    let cold_time = t.elapsed();
    assert_eq!(cold.config.clusters.len(), SERVICES * 3 + 1);
    assert_eq!(cold.config.route_tables[1].virtual_hosts.len(), SERVICES);
    assert!(cold.warnings.is_empty(), "{:?}", cold.warnings);

    let scope = mesh.scope(&w0);
    let t = Instant::now();
    let shared = mesh.outbound(&scope);
    let warm_outbound = t.elapsed();
    assert_eq!(shared.clusters.len(), SERVICES * 3);

    let w1 = proxy("svc10-3", "ns0");
    let t = Instant::now();
    let warm_shared = translate_shared(&mesh, &ctx(&w1)).unwrap();
    let warm_shared_time = t.elapsed();
    // The same config but for the inbound listener's services, which are each workload's own.
    let without_services = |mut c: ProxyConfig| {
        for l in &mut c.listeners {
            l.services.clear();
        }
        c
    };
    assert_eq!(
        cold.config.listeners[0].services,
        ["svc0.ns0.svc.cluster.local"]
    );
    let warm_shared = warm_shared.to_config();
    assert_eq!(
        warm_shared.listeners[0].services,
        ["svc10.ns0.svc.cluster.local"]
    );
    let cold_config = without_services(cold.config.clone());
    assert_eq!(without_services(warm_shared), cold_config);
    let t = Instant::now();
    let warm = translate(&mesh, &ctx(&w1)).unwrap();
    let warm_time = t.elapsed();
    assert_eq!(without_services(warm.config.clone()), cold_config);

    // 2000 proxies, 200 in each namespace: one cold scope per namespace, the rest warm.
    let workloads: Vec<_> = (0..2000)
        .map(|i| {
            proxy(
                &format!("svc{}-{}", i % SERVICES, i / SERVICES),
                &format!("ns{}", i % NAMESPACES),
            )
        })
        .collect();
    let mesh = MeshIndex::new(&resources, Arc::new(mesh.registry().clone()));
    let t = Instant::now();
    for w in &workloads {
        translate_shared(&mesh, &ctx(w)).unwrap();
    }
    let all_time = t.elapsed();
    assert_eq!(mesh.cached_scopes(), NAMESPACES);

    println!(
        "translation, {SERVICES} services x {ENDPOINTS} endpoints ({} build):\n  \
         registry build              {registry_time:?}\n  \
         mesh index build            {index_time:?}\n  \
         translate, cold scope       {cold_time:?}\n  \
         outbound(), warm            {warm_outbound:?}\n  \
         translate_shared, warm      {warm_shared_time:?}\n  \
         translate, warm             {warm_time:?} (copies {} clusters)\n  \
         translate_shared x 2000     {all_time:?} ({} scopes built)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        warm.config.clusters.len(),
        mesh.cached_scopes(),
    );
}
