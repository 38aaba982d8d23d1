//! The Helm charts in `charts/`, rendered by Helm's own Go library (`charts/render.py` over the
//! helm-python-sdk package, no helm binary), with the default values and with each chart's
//! `ci/` values, and linted strictly. Every rendered manifest must parse into its k8s-openapi
//! type with nothing lost (an unknown or misplaced field fails), and the objects must fit
//! together: Services select the Deployments' pods on ports they listen on, webhooks call an
//! existing Service with the configured CA bundle and select exactly the pods the injector's
//! own policy injects, the injector accepts the rendered ConfigMap, and the probes it rewrites
//! are ones the proxy's health port can run. The CRDs must be structural, and Istio's own
//! valid configs must pass their schemas without a field being pruned.
//!
//! Needs a Python with helm-python-sdk: `target/charts-venv` (created by .ci/run), or the
//! interpreter named by MESH_HELM_PYTHON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, HTTPGetAction, PodSpec, Probe, Service, ServiceAccount,
    TCPSocketAction,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_injector::{Injector, NamespaceScope, policy};
use mesh_proxy::health::{self, Probers};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const NAMESPACE: &str = "mesh-system";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    let path = std::env::var_os("MESH_HELM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/charts-venv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: create it as .ci/run does (python3 -m venv target/charts-venv && \
         target/charts-venv/bin/pip install helm-python-sdk), or set MESH_HELM_PYTHON",
        path.display()
    );
    path
}

fn helm(action: &str, chart: &str, values: Option<&str>) -> String {
    let charts = root().join("charts");
    let mut cmd = Command::new(python());
    cmd.arg(charts.join("render.py"))
        .arg(action)
        .arg(charts.join(chart));
    if let Some(v) = values {
        cmd.arg(charts.join(chart).join(v));
    }
    let out = cmd.output().expect("run charts/render.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "render.py {action} {chart} {values:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// One rendered document and the template it came from.
struct Doc {
    template: String,
    value: Value,
}

fn render(chart: &str, values: Option<&str>) -> Vec<Doc> {
    let manifests: BTreeMap<String, String> =
        serde_json::from_str(&helm("render", chart, values)).expect("render.py prints JSON");
    let mut docs = Vec::new();
    for (template, text) in manifests {
        if template.ends_with("NOTES.txt") {
            continue;
        }
        let values = serde_saphyr::from_multiple::<Value>(&text)
            .unwrap_or_else(|e| panic!("{template}: not YAML: {e}\n{text}"));
        for value in values.into_iter().filter(|v| !v.is_null()) {
            docs.push(Doc {
                template: template.clone(),
                value,
            });
        }
    }
    assert!(!docs.is_empty(), "{chart} rendered nothing");
    docs
}

/// Deserializes into `T` and back; whatever the input has that the output lacks (an unknown
/// or misplaced field) or has differently is an error.
fn exact<T: DeserializeOwned + Serialize>(doc: &Doc) -> T {
    let name = format!(
        "{} {}/{}",
        doc.template,
        doc.value["kind"].as_str().unwrap_or("?"),
        doc.value["metadata"]["name"].as_str().unwrap_or("?")
    );
    let typed: T = serde_json::from_value(doc.value.clone())
        .unwrap_or_else(|e| panic!("{name}: does not parse: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    let mut problems = Vec::new();
    diff(&doc.value, &back, "", &mut problems);
    assert!(problems.is_empty(), "{name}:\n  {}", problems.join("\n  "));
    typed
}

fn diff(input: &Value, output: &Value, path: &str, problems: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    _ if v.is_null() => {}
                    None => problems.push(format!("{p}: unknown field")),
                    Some(w) => diff(v, w, &p, problems),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                diff(v, w, &format!("{path}[{i}]"), problems);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => problems.push(format!("{path}: {a} became {b}")),
    }
}

/// The typed objects of one rendering.
#[derive(Default)]
struct Manifests {
    crds: Vec<CustomResourceDefinition>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    service_accounts: Vec<ServiceAccount>,
    config_maps: Vec<ConfigMap>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    hpas: Vec<HorizontalPodAutoscaler>,
    pdbs: Vec<PodDisruptionBudget>,
    mutating: Vec<MutatingWebhookConfiguration>,
    validating: Vec<ValidatingWebhookConfiguration>,
}

fn parse(docs: &[Doc]) -> Manifests {
    let mut m = Manifests::default();
    for doc in docs {
        match doc.value["kind"].as_str().unwrap_or_default() {
            "CustomResourceDefinition" => m.crds.push(exact(doc)),
            "Deployment" => m.deployments.push(exact(doc)),
            "Service" => m.services.push(exact(doc)),
            "ServiceAccount" => m.service_accounts.push(exact(doc)),
            "ConfigMap" => m.config_maps.push(exact(doc)),
            "ClusterRole" => m.cluster_roles.push(exact(doc)),
            "ClusterRoleBinding" => m.cluster_role_bindings.push(exact(doc)),
            "HorizontalPodAutoscaler" => m.hpas.push(exact(doc)),
            "PodDisruptionBudget" => m.pdbs.push(exact(doc)),
            "MutatingWebhookConfiguration" => m.mutating.push(exact(doc)),
            "ValidatingWebhookConfiguration" => m.validating.push(exact(doc)),
            other => panic!("{}: unexpected kind {other:?}", doc.template),
        }
    }
    m
}

fn named<'a, T>(items: &'a [T], name: &str, meta: impl Fn(&T) -> &ObjectMeta) -> &'a T {
    items
        .iter()
        .find(|i| meta(i).name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{name} was not rendered"))
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().unwrap()
}

fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    let t = &d.spec.template;
    t.metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap_or_default()
}

/// Kubernetes label-selector semantics.
fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = sel.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            op => panic!("unknown selector operator {op}"),
        }
    });
    by_labels && by_expressions
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The base chart: CRDs.

const NETWORKING_KINDS: &[&str] = &[
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "WorkloadEntry",
    "WorkloadGroup",
    "Sidecar",
    "Gateway",
];
const SECURITY_KINDS: &[&str] = &[
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
];
/// The mesh's own kinds: in its networking group only, at their own version.
const MESH_ONLY_KINDS: &[(&str, &str)] = &[("LocalRateLimit", "v1alpha1")];

fn mesh_networking_kinds() -> Vec<&'static str> {
    NETWORKING_KINDS
        .iter()
        .copied()
        .chain(MESH_ONLY_KINDS.iter().map(|(k, _)| *k))
        .collect()
}

/// A schema the API server accepts as structural: every node typed (or int-or-string, or
/// explicitly open), every object with known fields or an explicit opening, every array
/// with an item schema.
fn structural(s: &JSONSchemaProps, path: &str, errors: &mut Vec<String>) {
    let open = s.x_kubernetes_preserve_unknown_fields == Some(true);
    match s.type_.as_deref() {
        None if s.x_kubernetes_int_or_string == Some(true) || open => {}
        None => errors.push(format!("{path}: no type")),
        Some("object") => {
            if s.properties.is_none() && s.additional_properties.is_none() && !open {
                errors.push(format!("{path}: object without properties"));
            }
        }
        Some("array") => {
            if !matches!(s.items, Some(JSONSchemaPropsOrArray::Schema(_))) {
                errors.push(format!("{path}: array without one item schema"));
            }
        }
        Some("string" | "integer" | "number" | "boolean") => {}
        Some(t) => errors.push(format!("{path}: unknown type {t}")),
    }
    for (k, p) in s.properties.iter().flatten() {
        structural(p, &format!("{path}.{k}"), errors);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(a)) = &s.additional_properties {
        structural(a, &format!("{path}.*"), errors);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(i)) = &s.items {
        structural(i, &format!("{path}[]"), errors);
    }
}

/// What the API server would do with `v` under schema `s`: a wrong type, a value outside the
/// enum, a missing required field, or a field it would prune is an error.
fn validate(v: &Value, s: &JSONSchemaProps, path: &str, errors: &mut Vec<String>) {
    let open = s.x_kubernetes_preserve_unknown_fields == Some(true);
    if let Some(allowed) = &s.enum_
        && !allowed.iter().any(|a| a.0 == *v)
    {
        errors.push(format!("{path}: {v} is not one of the enum values"));
    }
    match (s.type_.as_deref(), v) {
        (_, Value::Null) if s.nullable == Some(true) => {}
        (None, _) if open || s.x_kubernetes_int_or_string == Some(true) => {}
        (Some("object"), Value::Object(fields)) => {
            for r in s.required.iter().flatten() {
                if !fields.contains_key(r) {
                    errors.push(format!("{path}.{r}: required"));
                }
            }
            for (k, x) in fields {
                let p = format!("{path}.{k}");
                match (
                    s.properties.as_ref().and_then(|p| p.get(k)),
                    &s.additional_properties,
                ) {
                    (Some(schema), _) => validate(x, schema, &p, errors),
                    (None, Some(JSONSchemaPropsOrBool::Schema(schema))) => {
                        validate(x, schema, &p, errors)
                    }
                    _ if open => {}
                    _ => errors.push(format!("{p}: not in the schema (would be pruned)")),
                }
            }
        }
        (Some("array"), Value::Array(items)) => {
            if let Some(JSONSchemaPropsOrArray::Schema(schema)) = &s.items {
                for (i, x) in items.iter().enumerate() {
                    validate(x, schema, &format!("{path}[{i}]"), errors);
                }
            }
        }
        (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => {}
        (Some("number"), Value::Number(_)) => {}
        (Some("integer"), Value::Number(n)) if n.is_i64() || n.is_u64() => {
            let n = n.as_f64().unwrap();
            if s.minimum.is_some_and(|m| n < m) || s.maximum.is_some_and(|m| n > m) {
                errors.push(format!("{path}: {n} out of range"));
            }
        }
        (t, v) => errors.push(format!("{path}: {v} is not of type {t:?}")),
    }
}

/// The CRDs by `kind` for one group, each checked for versions and schema.
fn crds_of_group<'a>(
    crds: &'a [CustomResourceDefinition],
    group: &str,
) -> BTreeMap<String, &'a CustomResourceDefinition> {
    let mut by_kind = BTreeMap::new();
    for crd in crds.iter().filter(|c| c.spec.group == group) {
        let kind = crd.spec.names.kind.clone();
        let name = crd.metadata.name.clone().unwrap_or_default();
        assert_eq!(name, format!("{}.{group}", crd.spec.names.plural));
        assert_eq!(crd.spec.scope, "Namespaced", "{name}");
        let versions: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        let own_version = MESH_ONLY_KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| *v);
        let want: &[&str] = if let Some(v) = &own_version {
            assert_eq!(
                group, "networking.mesh.dev",
                "{name}: the mesh's own group only"
            );
            std::slice::from_ref(v)
        } else if group.starts_with("security.") {
            &["v1", "v1beta1"]
        } else {
            &["v1", "v1beta1", "v1alpha3"]
        };
        assert_eq!(versions, want, "{name}: versions");
        let stored: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            stored,
            [own_version.unwrap_or("v1")],
            "{name}: exactly one stored version"
        );
        for v in &crd.spec.versions {
            assert!(v.served, "{name} {}: not served", v.name);
            let schema = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap_or_else(|| panic!("{name} {}: no schema", v.name));
            let mut errors = Vec::new();
            structural(schema, "", &mut errors);
            assert!(errors.is_empty(), "{name} {}: {errors:#?}", v.name);
            let spec = &schema.properties.as_ref().unwrap()["spec"];
            let fields = spec.properties.as_ref().expect("spec has typed fields");
            for (field, s) in fields {
                assert!(
                    s.type_.is_some(),
                    "{name} {}: spec.{field} is untyped",
                    v.name
                );
            }
            assert_eq!(schema.required.as_deref(), Some(&["spec".to_string()][..]));
            assert!(v.subresources.as_ref().is_some_and(|s| s.status.is_some()));
        }
        assert!(by_kind.insert(kind, crd).is_none(), "{name}: kind twice");
    }
    by_kind
}

fn expect_kinds(by_kind: &BTreeMap<String, &CustomResourceDefinition>, kinds: &[&str]) {
    let have: BTreeSet<&str> = by_kind.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = kinds.iter().copied().collect();
    assert_eq!(have, want);
}

#[test]
fn base_chart_default_installs_the_mesh_groups_only() {
    let m = parse(&render("base", None));
    assert_eq!(m.crds.len(), 11);
    expect_kinds(
        &crds_of_group(&m.crds, "networking.mesh.dev"),
        &mesh_networking_kinds(),
    );
    expect_kinds(&crds_of_group(&m.crds, "security.mesh.dev"), SECURITY_KINDS);
    for crd in &m.crds {
        let ann = crd.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            ann.get("helm.sh/resource-policy").map(String::as_str),
            Some("keep")
        );
    }
}

#[test]
fn base_chart_with_istio_group() {
    let m = parse(&render("base", Some("ci/istio-values.yaml")));
    assert_eq!(m.crds.len(), 21);
    expect_kinds(
        &crds_of_group(&m.crds, "networking.mesh.dev"),
        &mesh_networking_kinds(),
    );
    expect_kinds(
        &crds_of_group(&m.crds, "networking.istio.io"),
        NETWORKING_KINDS,
    );
    for group in ["security.mesh.dev", "security.istio.io"] {
        expect_kinds(&crds_of_group(&m.crds, group), SECURITY_KINDS);
    }
    for crd in &m.crds {
        let labels = crd.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("platform"));
        assert!(crd.metadata.annotations.is_none());
    }
}

/// Istio's own samples and valid test configs pass the CRD schemas unpruned.
#[test]
fn istio_configs_pass_the_crd_schemas() {
    let m = parse(&render("base", Some("ci/istio-values.yaml")));
    let mut schemas = BTreeMap::new();
    for group in [
        "networking.istio.io",
        "security.istio.io",
        "networking.mesh.dev",
        "security.mesh.dev",
    ] {
        for (kind, crd) in crds_of_group(&m.crds, group) {
            for v in &crd.spec.versions {
                let s = v.schema.clone().unwrap().open_api_v3_schema.unwrap();
                schemas.insert(format!("{group}/{}/{kind}", v.name), s);
            }
        }
    }
    let conformance = root().join("tests/conformance/istio");
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [
        "samples/bookinfo/networking",
        "pkg/config/validation/testdata/crds",
    ] {
        let entries = std::fs::read_dir(conformance.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e} (conformance data next to the checkout)"));
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".yaml") && !name.contains("-invalid")
        }));
    }
    files.sort();
    let mut checked = BTreeMap::<String, usize>::new();
    let mut errors = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            let (Some(api), Some(kind)) = (doc["apiVersion"].as_str(), doc["kind"].as_str()) else {
                continue;
            };
            let Some(schema) = schemas.get(&format!("{api}/{kind}")) else {
                continue; // kinds the mesh does not serve (EnvoyFilter, Telemetry, ...)
            };
            let mut object = doc.clone();
            let object = object.as_object_mut().unwrap();
            for envelope in ["apiVersion", "kind", "metadata"] {
                object.remove(envelope);
            }
            let at = format!(
                "{} {kind}/{}",
                file.file_name().unwrap().to_string_lossy(),
                doc["metadata"]["name"].as_str().unwrap_or("?")
            );
            validate(&Value::Object(object.clone()), schema, &at, &mut errors);
            *checked.entry(kind.to_string()).or_default() += 1;
        }
    }
    // `addresses: [1.2.3.4, 001:db8::]` is a string to go-yaml, which Istio's test reads it
    // with; under YAML 1.2's flow rules (`:` before `]`) it is a one-key mapping.
    let yaml_1_2_reading = "serviceentry-valid.yaml ServiceEntry/full.spec.addresses[1]:";
    errors.retain(|e| !e.starts_with(yaml_1_2_reading));
    assert!(errors.is_empty(), "{errors:#?}");
    for kind in [
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "AuthorizationPolicy",
        "PeerAuthentication",
        "RequestAuthentication",
        "WorkloadEntry",
        "WorkloadGroup",
    ] {
        assert!(
            checked.get(kind).is_some_and(|n| *n > 0),
            "no {kind} checked: {checked:?}"
        );
    }

    // And the schemas do reject: a misspelt field, a wrong type, a value outside an enum.
    let vs = &schemas["networking.mesh.dev/v1/VirtualService"];
    let se = &schemas["networking.mesh.dev/v1/ServiceEntry"];
    for (schema, bad) in [
        (vs, serde_json::json!({"spec": {"hosts": ["a"], "htp": []}})),
        (vs, serde_json::json!({"spec": {"hosts": "a"}})),
        (
            se,
            serde_json::json!({"spec": {"hosts": ["a"], "resolution": "MAGIC"}}),
        ),
        (se, serde_json::json!({"spec": {"ports": [{"number": 80}]}})),
    ] {
        let mut errors = Vec::new();
        validate(&bad, schema, "", &mut errors);
        assert!(!errors.is_empty(), "{bad} passed");
    }

    // The mesh's LocalRateLimit: the README's example passes, a unit it lacks does not.
    let lrl = &schemas["networking.mesh.dev/v1alpha1/LocalRateLimit"];
    let good = serde_json::json!({"spec": {
        "workloadSelector": {"matchLabels": {"app": "reviews"}},
        "requestsPerUnit": 100, "unit": "MINUTE", "burst": 150,
        "routes": [{"name": "login", "requestsPerUnit": 5,
            "match": [{"uri": {"prefix": "/login"}, "method": {"exact": "POST"}}]}]
    }});
    let mut errors = Vec::new();
    validate(&good, lrl, "", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
    for bad in [
        serde_json::json!({"spec": {"requestsPerUnit": 1, "unit": "DAY"}}),
        serde_json::json!({"spec": {"requestsPerUnit": 1, "unit": "SECOND", "bursts": 2}}),
    ] {
        let mut errors = Vec::new();
        validate(&bad, lrl, "", &mut errors);
        assert!(!errors.is_empty(), "{bad} passed");
    }
}

// ---------------------------------------------------------------------------------------
// The mesh chart: control plane.

/// What a rendering of the mesh chart is expected to have, by values file.
struct Expect {
    values: Option<&'static str>,
    image_prefix: &'static str,
    trust_domain: &'static str,
    ca_bundle: Option<Vec<u8>>,
    pilot_autoscaled: bool,
    native_sidecars: bool,
    rewrite_probes: bool,
    validates_istio_groups: bool,
    pdbs: &'static [&'static str],
    /// The ingress gateway (`gateway.enabled`).
    gateway: bool,
    /// The namespace of the Grafana dashboards' ConfigMap (`grafana.dashboards.enabled`).
    dashboards_namespace: Option<&'static str>,
}

const GATEWAY: &str = "mesh-ingressgateway";

/// The binary a Deployment runs: the gateway is the proxy in its gateway role.
fn binary_of(deployment: &str) -> &str {
    if deployment == GATEWAY {
        "mesh-proxy"
    } else {
        deployment
    }
}

fn ci_ca_bundle() -> Vec<u8> {
    let text = std::fs::read_to_string(root().join("charts/mesh/ci/custom-values.yaml")).unwrap();
    let values: Value = serde_saphyr::from_str(&text).unwrap();
    let b64 = values["injector"]["caBundle"].as_str().unwrap().to_string();
    // Decoded the way the API server decodes caBundle (base64 bytes).
    let bytes: k8s_openapi::ByteString = serde_json::from_value(Value::String(b64)).unwrap();
    bytes.0
}

fn expectations() -> [Expect; 2] {
    [
        Expect {
            values: None,
            image_prefix: "ghcr.io/mesh-dev/",
            trust_domain: "cluster.local",
            ca_bundle: None,
            pilot_autoscaled: true,
            native_sidecars: true,
            rewrite_probes: true,
            validates_istio_groups: false,
            pdbs: &["mesh-pilot", "mesh-citadel", "mesh-injector"],
            gateway: false,
            dashboards_namespace: None,
        },
        Expect {
            values: Some("ci/custom-values.yaml"),
            image_prefix: "registry.example.test/mesh/",
            trust_domain: "prod.example.test",
            ca_bundle: Some(ci_ca_bundle()),
            pilot_autoscaled: false,
            native_sidecars: false,
            rewrite_probes: false,
            validates_istio_groups: true,
            pdbs: &["mesh-pilot", "mesh-citadel"],
            gateway: true,
            dashboards_namespace: Some("monitoring"),
        },
    ]
}

#[test]
fn charts_lint_clean() {
    helm("lint", "base", None);
    helm("lint", "base", Some("ci/istio-values.yaml"));
    helm("lint", "mesh", None);
    helm("lint", "mesh", Some("ci/custom-values.yaml"));
}

#[test]
fn mesh_chart_objects_fit_together() {
    for e in expectations() {
        let m = parse(&render("mesh", e.values));
        let ctx = e.values.unwrap_or("default values");
        check_deployments(&m, &e, ctx);
        check_services(&m, &e, ctx);
        check_gateway(&m, &e, ctx);
        check_rbac(&m, ctx);
        check_autoscaling(&m, &e, ctx);
        check_webhooks(&m, &e, ctx);
        check_dashboards(&m, &e, ctx);
    }
}

/// The Grafana dashboards go into a ConfigMap for Grafana's sidecar, byte for byte, only
/// when asked for.
fn check_dashboards(m: &Manifests, e: &Expect, ctx: &str) {
    let found: Vec<&ConfigMap> = m
        .config_maps
        .iter()
        .filter(|c| c.metadata.name.as_deref() == Some("mesh-grafana-dashboards"))
        .collect();
    let Some(namespace) = e.dashboards_namespace else {
        assert!(found.is_empty(), "{ctx}: dashboards are off by default");
        return;
    };
    assert_eq!(found.len(), 1, "{ctx}: one dashboards ConfigMap");
    let cm = found[0];
    assert_eq!(cm.metadata.namespace.as_deref(), Some(namespace), "{ctx}");
    let labels = cm.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("grafana_dashboard").map(String::as_str),
        Some("1"),
        "{ctx}: Grafana's sidecar label"
    );
    let file = root().join("charts/mesh/dashboards/mesh-service-dashboard.json");
    let expected = std::fs::read_to_string(&file).unwrap();
    let data = cm.data.clone().unwrap_or_default();
    assert_eq!(
        data.get("mesh-service-dashboard.json")
            .map(|d| d.trim_end()),
        Some(expected.trim_end()),
        "{ctx}: the dashboard as in {}",
        file.display()
    );
}

fn check_deployments(m: &Manifests, e: &Expect, ctx: &str) {
    let names: BTreeSet<_> = m
        .deployments
        .iter()
        .map(|d| d.metadata.name.clone().unwrap())
        .collect();
    let mut want = BTreeSet::from([
        "mesh-pilot".to_string(),
        "mesh-citadel".into(),
        "mesh-injector".into(),
    ]);
    if e.gateway {
        want.insert(GATEWAY.into());
    }
    assert_eq!(names, want, "{ctx}");
    for d in &m.deployments {
        let name = d.metadata.name.as_deref().unwrap();
        let spec = &d.spec;
        assert!(
            selects(&spec.selector, &pod_labels(d)),
            "{ctx} {name}: selector does not match its pods"
        );
        assert_eq!(
            pod_labels(d)
                .get("sidecar.istio.io/inject")
                .map(String::as_str),
            Some("false"),
            "{ctx} {name}: control plane must not be injected"
        );
        let pod = pod_spec(d);
        let sa = pod.service_account_name.as_deref().unwrap();
        named(&m.service_accounts, sa, |s| &s.metadata);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true), "{ctx} {name}");
        assert!(psc.run_as_user.is_some_and(|u| u != 0), "{ctx} {name}");
        for c in &pod.containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{ctx} {name}");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{ctx} {name}");
            let drop = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
            assert_eq!(drop, Some(vec!["ALL".to_string()]), "{ctx} {name}");
            let image = c.image.as_deref().unwrap();
            assert!(
                image.starts_with(&format!("{}{}:", e.image_prefix, binary_of(name))),
                "{ctx} {name}: image {image}"
            );
            assert!(
                c.readiness_probe.is_some(),
                "{ctx} {name}: no readiness probe"
            );
        }
        // Every ConfigMap a pod mounts is part of the chart, but the root certificate that
        // citadel publishes in every namespace.
        for v in pod.volumes.iter().flatten() {
            if let Some(cm) = &v.config_map
                && cm.name != "mesh-ca-root-cert"
            {
                named(&m.config_maps, &cm.name, |c| &c.metadata);
            }
        }
    }
    let citadel = pod_spec(named(&m.deployments, "mesh-citadel", |d| &d.metadata));
    let args = citadel.containers[0].args.clone().unwrap();
    let svc = format!("mesh-citadel.{NAMESPACE}.svc");
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--server-name" && w[1] == svc),
        "{ctx}: {args:?}"
    );
    let injector = pod_spec(named(&m.deployments, "mesh-injector", |d| &d.metadata));
    assert_eq!(
        injector.automount_service_account_token,
        Some(false),
        "{ctx}"
    );
    // Pilot names identities and citadel signs them in the same trust domain.
    for name in ["mesh-pilot", "mesh-citadel"] {
        let pod = pod_spec(named(&m.deployments, name, |d| &d.metadata));
        let args = pod.containers[0].args.clone().unwrap();
        let domain = args.windows(2).find(|w| w[0] == "--trust-domain");
        assert_eq!(
            domain.map(|w| w[1].as_str()),
            Some(e.trust_domain),
            "{ctx} {name}"
        );
    }
}

/// The gateway Deployment is the proxy in its gateway role, selected by Istio's gateway
/// label, reaching pilot and citadel at their Services, each Service port mapped to the pod
/// port its listener binds; certificate Secrets are mounted as files.
fn check_gateway(m: &Manifests, e: &Expect, ctx: &str) {
    if !e.gateway {
        assert!(
            m.deployments
                .iter()
                .all(|d| d.metadata.name.as_deref() != Some(GATEWAY))
        );
        return;
    }
    let d = named(&m.deployments, GATEWAY, |d| &d.metadata);
    assert_eq!(
        pod_labels(d).get("istio").map(String::as_str),
        Some("ingressgateway"),
        "{ctx}: Istio's Gateways select istio: ingressgateway"
    );
    let pod = pod_spec(d);
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert!(args.contains(&"--gateway".to_string()), "{ctx}: {args:?}");
    let svc = named(&m.services, GATEWAY, |s| &s.metadata);
    for (port, target) in service_ports(svc) {
        let mapping = format!("{port}=0.0.0.0:{target}");
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--gateway-port" && w[1] == mapping),
            "{ctx}: {mapping} not in {args:?}"
        );
    }
    let discovery = args
        .windows(2)
        .find(|w| w[0] == "--discovery-addr")
        .unwrap();
    assert_eq!(
        discovery[1],
        format!("http://mesh-pilot.{NAMESPACE}.svc:15010"),
        "{ctx}"
    );
    let env: BTreeMap<String, String> = c
        .env
        .iter()
        .flatten()
        .filter_map(|v| Some((v.name.clone(), v.value.clone()?)))
        .collect();
    assert_eq!(
        env["CA_ADDR"],
        format!("mesh-citadel.{NAMESPACE}.svc:15012"),
        "{ctx}"
    );
    assert_eq!(env["TRUST_DOMAIN"], e.trust_domain, "{ctx}");
    let mounts: BTreeMap<String, String> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), v.mount_path.clone()))
        .collect();
    assert_eq!(
        mounts["cert-bookinfo"], "/etc/mesh/gateway-certs/bookinfo",
        "{ctx}"
    );
    let secret = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "cert-bookinfo")
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.clone());
    assert_eq!(secret.as_deref(), Some("bookinfo-credential"), "{ctx}");
    // Secrets named by credentialName: one folder each in the directory the gateway reads.
    let credential_dir = args.windows(2).find(|w| w[0] == "--credential-dir");
    assert_eq!(
        credential_dir.map(|w| w[1].as_str()),
        Some("/etc/mesh/gateway-credentials"),
        "{ctx}: {args:?}"
    );
    for (i, name) in ["shop-credential", "shop-credential-cacert"]
        .iter()
        .enumerate()
    {
        let volume = format!("credential-{i}");
        assert_eq!(
            mounts[&volume],
            format!("/etc/mesh/gateway-credentials/{name}"),
            "{ctx}"
        );
        let secret = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .and_then(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.clone());
        assert_eq!(secret.as_deref(), Some(*name), "{ctx}");
    }
    assert_eq!(
        svc.spec.as_ref().unwrap().type_.as_deref(),
        Some("LoadBalancer"),
        "{ctx}"
    );
}

/// The container ports of the pods a Service selects.
fn selected_ports(m: &Manifests, svc: &Service) -> Vec<ContainerPort> {
    let selector = svc.spec.as_ref().unwrap().selector.clone().unwrap();
    let pods: Vec<&Deployment> = m
        .deployments
        .iter()
        .filter(|d| {
            let labels = pod_labels(d);
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    assert_eq!(
        pods.len(),
        1,
        "{:?} selects {} Deployments",
        svc.metadata.name,
        pods.len()
    );
    pod_spec(pods[0])
        .containers
        .iter()
        .flat_map(|c| c.ports.clone().unwrap_or_default())
        .collect()
}

fn service_ports(svc: &Service) -> BTreeMap<i32, i32> {
    let mut ports = BTreeMap::new();
    for p in svc.spec.as_ref().unwrap().ports.iter().flatten() {
        let target = match &p.target_port {
            Some(IntOrString::Int(t)) => *t,
            other => panic!("{:?}: targetPort {other:?}", svc.metadata.name),
        };
        ports.insert(p.port, target);
    }
    ports
}

fn check_services(m: &Manifests, e: &Expect, ctx: &str) {
    let mut want: Vec<(&str, &[(i32, i32)])> = vec![
        ("mesh-pilot", &[(15010, 15010), (15014, 15014)]),
        ("mesh-citadel", &[(15012, 15012)]),
        ("mesh-injector", &[(443, 15017)]),
    ];
    if e.gateway {
        want.push((GATEWAY, &[(80, 8080), (443, 8443)]));
    }
    assert_eq!(m.services.len(), want.len(), "{ctx}");
    for (name, ports) in want {
        let svc = named(&m.services, name, |s| &s.metadata);
        assert_eq!(
            service_ports(svc),
            ports.iter().copied().collect::<BTreeMap<_, _>>(),
            "{ctx} {name}"
        );
        let listening: BTreeSet<i32> = selected_ports(m, svc)
            .iter()
            .map(|p| p.container_port)
            .collect();
        for (_, target) in ports {
            assert!(
                listening.contains(target),
                "{ctx} {name}: nothing on {target}"
            );
        }
    }
    // The addresses the components are told match the Services.
    let pilot = pod_spec(named(&m.deployments, "mesh-pilot", |d| &d.metadata));
    let args = pilot.containers[0].args.clone().unwrap();
    assert!(
        args.contains(&"0.0.0.0:15010".to_string()),
        "{ctx}: {args:?}"
    );
    assert!(
        args.contains(&"0.0.0.0:15014".to_string()),
        "{ctx}: {args:?}"
    );
    let injector = pod_spec(named(&m.deployments, "mesh-injector", |d| &d.metadata));
    let args = injector.containers[0].args.clone().unwrap();
    assert!(
        args.contains(&"0.0.0.0:15017".to_string()),
        "{ctx}: {args:?}"
    );
}

fn check_rbac(m: &Manifests, ctx: &str) {
    let rules = |name: &str| {
        let role = named(&m.cluster_roles, name, |r| &r.metadata);
        let binding = named(&m.cluster_role_bindings, name, |r| &r.metadata);
        assert_eq!(binding.role_ref.name, name);
        let subject = &binding.subjects.as_ref().unwrap()[0];
        assert_eq!(subject.namespace.as_deref(), Some(NAMESPACE));
        named(&m.service_accounts, &subject.name, |s| &s.metadata);
        role.rules.clone().unwrap_or_default()
    };
    let pilot = rules(&format!("mesh-pilot-{NAMESPACE}"));
    for rule in &pilot {
        assert_eq!(
            rule.verbs,
            ["get", "list", "watch"],
            "{ctx}: pilot only reads"
        );
    }
    let pilot_resources: BTreeSet<String> = pilot
        .iter()
        .flat_map(|r| r.resources.clone().unwrap_or_default())
        .collect();
    for r in ["services", "pods", "namespaces", "endpointslices"] {
        assert!(pilot_resources.contains(r), "{ctx}: pilot cannot read {r}");
    }
    assert!(!pilot_resources.contains("secrets"), "{ctx}");
    let citadel = rules(&format!("mesh-citadel-{NAMESPACE}"));
    let can = |resource: &str, verb: &str| {
        citadel.iter().any(|r| {
            r.resources.iter().flatten().any(|x| x == resource) && r.verbs.iter().any(|v| v == verb)
        })
    };
    assert!(can("tokenreviews", "create"), "{ctx}");
    assert!(
        can("configmaps", "create") && can("configmaps", "update"),
        "{ctx}"
    );
    assert!(!can("secrets", "get"), "{ctx}");
    // The injector reads no API: no role names its service account.
    assert_eq!(m.cluster_roles.len(), 2, "{ctx}");
    for b in &m.cluster_role_bindings {
        for s in b.subjects.iter().flatten() {
            assert_ne!(s.name, "mesh-injector", "{ctx}");
        }
    }
}

fn check_autoscaling(m: &Manifests, e: &Expect, ctx: &str) {
    let pilot = named(&m.deployments, "mesh-pilot", |d| &d.metadata);
    if e.pilot_autoscaled {
        assert_eq!(m.hpas.len(), 1, "{ctx}");
        let hpa = &m.hpas[0].spec;
        assert_eq!(hpa.scale_target_ref.kind, "Deployment");
        assert_eq!(hpa.scale_target_ref.name, "mesh-pilot");
        assert!(hpa.max_replicas >= hpa.min_replicas.unwrap_or(1));
        // The autoscaler owns the replica count.
        assert_eq!(pilot.spec.replicas, None, "{ctx}");
    } else {
        assert!(m.hpas.is_empty(), "{ctx}");
        assert_eq!(pilot.spec.replicas, Some(3), "{ctx}");
    }
    let pdbs: BTreeSet<String> = m
        .pdbs
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        pdbs,
        e.pdbs.iter().map(|s| s.to_string()).collect(),
        "{ctx}"
    );
    for pdb in &m.pdbs {
        let name = pdb.metadata.name.as_deref().unwrap();
        let sel = pdb.spec.as_ref().unwrap().selector.as_ref().unwrap();
        let d = named(&m.deployments, name, |d| &d.metadata);
        assert!(
            selects(sel, &pod_labels(d)),
            "{ctx} {name}: PDB selects no pod"
        );
    }
}

fn check_client(m: &Manifests, e: &Expect, c: &WebhookClientConfig, path: &str, ctx: &str) {
    assert_eq!(c.url, None, "{ctx}");
    let s = c.service.as_ref().expect("calls a Service");
    assert_eq!(s.namespace, NAMESPACE, "{ctx}");
    assert_eq!(s.path.as_deref(), Some(path), "{ctx}");
    let svc = named(&m.services, &s.name, |s| &s.metadata);
    let ports = service_ports(svc);
    assert!(
        ports.contains_key(&s.port.unwrap_or(443)),
        "{ctx}: webhook port"
    );
    assert_eq!(
        c.ca_bundle.as_ref().map(|b| b.0.clone()),
        e.ca_bundle,
        "{ctx}"
    );
    if let Some(pem) = &e.ca_bundle {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem).expect("caBundle is PEM");
        pem.parse_x509().expect("caBundle is a certificate");
    }
}

fn check_webhooks(m: &Manifests, e: &Expect, ctx: &str) {
    assert_eq!(m.mutating.len(), 1, "{ctx}");
    let hooks = m.mutating[0].webhooks.clone().unwrap();
    for h in &hooks {
        check_client(m, e, &h.client_config, "/inject", ctx);
        assert_eq!(h.side_effects, "None");
        assert_eq!(h.admission_review_versions, ["v1"]);
        let rule = &h.rules.as_ref().unwrap()[0];
        assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
        assert_eq!(
            rule.operations.as_deref(),
            Some(&["CREATE".to_string()][..])
        );
    }
    assert_eq!(m.validating.len(), 1, "{ctx}");
    let v = &m.validating[0].webhooks.as_ref().unwrap()[0];
    check_client(m, e, &v.client_config, "/validate", ctx);
    let groups = v.rules.as_ref().unwrap()[0].api_groups.clone().unwrap();
    assert!(groups.contains(&"networking.mesh.dev".to_string()), "{ctx}");
    assert_eq!(
        groups.contains(&"networking.istio.io".to_string()),
        e.validates_istio_groups,
        "{ctx}"
    );
    check_injection_selection(m, &hooks, ctx);
}

/// The webhooks send a pod to the injector exactly when the injector's own policy injects
/// it, and never twice.
fn check_injection_selection(
    m: &Manifests,
    hooks: &[k8s_openapi::api::admissionregistration::v1::MutatingWebhook],
    ctx: &str,
) {
    let injector = injector_from_chart(m);
    let namespaces: &[(&str, &[(&str, &str)])] = &[
        ("apps", &[("istio-injection", "enabled")]),
        ("apps", &[("mesh.dev/injection", "enabled")]),
        (
            "apps",
            &[
                ("mesh.dev/injection", "enabled"),
                ("istio-injection", "enabled"),
            ],
        ),
        ("apps", &[("istio-injection", "disabled")]),
        (
            "apps",
            &[
                ("mesh.dev/injection", "disabled"),
                ("istio-injection", "enabled"),
            ],
        ),
        ("apps", &[]),
        ("kube-system", &[("istio-injection", "enabled")]),
        (NAMESPACE, &[("istio-injection", "enabled")]),
    ];
    let pods: &[&[(&str, &str)]] = &[
        &[],
        &[("sidecar.istio.io/inject", "true")],
        &[("sidecar.istio.io/inject", "false")],
        &[("sidecar.mesh.dev/inject", "true")],
        &[("sidecar.mesh.dev/inject", "false")],
        &[
            ("sidecar.mesh.dev/inject", "true"),
            ("sidecar.istio.io/inject", "true"),
        ],
        &[("app", "reviews")],
    ];
    let mut injected = 0;
    for (ns, ns_labels) in namespaces {
        let mut ns_labels = map(ns_labels);
        ns_labels.insert("kubernetes.io/metadata.name".into(), ns.to_string());
        for pod_labels in pods {
            let labels = map(pod_labels);
            let sent = hooks
                .iter()
                .filter(|h| {
                    h.namespace_selector
                        .as_ref()
                        .is_none_or(|s| selects(s, &ns_labels))
                        && h.object_selector
                            .as_ref()
                            .is_none_or(|s| selects(s, &labels))
                })
                .count();
            let meta = ObjectMeta {
                labels: Some(labels.clone()),
                ..Default::default()
            };
            let spec = PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let decided = policy::decide(
                &meta,
                &spec,
                ns,
                NamespaceScope::Labels(&ns_labels),
                injector.values(),
            );
            assert!(
                sent <= 1,
                "{ctx}: {ns} {ns_labels:?} pod {labels:?} sent {sent} times"
            );
            assert_eq!(
                sent == 1,
                decided.is_ok(),
                "{ctx}: namespace {ns} {ns_labels:?}, pod {labels:?}: webhook sends = {}, injector policy = {decided:?}",
                sent == 1
            );
            injected += sent;
        }
    }
    assert!(
        injected >= 10,
        "{ctx}: the matrix injects too little to mean much"
    );
}

/// The injector as the chart configures it: the rendered ConfigMap, loaded the way
/// `meshctl kube-inject` and the webhook load it.
fn injector_from_chart(m: &Manifests) -> Injector {
    let cm = named(&m.config_maps, "mesh-sidecar-injector", |c| &c.metadata);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("configmap.yaml");
    std::fs::write(&path, serde_json::to_string(cm).unwrap()).unwrap();
    mesh_injector::config::load(&mesh_injector::config::Sources {
        configmap: Some(&path),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("the injector rejects the chart's ConfigMap: {e}"))
}

#[test]
fn injector_configmap_drives_injection_the_proxy_understands() {
    for e in expectations() {
        let ctx = e.values.unwrap_or("default values");
        let m = parse(&render("mesh", e.values));
        let cm = named(&m.config_maps, "mesh-sidecar-injector", |c| &c.metadata);
        let data = cm.data.clone().unwrap();
        if e.values.is_none() {
            let built_in =
                std::fs::read_to_string(root().join("injector/template/sidecar.yaml")).unwrap();
            assert_eq!(
                data["template"].trim_end(),
                built_in.trim_end(),
                "charts/mesh/files/sidecar-template.yaml differs from injector/template/sidecar.yaml"
            );
        }
        let injector = injector_from_chart(&m);
        let v = injector.values();
        assert_eq!(v.mesh_namespace, NAMESPACE, "{ctx}");
        assert_eq!(v.trust_domain, e.trust_domain, "{ctx}");
        assert!(
            v.proxy_image
                .starts_with(&format!("{}mesh-proxy:", e.image_prefix)),
            "{ctx}"
        );
        // The proxies are pointed at the Services the chart creates, on their ports.
        assert_eq!(
            v.discovery_address,
            format!("http://mesh-pilot.{NAMESPACE}.svc:15010"),
            "{ctx}"
        );
        assert_eq!(
            v.ca_address,
            format!("mesh-citadel.{NAMESPACE}.svc:15012"),
            "{ctx}"
        );
        assert_eq!(injector.native_sidecars(), e.native_sidecars, "{ctx}");

        // Inject a pod with an HTTP liveness probe on a named port.
        let mut meta = ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("apps".into()),
            ..Default::default()
        };
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "web".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..Default::default()
                }]),
                liveness_probe: Some(Probe {
                    http_get: Some(HTTPGetAction {
                        path: Some("/healthz".into()),
                        port: IntOrString::String("http".into()),
                        ..Default::default()
                    }),
                    timeout_seconds: Some(3),
                    ..Default::default()
                }),
                readiness_probe: Some(Probe {
                    tcp_socket: Some(TCPSocketAction {
                        port: IntOrString::Int(8080),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        injector.inject(&mut meta, &mut spec, "web").unwrap();
        let proxy = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == "mesh-proxy")
            .expect("proxy injected");
        let ready = proxy
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(ready.path.as_deref(), Some(health::READY_PATH), "{ctx}");
        assert_eq!(
            ready.port,
            IntOrString::Int(health::HEALTH_PORT.into()),
            "{ctx}"
        );
        if !e.native_sidecars {
            // The start hook is `mesh-proxy wait --timeout <T>`; <T> must parse.
            let hook = proxy
                .lifecycle
                .as_ref()
                .unwrap()
                .post_start
                .as_ref()
                .unwrap();
            let cmd = hook.exec.as_ref().unwrap().command.clone().unwrap();
            let at = cmd
                .iter()
                .position(|a| a == "--timeout")
                .expect("--timeout");
            assert_eq!(cmd[1], "wait", "{ctx}: {cmd:?}");
            mesh_proxy::wait::parse_timeout(&cmd[at + 1]).unwrap();
        }
        let env = proxy.env.clone().unwrap_or_default();
        let probers = env.iter().find(|v| v.name == health::PROBERS_ENV);
        let app = spec.containers.iter().find(|c| c.name == "web").unwrap();
        let live = app
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        if !e.rewrite_probes {
            assert!(probers.is_none(), "{ctx}");
            assert_eq!(live.port, IntOrString::String("http".into()), "{ctx}");
            continue;
        }
        // The kubelet now asks the proxy's health port; the proxy parses what it was handed
        // and knows to probe the app's port 8080.
        assert_eq!(
            live.port,
            IntOrString::Int(health::HEALTH_PORT.into()),
            "{ctx}"
        );
        let text = probers.unwrap().value.clone().unwrap();
        let parsed = Probers::from_lookup(|n| (n == health::PROBERS_ENV).then(|| text.clone()))
            .unwrap_or_else(|e| panic!("the proxy rejects the injector's probers: {e}"));
        let prober = parsed
            .get(live.path.as_deref().unwrap())
            .expect("the rewritten path is a prober");
        assert_eq!(
            prober.action,
            health::probers::Action::Http {
                host: None,
                port: 8080,
                path: "/healthz".into(),
                scheme: health::probers::Scheme::Http,
                headers: vec![],
            }
        );
        assert_eq!(prober.timeout, std::time::Duration::from_secs(3));
    }
}

/// Every flag the Deployments pass is one the binary accepts (`--help` of the built binary).
#[test]
fn deployment_args_are_flags_of_the_binaries() {
    for e in expectations() {
        let m = parse(&render("mesh", e.values));
        for d in &m.deployments {
            let name = d.metadata.name.as_deref().unwrap();
            let help = Command::new(mesh_e2e::binary(binary_of(name)))
                .arg("--help")
                .output()
                .unwrap();
            let help = String::from_utf8_lossy(&help.stdout).into_owned();
            for c in &pod_spec(d).containers {
                for flag in c.args.iter().flatten().filter(|a| a.starts_with("--")) {
                    assert!(
                        help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                        "{name}: {flag} is not a flag of the binary:\n{help}"
                    );
                }
            }
        }
    }
}
