//! The Telemetry kind: the versions it is served under, and what validation warns about
//! (what the mesh does not implement is reported, never silently ignored).

use mesh_api::validate::warnings;
use mesh_api::{Resource, load_str};

fn load(api_version: &str, spec: &str) -> Resource {
    let text = format!(
        "apiVersion: {api_version}\nkind: Telemetry\nmetadata: {{name: t, namespace: ns}}\nspec:\n{spec}"
    );
    let (mut ok, errors) = load_str("t.yaml", &text);
    assert!(errors.is_empty(), "{errors:?}");
    ok.remove(0)
}

fn warning_lines(r: &Resource) -> Vec<String> {
    warnings(r).iter().map(ToString::to_string).collect()
}

#[test]
fn served_under_istios_three_versions_and_the_mesh_group() {
    let spec = "  accessLogging:\n  - providers: [{name: envoy}]\n";
    for v in [
        "telemetry.istio.io/v1",
        "telemetry.istio.io/v1beta1",
        "telemetry.istio.io/v1alpha1",
        "telemetry.mesh.dev/v1",
    ] {
        let Resource::Telemetry(t) = load(v, spec) else {
            panic!("{v}: not a Telemetry");
        };
        assert_eq!(t.spec.access_logging[0].providers[0].name, "envoy");
    }
    let (_, errors) = load_str(
        "t.yaml",
        "apiVersion: telemetry.istio.io/v2\nkind: Telemetry\nmetadata: {name: t}\nspec: {}\n",
    );
    assert!(
        errors[0].to_string().contains("unsupported apiVersion"),
        "{errors:?}"
    );
}

#[test]
fn built_in_access_log_providers_and_filters_have_no_warning() {
    let spec = "  accessLogging:\n  - providers: [{name: envoy}, {name: envoy-json}]\n    match: {mode: SERVER}\n    filter: {expression: 'response.code >= 400'}\n";
    let r = load("telemetry.istio.io/v1", spec);
    assert_eq!(warning_lines(&r), Vec::<String>::new());
}

#[test]
fn what_the_mesh_does_not_implement_is_warned_with_its_line() {
    let spec = concat!(
        "  targetRef: {kind: Gateway, name: gw}\n",
        "  metrics:\n",
        "  - providers: [{name: stackdriver}]\n",
        "    reportingInterval: 5s\n",
        "    overrides:\n",
        "    - match: {metric: REQUEST_COUNT}\n",
        "      disabled: true\n",
        "    - match: {customMetric: my_metric}\n",
        "    - match: {metric: TCP_SENT_BYTES}\n",
        "      tagOverrides:\n",
        "        host: {value: request.host}\n",
        "    - match: {metric: REQUEST_DURATION}\n",
        "      tagOverrides:\n",
        "        port: {value: string(destination.port)}\n",
        "        bad-name: {value: \"'x'\"}\n",
        "  accessLogging:\n",
        "  - providers: [{name: otel}]\n",
    );
    let r = load("telemetry.istio.io/v1", spec);
    let w = warning_lines(&r);
    let want = [
        "t.yaml:5: spec.targetRef: targetRef attaches a Telemetry to a gateway or waypoint",
        "t.yaml:7: spec.metrics[0].providers[0].name: metrics provider \"stackdriver\" is not implemented",
        "t.yaml:12: spec.metrics[0].overrides[1].match.customMetric: custom metrics are not implemented",
        "t.yaml:15: spec.metrics[0].overrides[2].tagOverrides.host.value: a TCP metric has no request: this tag's value is \"unknown\"",
        "t.yaml:18: spec.metrics[0].overrides[3].tagOverrides.port.value: value \"string(destination.port)\" is not evaluated",
        "t.yaml:19: spec.metrics[0].overrides[3].tagOverrides[bad-name]: \"bad-name\" is not a Prometheus label name",
        "t.yaml:8: spec.metrics[0].reportingInterval: reportingInterval is not implemented",
        "t.yaml:21: spec.accessLogging[0].providers[0].name: access log provider \"otel\" is not implemented",
    ];
    for want in want {
        assert!(
            w.iter().any(|l| l.contains(want)),
            "missing {want:?} in {w:#?}"
        );
    }
    assert_eq!(w.len(), want.len(), "{w:#?}");
}

#[test]
fn metrics_overrides_the_mesh_evaluates_have_no_warning() {
    let spec = concat!(
        "  metrics:\n",
        "  - providers: [{name: prometheus}]\n",
        "    overrides:\n",
        "    - match: {metric: REQUEST_COUNT, mode: SERVER}\n",
        "      disabled: true\n",
        "    - match: {metric: REQUEST_DURATION, mode: CLIENT_AND_SERVER}\n",
        "      tagOverrides:\n",
        "        response_flags: {operation: REMOVE}\n",
        "        team: {value: \"'books'\"}\n",
        "        host: {operation: UPSERT, value: request.host}\n",
        "        method: {value: request.method}\n",
        "        tenant: {value: \"request.headers['x-tenant']\"}\n",
        "    - match: {metric: GRPC_RESPONSE_MESSAGES, mode: CLIENT}\n",
        "      disabled: false\n",
    );
    let r = load("telemetry.istio.io/v1", spec);
    assert_eq!(warning_lines(&r), Vec::<String>::new());
}

#[test]
fn tcp_and_all_metrics_overrides_have_no_warning() {
    let spec = concat!(
        "  metrics:\n",
        "  - overrides:\n",
        "    - tagOverrides: {response_code: {operation: REMOVE}}\n",
        "    - match: {metric: TCP_OPENED_CONNECTIONS, mode: SERVER}\n",
        "      disabled: true\n",
        "    - match: {metric: TCP_SENT_BYTES}\n",
        "      tagOverrides: {team: {value: \"'books'\"}, source_app: {operation: REMOVE}}\n",
    );
    let w = warning_lines(&load("telemetry.istio.io/v1", spec));
    assert_eq!(w, Vec::<String>::new());
}
