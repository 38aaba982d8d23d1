//! The injection engine on a typed pod (metadata + spec): renders the template for the pod
//! and places what it produced.
//!
//! Placement, and with it start and stop order:
//! - native sidecar (cluster >= 1.29): `mesh-init`, then `mesh-proxy` with `restartPolicy:
//!   Always` and a startup probe, then the pod's own init containers. The kubelet starts later
//!   containers only once the proxy's startup probe passes, stops the proxy after the app, and a
//!   Job's pod completes when its app containers exit.
//! - older clusters: the pod's own init containers run first (their traffic is not captured
//!   yet), then `mesh-init`; the proxy is the first app container with a `postStart` hook
//!   (`mesh-proxy wait`) that the kubelet runs to completion before starting the next
//!   container. On shutdown every container gets SIGTERM at once; the proxy drains. Jobs do
//!   not complete by themselves there: the proxy keeps running after the app exits unless the
//!   app calls the proxy's `POST 127.0.0.1:15000/quitquitquit`, as with Istio.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::annotations::{self, AnnotationError, ISTIO_SIDECAR, MESH_SIDECAR};
use crate::policy::STATUS_ANNOTATION;
use crate::probes::{self, PROBERS_ENV};
use crate::template::{Template, TemplateError};
use crate::values::{Values, ValuesError};

pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("{0}")]
    Conflict(String),
}

/// The `sidecar.mesh.dev/status` annotation: what was injected, so it can be found (and
/// removed) later, like Istio's `sidecar.istio.io/status`.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub init_containers: Vec<String>,
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub revision: String,
    /// Fingerprint of the template text.
    pub template: String,
}

/// Values plus template: everything needed to inject any pod.
#[derive(Clone, Debug)]
pub struct Injector {
    values: Values,
    template: Template,
    native: bool,
}

impl Injector {
    pub fn new(values: Values, template: Template) -> Result<Injector, ValuesError> {
        let native = values.native_sidecars()?;
        Ok(Injector {
            values,
            template,
            native,
        })
    }

    pub fn values(&self) -> &Values {
        &self.values
    }

    /// Whether the proxy goes in as a native sidecar.
    pub fn native_sidecars(&self) -> bool {
        self.native
    }

    /// Injects a pod that policy has admitted. `workload` names the owning workload, for the
    /// canonical-name label when the pod has no `app` label.
    pub fn inject(
        &self,
        meta: &mut ObjectMeta,
        spec: &mut PodSpec,
        workload: &str,
    ) -> Result<Status, InjectError> {
        let ann = meta.annotations.clone().unwrap_or_default();
        let fields = annotations::pod_fields(&ann, spec, &self.values)?;
        let resources = annotations::proxy_resources(&ann, &self.values)?;
        let rendered = self.template.render(&self.values, &fields)?;
        let mut init = rendered.init_container;
        let mut proxy = rendered.sidecar;
        init.resources = Some(resources.clone());
        proxy.resources = Some(resources);

        let taken = |name: &str| {
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .any(|c| c.name == name)
        };
        for name in [&init.name, &proxy.name] {
            if taken(name) {
                return Err(InjectError::Conflict(format!(
                    "pod already has a container named {name}"
                )));
            }
        }
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        for v in &rendered.volumes {
            if volumes.iter().any(|have| have.name == v.name) {
                return Err(InjectError::Conflict(format!(
                    "pod already has a volume named {}",
                    v.name
                )));
            }
        }
        volumes.extend(rendered.volumes.iter().cloned());

        let default_container = spec.containers.first().map(|c| c.name.clone());
        if self.rewrite_probes(&ann) {
            let probers = probes::rewrite(spec, &[]);
            if !probers.is_empty() {
                let json = serde_json::to_string(&probers).unwrap_or_default();
                proxy.env.get_or_insert_with(Vec::new).push(EnvVar {
                    name: PROBERS_ENV.into(),
                    value: Some(json),
                    ..Default::default()
                });
            }
        }

        let mut status = Status {
            init_containers: vec![init.name.clone()],
            containers: vec![],
            volumes: rendered.volumes.iter().map(|v| v.name.clone()).collect(),
            revision: self.values.revision.clone(),
            template: self.template.hash().to_string(),
        };
        let inits = spec.init_containers.get_or_insert_with(Vec::new);
        if self.native {
            status.init_containers.push(proxy.name.clone());
            proxy.restart_policy = Some("Always".into());
            proxy.startup_probe = rendered.native_sidecar.startup_probe;
            inits.splice(0..0, [init, proxy]);
        } else {
            status.containers.push(proxy.name.clone());
            proxy.lifecycle = rendered.first_container.lifecycle;
            inits.push(init);
            spec.containers.insert(0, proxy);
        }

        self.label(meta, workload);
        let ann = meta.annotations.get_or_insert_with(BTreeMap::new);
        let status_json = serde_json::to_string(&status).unwrap_or_default();
        ann.insert(STATUS_ANNOTATION.into(), status_json);
        // An app that publishes its own scrape annotations keeps them: they are its metrics.
        if !ann.contains_key("prometheus.io/scrape") {
            ann.insert("prometheus.io/scrape".into(), "true".into());
            ann.insert("prometheus.io/port".into(), "15090".into());
            ann.insert("prometheus.io/path".into(), "/stats/prometheus".into());
        }
        if let Some(c) = default_container {
            ann.entry(DEFAULT_CONTAINER.into()).or_insert(c);
        }
        Ok(status)
    }

    fn rewrite_probes(&self, ann: &BTreeMap<String, String>) -> bool {
        match annotations::lookup(ann, MESH_SIDECAR, ISTIO_SIDECAR, "rewriteAppHTTPProbers") {
            Some((_, v)) => !v.eq_ignore_ascii_case("false"),
            None => self.values.rewrite_app_probes,
        }
    }

    /// The mesh's labels: mTLS mode, and the canonical service name and revision that
    /// telemetry reports (from `app`/`version` as Istio derives them).
    fn label(&self, meta: &mut ObjectMeta, workload: &str) {
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        let first = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()).cloned())
        };
        let name = first(&[CANONICAL_NAME, "app.kubernetes.io/name", "app"])
            .unwrap_or_else(|| workload.to_string());
        let revision = first(&[CANONICAL_REVISION, "app.kubernetes.io/version", "version"])
            .unwrap_or_else(|| "latest".into());
        labels.insert(TLS_MODE_LABEL.into(), "istio".into());
        if !name.is_empty() {
            labels.insert(CANONICAL_NAME.into(), name);
        }
        labels.insert(CANONICAL_REVISION.into(), revision);
    }
}

/// The workload a pod belongs to, from its name or `generateName` (a ReplicaSet's pods are
/// `<deployment>-<hash>-<random>`).
pub fn workload_name(meta: &ObjectMeta) -> String {
    if let Some(name) = meta.name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let generated = meta.generate_name.as_deref().unwrap_or_default();
    let base = generated.trim_end_matches('-');
    let owned_by_rs = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "ReplicaSet");
    match base.rsplit_once('-') {
        Some((deployment, _hash)) if owned_by_rs => deployment.to_string(),
        _ => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn app() -> (ObjectMeta, PodSpec) {
        let meta = ObjectMeta {
            name: Some("web".into()),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        let spec = PodSpec {
            containers: vec![Container {
                name: "web".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        (meta, spec)
    }

    #[test]
    fn legacy_placement_puts_the_proxy_first() {
        let inj = Injector::new(Values::default(), Template::default_template()).unwrap();
        let (mut meta, mut spec) = app();
        let status = inj.inject(&mut meta, &mut spec, "web").unwrap();
        assert_eq!(spec.containers[0].name, "mesh-proxy");
        assert!(spec.containers[0].lifecycle.is_some());
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, "mesh-init");
        assert_eq!(status.containers, ["mesh-proxy"]);
        let ann = meta.annotations.unwrap();
        assert_eq!(ann[DEFAULT_CONTAINER], "web");
        let labels = meta.labels.unwrap();
        assert_eq!(labels[CANONICAL_NAME], "web");
        assert_eq!(labels[CANONICAL_REVISION], "latest");
    }

    #[test]
    fn native_placement_and_conflicts() {
        let values = Values {
            cluster_version: Some("1.30".into()),
            ..Values::default()
        };
        let inj = Injector::new(values, Template::default_template()).unwrap();
        let (mut meta, mut spec) = app();
        inj.inject(&mut meta, &mut spec, "web").unwrap();
        let inits = spec.init_containers.as_ref().unwrap();
        assert_eq!(inits[1].name, "mesh-proxy");
        assert_eq!(inits[1].restart_policy.as_deref(), Some("Always"));
        assert!(inits[1].startup_probe.is_some());
        assert_eq!(spec.containers.len(), 1);

        let (mut meta, mut spec) = app();
        spec.volumes = Some(vec![k8s_openapi::api::core::v1::Volume {
            name: "mesh-data".into(),
            ..Default::default()
        }]);
        assert!(matches!(
            inj.inject(&mut meta, &mut spec, "web"),
            Err(InjectError::Conflict(_))
        ));
    }

    #[test]
    fn workload_names() {
        let mut m = ObjectMeta {
            generate_name: Some("reviews-v1-5d4f7b9c8-".into()),
            owner_references: Some(vec![OwnerReference {
                kind: "ReplicaSet".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(workload_name(&m), "reviews-v1");
        m.owner_references = None;
        assert_eq!(workload_name(&m), "reviews-v1-5d4f7b9c8");
        m.name = Some("pinned".into());
        assert_eq!(workload_name(&m), "pinned");
    }
}
