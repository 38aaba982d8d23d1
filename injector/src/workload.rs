//! Injection of whole objects as they are on the wire or in a file: a Pod, or the pod
//! template of a workload. Works on JSON values so fields unknown to the typed model are kept:
//! the typed engine runs on a round-tripped copy and its changes come back as a JSONPatch,
//! which is applied to the original (and is what the webhook answers with).

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value, json};

use crate::inject::{InjectError, Injector, workload_name};
use crate::patch;
use crate::policy::{self, NamespaceScope, Skip};

/// Where the pod template of each handled kind is (JSON pointer).
pub fn template_pointer(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return None,
    })
}

#[derive(Debug)]
pub enum Outcome {
    /// Not a kind that carries pods.
    NotHandled,
    Skipped(Skip),
    Injected {
        /// Ops relative to the object's root.
        patch: Vec<Value>,
        object: Value,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Inject(#[from] InjectError),
    #[error("generated patch does not apply: {0}")]
    Patch(String),
}

impl Injector {
    /// Injects `object` (any kind; others are [`Outcome::NotHandled`]). `namespace` is where
    /// the object lives (the webhook knows it from the request; a file may not say).
    pub fn inject_object(
        &self,
        object: &Value,
        namespace: Option<&str>,
        scope: NamespaceScope<'_>,
    ) -> Result<Outcome, ObjectError> {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let Some(pointer) = template_pointer(kind) else {
            return Ok(Outcome::NotHandled);
        };
        let Some(template) = object.pointer(pointer).filter(|t| t.is_object()) else {
            return Err(ObjectError::Malformed(format!(
                "{kind} has no pod template at {pointer:?}"
            )));
        };
        let view = json!({
            "metadata": template.get("metadata").cloned().unwrap_or(Value::Null),
            "spec": template.get("spec").cloned().unwrap_or(Value::Null),
        });
        let typed: PodTemplateSpec = serde_json::from_value(view)
            .map_err(|e| ObjectError::Malformed(format!("{kind}: not a pod spec: {e}")))?;
        let mut meta = typed.metadata.clone().unwrap_or_default();
        let Some(mut spec) = typed.spec.clone() else {
            return Err(ObjectError::Malformed(format!(
                "{kind}: pod template has no spec"
            )));
        };
        let namespace = namespace
            .filter(|n| !n.is_empty())
            .or(meta.namespace.as_deref())
            .or_else(|| {
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
            })
            .unwrap_or("")
            .to_string();
        if let Err(skip) = policy::decide(&meta, &spec, &namespace, scope, self.values()) {
            return Ok(Outcome::Skipped(skip));
        }
        let workload = match pointer {
            "" => workload_name(&meta),
            _ => object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        self.inject(&mut meta, &mut spec, &workload)?;

        let before = serde_json::to_value(&typed).unwrap_or(Value::Null);
        let injected = PodTemplateSpec {
            metadata: Some(meta),
            spec: Some(spec),
        };
        let after = serde_json::to_value(&injected).unwrap_or(Value::Null);
        let ops = patch::diff(pointer, &before, &after);
        let mut object = object.clone();
        apply(&mut object, &ops)?;
        Ok(Outcome::Injected { patch: ops, object })
    }
}

/// Applies RFC 6902 ops (as JSON) to `doc`.
pub fn apply(doc: &mut Value, ops: &[Value]) -> Result<(), ObjectError> {
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec()))
        .map_err(|e| ObjectError::Patch(e.to_string()))?;
    json_patch::patch(doc, &patch).map_err(|e| ObjectError::Patch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;
    use crate::values::Values;

    fn injector() -> Injector {
        Injector::new(Values::default(), Template::default_template()).unwrap()
    }

    #[test]
    fn kinds() {
        let inj = injector();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert!(matches!(
            inj.inject_object(&cm, None, NamespaceScope::Selected)
                .unwrap(),
            Outcome::NotHandled
        ));
        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": "busybox"}]}}}}}});
        let Outcome::Injected { object, patch } = inj
            .inject_object(&cron, None, NamespaceScope::Selected)
            .unwrap()
        else {
            panic!("not injected")
        };
        assert!(patch.iter().all(|op| {
            op["path"]
                .as_str()
                .unwrap()
                .starts_with("/spec/jobTemplate/spec/template/")
        }));
        let t = &object["spec"]["jobTemplate"]["spec"]["template"];
        assert_eq!(t["spec"]["containers"][0]["name"], "mesh-proxy");
        assert_eq!(
            t["metadata"]["labels"]["service.istio.io/canonical-name"],
            "nightly"
        );
        let broken = json!({"kind": "Deployment", "spec": {}});
        assert!(
            inj.inject_object(&broken, None, NamespaceScope::Selected)
                .is_err()
        );
        let bad_spec = json!({"kind": "Pod", "spec": {"containers": 3}});
        assert!(
            inj.inject_object(&bad_spec, None, NamespaceScope::Selected)
                .is_err()
        );
    }

    #[test]
    fn unknown_fields_are_kept() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "apps"},
            "spec": {"futurePodField": {"a": 1},
                     "containers": [{"name": "app", "image": "x", "futureContainerField": true}]},
            "status": {"phase": "Pending"}});
        let Outcome::Injected { object, .. } = injector()
            .inject_object(&pod, None, NamespaceScope::Selected)
            .unwrap()
        else {
            panic!("not injected")
        };
        assert_eq!(object["spec"]["futurePodField"]["a"], 1);
        assert_eq!(
            object["spec"]["containers"][1]["futureContainerField"],
            true
        );
        assert_eq!(object["status"]["phase"], "Pending");
    }
}
