//! The LocalRateLimit kind: served under the mesh's own group only, decoded with unknown
//! fields refused, validated with file, line, field and reason.

use mesh_api::networking::RateLimitUnit;
use mesh_api::{Resource, load_str};

const VALID: &str = "\
apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: reviews, namespace: shop}
spec:
  workloadSelector:
    matchLabels: {app: reviews}
  requestsPerUnit: 10
  unit: SECOND
  burst: 20
  routes:
  - name: login
    match:
    - uri: {prefix: /login}
      method: {exact: POST}
    - uri: {exact: /signup}
    requestsPerUnit: 2
    unit: MINUTE
";

fn errors(text: &str) -> Vec<String> {
    load_str("rl.yaml", text)
        .1
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_valid_limit_decodes_with_its_defaults() {
    let (ok, errs) = load_str("rl.yaml", VALID);
    assert!(errs.is_empty(), "{errs:?}");
    let Resource::LocalRateLimit(l) = &ok[0] else {
        panic!("not a LocalRateLimit: {:?}", ok[0]);
    };
    assert_eq!(l.spec.requests_per_unit, 10);
    assert_eq!(l.spec.unit, Some(RateLimitUnit::Second));
    assert_eq!(l.spec.effective_burst(), 20);
    let route = &l.spec.routes[0];
    assert_eq!(route.match_.len(), 2);
    assert_eq!(route.unit, Some(RateLimitUnit::Minute));
    // No burst: the route's own rate.
    assert_eq!(route.effective_burst(), 2);
    assert_eq!(
        l.spec.workload_selector.as_ref().unwrap().match_labels["app"],
        "reviews"
    );
}

#[test]
fn served_under_the_mesh_group_and_v1alpha1_only() {
    for api_version in [
        "networking.istio.io/v1alpha1",
        "networking.mesh.dev/v1",
        "networking.istio.io/v1",
    ] {
        let text = VALID.replace("networking.mesh.dev/v1alpha1", api_version);
        let errs = errors(&text);
        assert_eq!(
            errs,
            [format!(
                "rl.yaml:1: apiVersion: unsupported apiVersion {api_version:?} for kind LocalRateLimit"
            )]
        );
    }
}

#[test]
fn invalid_limits_name_file_line_field_and_reason() {
    let text = "\
apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: bad}
spec:
  workloadSelector:
    matchLabels: {app: '*'}
  requestsPerUnit: 0
  burst: 5
  routes:
  - match: []
    requestsPerUnit: 10
    burst: 3
  - name: ''
    match:
    - {}
    - uri: {}
    - method: {exact: GET, regex: '('}
    - uri: {regex: '(?x)/a#'}
    requestsPerUnit: 1
";
    let mut got = errors(text);
    got.sort();
    let mut want = vec![
        "rl.yaml:6: spec.workloadSelector.matchLabels.app: wildcard is not supported in selector",
        "rl.yaml:6: spec.workloadSelector.matchLabels.app: invalid label value \"*\"",
        "rl.yaml:7: spec.requestsPerUnit: must be greater than 0",
        "rl.yaml:4: spec.unit: required value (SECOND, MINUTE or HOUR)",
        "rl.yaml:10: spec.routes[0].match: at least one match is required (a route without one would take every request)",
        "rl.yaml:12: spec.routes[0].burst: burst 3 must be at least requestsPerUnit (10)",
        "rl.yaml:13: spec.routes[1].name: name may not be empty",
        "rl.yaml:15: spec.routes[1].match[0]: a match must set uri or method",
        "rl.yaml:16: spec.routes[1].match[1].uri: one of exact, prefix or regex is required",
        "rl.yaml:17: spec.routes[1].match[2].method: only one of exact, prefix or regex may be set",
        "rl.yaml:17: spec.routes[1].match[2].method.regex: \"(\" is not a valid regex: error: unclosed group",
        "rl.yaml:18: spec.routes[1].match[3].uri.regex: \"(?x)/a#\" is not a valid regex: it cannot be matched in full",
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn unknown_fields_and_units_are_refused() {
    let text = VALID
        .replace("  burst: 20\n", "  burst: 20\n  perConnection: true\n")
        .replace("unit: SECOND", "unit: DAY")
        .replace(
            "      method: {exact: POST}\n",
            "      headers: {x: {exact: y}}\n",
        );
    let mut got = errors(&text);
    got.sort();
    let mut want = vec![
        "rl.yaml:8: spec.unit: unsupported value \"DAY\" (one of SECOND, MINUTE, HOUR)",
        "rl.yaml:10: spec.perConnection: unknown field",
        "rl.yaml:15: spec.routes[0].match[0].headers: unknown field",
    ];
    want.sort();
    assert_eq!(got, want);
}
