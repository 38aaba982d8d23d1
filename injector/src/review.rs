//! AdmissionReview (`admission.k8s.io/v1`, and `v1beta1` which has the same shape) in and
//! out, and the two webhooks' decisions as pure functions from request bytes to response
//! bytes; [`crate::server`] only moves bytes.
//!
//! - `/inject`: Pod CREATE -> `allowed: true` with a base64 JSONPatch, or without a patch when
//!   the pod is not to be injected; anything else -> `allowed: true`, no patch. A pod whose
//!   mesh annotations are invalid is refused (`allowed: false`) so the typo is seen at
//!   `kubectl apply` rather than as a crash-looping init container.
//! - `/validate`: objects of the mesh's API groups are decoded and validated as `meshctl
//!   validate` does; invalid -> `allowed: false` listing the field errors. Other kinds, and
//!   kinds of those groups the mesh does not serve, are allowed.

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use mesh_api::resource::{NETWORKING_GROUPS, SECURITY_GROUPS};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inject::Injector;
use crate::policy::NamespaceScope;
use crate::workload::{ObjectError, Outcome};

const VERSIONS: &[&str] = &["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A review the webhook cannot answer: HTTP 400 with this reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Kind {
    group: String,
    kind: String,
}

/// The fields of `AdmissionRequest` the webhooks read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    #[serde(default)]
    kind: Kind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    object: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<ByteString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
}

impl Response {
    fn allow(uid: &str) -> Response {
        Response {
            uid: uid.to_string(),
            allowed: true,
            patch_type: None,
            patch: None,
            status: None,
        }
    }

    fn deny(uid: &str, code: i32, reason: &str, message: String) -> Response {
        Response {
            uid: uid.to_string(),
            allowed: false,
            patch_type: None,
            patch: None,
            status: Some(Status {
                code: Some(code),
                message: Some(message),
                reason: Some(reason.to_string()),
                status: Some("Failure".into()),
                ..Default::default()
            }),
        }
    }
}

fn parse(body: &[u8]) -> Result<(String, Request), BadReview> {
    let review: Review = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("not an AdmissionReview: {e}")))?;
    if review.kind != "AdmissionReview" {
        return Err(BadReview(format!(
            "kind {:?}: expected AdmissionReview",
            review.kind
        )));
    }
    if !VERSIONS.contains(&review.api_version.as_str()) {
        return Err(BadReview(format!(
            "apiVersion {:?}: expected admission.k8s.io/v1",
            review.api_version
        )));
    }
    let request = review
        .request
        .ok_or_else(|| BadReview("AdmissionReview without a request".into()))?;
    if request.uid.is_empty() {
        return Err(BadReview("request.uid is empty".into()));
    }
    Ok((review.api_version, request))
}

fn reply(api_version: &str, response: Response) -> Vec<u8> {
    let review = serde_json::json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": response,
    });
    serde_json::to_vec(&review).unwrap_or_default()
}

/// What the inject webhook did, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectVerdict {
    Injected,
    Skipped(String),
    NotHandled,
    Refused(String),
}

/// `POST /inject`: the response body, or why the request is malformed.
pub fn inject(injector: &Injector, body: &[u8]) -> Result<(Vec<u8>, InjectVerdict), BadReview> {
    let (version, req) = parse(body)?;
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    if !is_pod || req.operation != "CREATE" || req.sub_resource.is_some() {
        return Ok((
            reply(&version, Response::allow(&req.uid)),
            InjectVerdict::NotHandled,
        ));
    }
    let Some(mut pod) = req.object.filter(Value::is_object) else {
        return Err(BadReview("Pod CREATE without an object".into()));
    };
    // The pod in a review may omit apiVersion/kind; the engine goes by kind.
    pod["kind"] = Value::String("Pod".into());
    let namespace = req.namespace.as_deref();
    let outcome = injector.inject_object(&pod, namespace, NamespaceScope::Selected);
    let (response, verdict) = match outcome {
        Ok(Outcome::Injected { patch, .. }) => {
            let bytes = serde_json::to_vec(&patch).unwrap_or_default();
            let response = Response {
                patch_type: Some("JSONPatch"),
                patch: Some(ByteString(bytes)),
                ..Response::allow(&req.uid)
            };
            (response, InjectVerdict::Injected)
        }
        Ok(Outcome::Skipped(why)) => (
            Response::allow(&req.uid),
            InjectVerdict::Skipped(why.to_string()),
        ),
        Ok(Outcome::NotHandled) => (Response::allow(&req.uid), InjectVerdict::NotHandled),
        Err(ObjectError::Malformed(m)) => return Err(BadReview(m)),
        Err(e) => {
            let msg = format!("sidecar injection failed: {e}");
            (
                Response::deny(&req.uid, 400, "BadRequest", msg.clone()),
                InjectVerdict::Refused(msg),
            )
        }
    };
    Ok((reply(&version, response), verdict))
}

/// `POST /validate`: the response body, or why the request is malformed. Also returns the
/// error lines when the object is refused.
pub fn validate(body: &[u8]) -> Result<(Vec<u8>, Vec<String>), BadReview> {
    let (version, req) = parse(body)?;
    let ours = NETWORKING_GROUPS
        .iter()
        .chain(SECURITY_GROUPS)
        .any(|g| *g == req.kind.group);
    let served = mesh_api::Kind::from_name(&req.kind.kind).is_some();
    let object = req.object.filter(Value::is_object);
    let (Some(mut object), true, true) = (object, ours, served) else {
        // Deletes carry no object; other groups and kinds are not the mesh's to judge.
        return Ok((reply(&version, Response::allow(&req.uid)), vec![]));
    };
    if let Some(ns) = req.namespace.filter(|n| !n.is_empty())
        && object.pointer("/metadata/namespace").is_none()
        && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("namespace".into(), Value::String(ns));
    }
    let errors: Vec<String> = match mesh_api::decode_value(object) {
        Ok(resource) => mesh_api::validate(&resource),
        Err(errors) => errors,
    }
    .iter()
    .map(ToString::to_string)
    .collect();
    let response = if errors.is_empty() {
        Response::allow(&req.uid)
    } else {
        let msg = format!("invalid {}: {}", req.kind.kind, errors.join("; "));
        Response::deny(&req.uid, 400, "BadRequest", msg)
    };
    Ok((reply(&version, response), errors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;
    use crate::values::Values;
    use serde_json::json;

    fn injector() -> Injector {
        Injector::new(Values::default(), Template::default_template()).unwrap()
    }

    fn review(kind: Value, operation: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": kind,
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop", "operation": operation, "object": object}
        }))
        .unwrap()
    }

    fn response(body: &[u8]) -> Value {
        serde_json::from_slice::<Value>(body).unwrap()["response"].clone()
    }

    #[test]
    fn malformed_reviews_are_bad_requests() {
        let inj = injector();
        for body in [
            &b"not json"[..],
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            br#"{"apiVersion":"v1","kind":"AdmissionReview","request":{"uid":"1"}}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{"uid":"1"}}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#,
        ] {
            assert!(inject(&inj, body).is_err(), "{}", String::from_utf8_lossy(body));
            assert!(validate(body).is_err());
        }
        let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
        assert!(inject(&inj, &review(pod_kind.clone(), "CREATE", json!(null))).is_err());
        let e = inject(
            &inj,
            &review(pod_kind, "CREATE", json!({"spec": {"containers": "x"}})),
        );
        assert!(e.unwrap_err().0.contains("not a pod spec"));
    }

    #[test]
    fn other_objects_and_operations_are_allowed_without_patch() {
        let inj = injector();
        let svc = review(
            json!({"group": "", "version": "v1", "kind": "Service"}),
            "CREATE",
            json!({}),
        );
        let (body, verdict) = inject(&inj, &svc).unwrap();
        assert_eq!(verdict, InjectVerdict::NotHandled);
        let r = response(&body);
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none());
        let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
        let del = review(pod_kind, "DELETE", json!(null));
        assert_eq!(inject(&inj, &del).unwrap().1, InjectVerdict::NotHandled);
    }

    #[test]
    fn bad_annotations_refuse_the_pod() {
        let pod = json!({"metadata": {"name": "p", "annotations": {
            "traffic.sidecar.istio.io/excludeOutboundPorts": "http"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]}});
        let body = review(
            json!({"group": "", "version": "v1", "kind": "Pod"}),
            "CREATE",
            pod,
        );
        let (out, verdict) = inject(&injector(), &body).unwrap();
        assert!(matches!(verdict, InjectVerdict::Refused(_)));
        let r = response(&out);
        assert_eq!(r["allowed"], false);
        assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert!(
            r["status"]["message"]
                .as_str()
                .unwrap()
                .contains("excludeOutboundPorts")
        );
    }

    #[test]
    fn validation() {
        let kind =
            json!({"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"});
        let vs = |weight: i64| {
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": weight}]}]}})
        };
        let (ok, errs) = validate(&review(kind.clone(), "CREATE", vs(20))).unwrap();
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(response(&ok)["allowed"], true);
        let (bad, errs) = validate(&review(kind.clone(), "UPDATE", vs(30))).unwrap();
        let r = response(&bad);
        assert_eq!(r["allowed"], false);
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(msg.contains("spec.http[0].route"), "{msg}");
        assert!(msg.contains("110"), "{msg}");
        assert_eq!(errs.len(), 1);
        // Unknown fields are errors too, as in meshctl validate.
        let mut typo = vs(20);
        typo["spec"]["hostz"] = json!([]);
        assert_eq!(
            response(&validate(&review(kind.clone(), "CREATE", typo)).unwrap().0)["allowed"],
            false
        );
        // Deletes, other groups, and kinds of the groups the mesh does not serve pass.
        assert_eq!(
            response(&validate(&review(kind, "DELETE", json!(null))).unwrap().0)["allowed"],
            true
        );
        let cm = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
        assert_eq!(
            response(
                &validate(&review(cm, "CREATE", json!({"data": 1})))
                    .unwrap()
                    .0
            )["allowed"],
            true
        );
        let ef =
            json!({"group": "networking.istio.io", "version": "v1alpha3", "kind": "EnvoyFilter"});
        assert_eq!(
            response(&validate(&review(ef, "CREATE", json!({}))).unwrap().0)["allowed"],
            true
        );
    }
}
