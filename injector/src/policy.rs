//! Who is injected. Istio's rules: a `disabled` on either the namespace or the pod wins; else
//! an `enabled` on either injects; else nothing. `hostNetwork` pods (capture would rewrite the
//! node's own rules), the system namespaces and pods injected already are never touched.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::values::Values;

/// Namespace labels that turn injection on (`enabled`) or off (`disabled`).
pub const NAMESPACE_LABELS: &[&str] = &["mesh.dev/injection", "istio-injection"];
/// Pod label (or, as Istio still honours, annotation) that opts a pod in or out.
pub const POD_KEYS: &[&str] = &["sidecar.mesh.dev/inject", "sidecar.istio.io/inject"];
/// Namespaces of the cluster itself.
pub const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];
/// Written on every injected pod.
pub const STATUS_ANNOTATION: &str = "sidecar.mesh.dev/status";
/// Containers that show a pod already carries a proxy (ours, or Istio's).
pub const PROXY_CONTAINERS: &[&str] = &["mesh-proxy", "istio-proxy"];

/// What is known about the pod's namespace.
#[derive(Clone, Copy, Debug)]
pub enum NamespaceScope<'a> {
    /// The namespace's labels, as a caller that can read them passes them.
    Labels(&'a BTreeMap<String, String>),
    /// The namespace was selected already: the webhook's `namespaceSelector` sent the pod, or
    /// `meshctl kube-inject` was asked to inject. Only a pod's own opt-out stops injection.
    Selected,
}

/// Why a pod is left alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("pod uses the host network")]
    HostNetwork,
    #[error("namespace {0} is a system namespace")]
    SystemNamespace(String),
    #[error("pod is injected already")]
    AlreadyInjected,
    #[error("pod opts out ({0}=false)")]
    PodOptOut(String),
    #[error("namespace opts out ({0}=disabled)")]
    NamespaceOptOut(String),
    #[error("neither the pod nor its namespace enable injection")]
    NotEnabled,
}

fn flag(map: Option<&BTreeMap<String, String>>, keys: &[&str]) -> Option<(String, bool)> {
    let map = map?;
    keys.iter().find_map(|k| {
        let v = map.get(*k)?.trim().to_ascii_lowercase();
        match v.as_str() {
            "true" | "enabled" | "y" | "yes" => Some((k.to_string(), true)),
            "false" | "disabled" | "n" | "no" => Some((k.to_string(), false)),
            _ => None,
        }
    })
}

/// Whether the pod is already carrying a proxy.
pub fn is_injected(meta: &ObjectMeta, spec: &PodSpec) -> bool {
    let annotated = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STATUS_ANNOTATION));
    let names = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.as_str());
    annotated || names.into_iter().any(|n| PROXY_CONTAINERS.contains(&n))
}

/// `Ok(())` when the pod is to be injected.
pub fn decide(
    meta: &ObjectMeta,
    spec: &PodSpec,
    namespace: &str,
    scope: NamespaceScope<'_>,
    values: &Values,
) -> Result<(), Skip> {
    if spec.host_network == Some(true) {
        return Err(Skip::HostNetwork);
    }
    if SYSTEM_NAMESPACES.contains(&namespace) || namespace == values.mesh_namespace {
        return Err(Skip::SystemNamespace(namespace.to_string()));
    }
    if is_injected(meta, spec) {
        return Err(Skip::AlreadyInjected);
    }
    // The label wins over the annotation, as in Istio.
    let pod = flag(meta.labels.as_ref(), POD_KEYS).or(flag(meta.annotations.as_ref(), POD_KEYS));
    let ns = match scope {
        NamespaceScope::Labels(labels) => flag(Some(labels), NAMESPACE_LABELS),
        NamespaceScope::Selected => Some(("selected".to_string(), true)),
    };
    match (pod, ns) {
        (Some((k, false)), _) => Err(Skip::PodOptOut(k)),
        (_, Some((k, false))) => Err(Skip::NamespaceOptOut(k)),
        (Some((_, true)), _) | (_, Some((_, true))) => Ok(()),
        (None, None) => Err(Skip::NotEnabled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> (ObjectMeta, PodSpec) {
        let meta = ObjectMeta {
            labels: Some(map(labels)),
            annotations: Some(map(annotations)),
            ..Default::default()
        };
        let spec = PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        (meta, spec)
    }

    type Case<'a> = (&'a BTreeMap<String, String>, &'a [(&'a str, &'a str)], bool);

    /// The who-is-injected matrix: namespace label x pod label.
    #[test]
    fn matrix() {
        let v = Values::default();
        let on = map(&[("istio-injection", "enabled")]);
        let on_mesh = map(&[("mesh.dev/injection", "enabled")]);
        let off = map(&[("istio-injection", "disabled")]);
        let none = map(&[("team", "a")]);
        let t = [("sidecar.istio.io/inject", "true")];
        let f = [("sidecar.istio.io/inject", "false")];
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (&on, &[], true),
            (&on_mesh, &[], true),
            (&on, &t, true),
            (&on, &f, false),
            (&none, &[], false),
            (&none, &t, true),
            (&none, &f, false),
            (&off, &[], false),
            (&off, &t, false),
            (&off, &f, false),
        ];
        for (ns, labels, want) in cases {
            let (meta, spec) = pod(labels, &[]);
            let got = decide(&meta, &spec, "apps", NamespaceScope::Labels(ns), &v);
            assert_eq!(got.is_ok(), *want, "ns={ns:?} pod={labels:?}: {got:?}");
        }
        // The annotation form works, and the label beats it.
        let (meta, spec) = pod(&[], &f);
        assert_eq!(
            decide(&meta, &spec, "apps", NamespaceScope::Labels(&on), &v),
            Err(Skip::PodOptOut("sidecar.istio.io/inject".into()))
        );
        let (meta, spec) = pod(&t, &f);
        assert!(decide(&meta, &spec, "apps", NamespaceScope::Labels(&none), &v).is_ok());
        // The project's pod label.
        let (meta, spec) = pod(&[("sidecar.mesh.dev/inject", "false")], &[]);
        assert!(decide(&meta, &spec, "apps", NamespaceScope::Selected, &v).is_err());
        let (meta, spec) = pod(&[], &[]);
        assert!(decide(&meta, &spec, "apps", NamespaceScope::Selected, &v).is_ok());
    }

    #[test]
    fn never_injected() {
        let v = Values::default();
        let on = map(&[("istio-injection", "enabled")]);
        let (meta, mut spec) = pod(&[("sidecar.istio.io/inject", "true")], &[]);
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "mesh-system",
        ] {
            assert_eq!(
                decide(&meta, &spec, ns, NamespaceScope::Labels(&on), &v),
                Err(Skip::SystemNamespace(ns.into()))
            );
        }
        spec.host_network = Some(true);
        assert_eq!(
            decide(&meta, &spec, "apps", NamespaceScope::Selected, &v),
            Err(Skip::HostNetwork)
        );
        let (meta, mut spec) = pod(&[], &[]);
        spec.containers.push(Container {
            name: "mesh-proxy".into(),
            ..Default::default()
        });
        assert_eq!(
            decide(&meta, &spec, "apps", NamespaceScope::Selected, &v),
            Err(Skip::AlreadyInjected)
        );
        let (meta, spec) = pod(&[], &[(STATUS_ANNOTATION, "{}")]);
        assert_eq!(
            decide(&meta, &spec, "apps", NamespaceScope::Selected, &v),
            Err(Skip::AlreadyInjected)
        );
    }
}
