//! Per-pod settings read from annotations: traffic capture and proxy resources. Every
//! annotation exists under Istio's prefix and the project's own; the project's wins when both
//! are set. Values are checked here, so a typo rejects the pod at admission instead of
//! crash-looping its init container.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::values::Values;

pub const ISTIO_TRAFFIC: &str = "traffic.sidecar.istio.io/";
pub const MESH_TRAFFIC: &str = "traffic.sidecar.mesh.dev/";
pub const ISTIO_SIDECAR: &str = "sidecar.istio.io/";
pub const MESH_SIDECAR: &str = "sidecar.mesh.dev/";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {value:?}: {reason}")]
pub struct AnnotationError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// Looks `name` up under the project's prefix, then Istio's; returns the key found too.
pub fn lookup<'a>(
    annotations: &'a BTreeMap<String, String>,
    mesh_prefix: &str,
    istio_prefix: &str,
    name: &str,
) -> Option<(String, &'a str)> {
    [mesh_prefix, istio_prefix].iter().find_map(|p| {
        let key = format!("{p}{name}");
        annotations.get(&key).map(|v| (key, v.trim()))
    })
}

#[derive(Clone, Copy)]
enum ListKind {
    Ports { star: bool },
    Cidrs { star: bool },
}

/// The `{{ .Pod.X }}` fields of the template for this pod.
pub fn pod_fields(
    annotations: &BTreeMap<String, String>,
    spec: &PodSpec,
    values: &Values,
) -> Result<BTreeMap<String, String>, AnnotationError> {
    let traffic = |name: &str, default: &str, kind: ListKind| match lookup(
        annotations,
        MESH_TRAFFIC,
        ISTIO_TRAFFIC,
        name,
    ) {
        Some((key, v)) => check_list(&key, v, kind).map(|()| v.replace(' ', "")),
        None => Ok(default.to_string()),
    };
    let mut out = BTreeMap::new();
    let fields = [
        (
            "includeInboundPorts",
            traffic(
                "includeInboundPorts",
                &values.include_inbound_ports,
                ListKind::Ports { star: true },
            )?,
        ),
        (
            "excludeInboundPorts",
            traffic("excludeInboundPorts", "", ListKind::Ports { star: false })?,
        ),
        (
            "includeOutboundIPRanges",
            traffic(
                "includeOutboundIPRanges",
                "*",
                ListKind::Cidrs { star: true },
            )?,
        ),
        (
            "excludeOutboundIPRanges",
            traffic(
                "excludeOutboundIPRanges",
                "",
                ListKind::Cidrs { star: false },
            )?,
        ),
        (
            "includeOutboundPorts",
            traffic("includeOutboundPorts", "", ListKind::Ports { star: false })?,
        ),
        (
            "excludeOutboundPorts",
            traffic("excludeOutboundPorts", "", ListKind::Ports { star: false })?,
        ),
        ("appAddr", app_addr(spec)),
    ];
    for (k, v) in fields {
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

/// Where inbound requests go on to: the first declared port of the first app container.
/// Empty (the flag is then dropped) when the pod declares none.
fn app_addr(spec: &PodSpec) -> String {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map(|p| format!("127.0.0.1:{}", p.container_port))
        .unwrap_or_default()
}

fn check_list(key: &str, value: &str, kind: ListKind) -> Result<(), AnnotationError> {
    let err = |reason: String| AnnotationError {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    let star_ok = matches!(
        kind,
        ListKind::Ports { star: true } | ListKind::Cidrs { star: true }
    );
    if value == "*" {
        return if star_ok {
            Ok(())
        } else {
            Err(err("`*` is not allowed here".into()))
        };
    }
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match kind {
            ListKind::Ports { .. } => check_port(item).map_err(err)?,
            ListKind::Cidrs { .. } => check_cidr(item).map_err(err)?,
        }
    }
    Ok(())
}

/// A port or an inclusive range `LOW:HIGH`, as istio-iptables takes them.
fn check_port(item: &str) -> Result<(), String> {
    let port = |s: &str| match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{item:?} is not a port (1-65535)")),
    };
    match item.split_once(':') {
        Some((lo, hi)) if port(lo)? <= port(hi)? => Ok(()),
        Some(_) => Err(format!("{item:?}: empty range")),
        None => port(item).map(|_| ()),
    }
}

fn check_cidr(item: &str) -> Result<(), String> {
    let (addr, len) = item.split_once('/').unwrap_or((item, ""));
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{item:?} is not an IP range"))?;
    if len.is_empty() {
        return Ok(());
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match len.parse::<u8>() {
        Ok(n) if n <= max => Ok(()),
        _ => Err(format!("{item:?}: prefix length must be 0-{max}")),
    }
}

/// The proxy's resources: defaults from the settings, overridden by `proxyCPU`, `proxyMemory`,
/// `proxyCPULimit`, `proxyMemoryLimit`.
pub fn proxy_resources(
    annotations: &BTreeMap<String, String>,
    values: &Values,
) -> Result<ResourceRequirements, AnnotationError> {
    let get = |name: &str, default: Option<&String>| -> Result<Option<Quantity>, AnnotationError> {
        match lookup(annotations, MESH_SIDECAR, ISTIO_SIDECAR, name) {
            Some((key, v)) => {
                check_quantity(v).map_err(|reason| AnnotationError {
                    key,
                    value: v.to_string(),
                    reason,
                })?;
                Ok(Some(Quantity(v.to_string())))
            }
            None => Ok(default
                .filter(|d| !d.is_empty())
                .map(|d| Quantity(d.clone()))),
        }
    };
    let pair = |cpu: Option<Quantity>, mem: Option<Quantity>| {
        let map: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", mem)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    Ok(ResourceRequirements {
        requests: pair(
            get("proxyCPU", Some(&values.proxy_cpu))?,
            get("proxyMemory", Some(&values.proxy_memory))?,
        ),
        limits: pair(
            get("proxyCPULimit", values.proxy_cpu_limit.as_ref())?,
            get("proxyMemoryLimit", values.proxy_memory_limit.as_ref())?,
        ),
        ..Default::default()
    })
}

/// A Kubernetes quantity: a decimal number with an optional SI or binary suffix or exponent.
fn check_quantity(v: &str) -> Result<(), String> {
    const SUFFIXES: &[&str] = &[
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let num_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(v.len());
    let (num, suffix) = v.split_at(num_end);
    let exp_ok = suffix
        .strip_prefix(['e', 'E'])
        .is_some_and(|e| !e.is_empty() && e.trim_start_matches(['+', '-']).parse::<u32>().is_ok());
    let num_ok = num
        .trim_start_matches('+')
        .parse::<f64>()
        .is_ok_and(|n| n >= 0.0);
    if num_ok && (SUFFIXES.contains(&suffix) || exp_ok) {
        Ok(())
    } else {
        Err("not a Kubernetes quantity (e.g. 100m, 2, 128Mi)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_capture_everything() {
        let f = pod_fields(&ann(&[]), &PodSpec::default(), &Values::default()).unwrap();
        assert_eq!(f["includeInboundPorts"], "*");
        assert_eq!(f["includeOutboundIPRanges"], "*");
        assert_eq!(f["excludeOutboundPorts"], "");
        assert_eq!(f["appAddr"], "");
    }

    #[test]
    fn mesh_prefix_wins_over_istio() {
        let a = ann(&[
            ("traffic.sidecar.istio.io/excludeOutboundPorts", "7,8"),
            ("traffic.sidecar.mesh.dev/excludeOutboundPorts", "9"),
            ("traffic.sidecar.istio.io/includeInboundPorts", "1, 2,3"),
        ]);
        let f = pod_fields(&a, &PodSpec::default(), &Values::default()).unwrap();
        assert_eq!(f["excludeOutboundPorts"], "9");
        assert_eq!(f["includeInboundPorts"], "1,2,3");
    }

    #[test]
    fn bad_values_are_rejected() {
        for (k, v) in [
            ("traffic.sidecar.istio.io/excludeInboundPorts", "80,http"),
            ("traffic.sidecar.istio.io/excludeInboundPorts", "*"),
            ("traffic.sidecar.istio.io/excludeOutboundPorts", "0"),
            ("traffic.sidecar.istio.io/excludeOutboundPorts", "9:1"),
            (
                "traffic.sidecar.istio.io/includeOutboundIPRanges",
                "10.0.0.0/33",
            ),
            (
                "traffic.sidecar.mesh.dev/excludeOutboundIPRanges",
                "example.com",
            ),
        ] {
            let e = pod_fields(&ann(&[(k, v)]), &PodSpec::default(), &Values::default());
            assert!(e.is_err(), "{k}={v} accepted");
        }
        let ok = ann(&[
            (
                "traffic.sidecar.istio.io/excludeOutboundPorts",
                "1000:2000,22",
            ),
            (
                "traffic.sidecar.istio.io/includeOutboundIPRanges",
                "10.96.0.1/24,fd00::/8,1.2.3.4",
            ),
        ]);
        pod_fields(&ok, &PodSpec::default(), &Values::default()).unwrap();
    }

    #[test]
    fn resources_from_annotations() {
        let r = proxy_resources(
            &ann(&[
                ("sidecar.istio.io/proxyCPU", "4000m"),
                ("sidecar.istio.io/proxyMemoryLimit", "1Gi"),
            ]),
            &Values::default(),
        )
        .unwrap();
        let req = r.requests.unwrap();
        assert_eq!(req["cpu"].0, "4000m");
        assert_eq!(req["memory"].0, "128Mi");
        let lim = r.limits.unwrap();
        assert_eq!(lim.len(), 1);
        assert_eq!(lim["memory"].0, "1Gi");
        let d = proxy_resources(&ann(&[]), &Values::default()).unwrap();
        assert!(d.limits.is_none());
        for bad in ["lots", "1Gb", "-1", "1e"] {
            let e = proxy_resources(
                &ann(&[("sidecar.istio.io/proxyMemory", bad)]),
                &Values::default(),
            );
            assert!(e.is_err(), "{bad}");
        }
        for good in ["1.5", "2", "100m", "1e3", "128Mi"] {
            check_quantity(good).unwrap();
        }
    }
}
