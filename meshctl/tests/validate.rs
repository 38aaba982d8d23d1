//! Runs the built `meshctl validate` on files.

use std::path::PathBuf;
use std::process::Command;

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meshctl-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const VALID: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
";

const INVALID: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 120
";

#[test]
fn valid_file_exits_zero_with_summary() {
    let dir = tmpdir("valid");
    let f = write(&dir, "reviews.yaml", VALID);
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("validate")
        .arg("-f")
        .arg(&f)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 object(s) valid"), "{stdout}");
}

#[test]
fn invalid_file_exits_non_zero_with_one_line_per_error() {
    let dir = tmpdir("invalid");
    let good = write(&dir, "good.yaml", VALID);
    let bad = write(&dir, "reviews.yaml", INVALID);
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .current_dir(&dir)
        .args(["validate", "-f", "good.yaml", "-f", "reviews.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.contains(&"reviews.yaml:12: spec.http[0].route[1].weight: must be between 0 and 100"),
        "{stderr}"
    );
    assert!(
        lines.contains(&"reviews.yaml:8: spec.http[0].route: total destination weight 200 != 100"),
        "{stderr}"
    );
    assert!(lines.last().unwrap().starts_with("2 error(s)"), "{stderr}");
    // A directory is walked too.
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["validate", "-f"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let _ = (good, bad);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_path_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["validate", "-f", "/nonexistent/x.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.yaml: cannot read"));
}

const GATEWAY_WITH_UNSUPPORTED_FIELDS: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls:
      mode: SIMPLE
      credentialName: shop-cert
  - port: {number: 8443, name: https-2, protocol: HTTPS}
    hosts: [api.example.com]
    tls:
      mode: SIMPLE
      serverCertificate: /etc/certs/api.pem
      privateKey: /etc/certs/api.key
      minProtocolVersion: TLSV1_3
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ['*.local']
    tls: {mode: AUTO_PASSTHROUGH}
";

#[test]
fn gateway_fields_the_mesh_does_not_implement_are_warned_about() {
    let dir = tmpdir("gateway");
    let f = write(&dir, "gateway.yaml", GATEWAY_WITH_UNSUPPORTED_FIELDS);
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("validate")
        .arg("-f")
        .arg(&f)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Istio accepts the object: it is valid, and every field the gateway skips is named.
    assert!(out.status.success(), "stderr: {stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    // A credentialName is served from the gateway's credential directory: no warning.
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains("spec.servers[1].tls.minProtocolVersion"),
        "{stderr}"
    );
    assert!(
        warnings[1].contains("spec.servers[2].tls.mode")
            && warnings[1].contains("AUTO_PASSTHROUGH"),
        "{stderr}"
    );
    assert!(
        warnings.iter().all(|w| w.contains("gateway.yaml:")),
        "{stderr}"
    );
}

#[test]
fn envoy_filter_conditions_are_valid_with_a_warning_naming_the_policy() {
    let dir = tmpdir("fallback");
    let f = write(
        &dir,
        "authz.yaml",
        "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mysql, namespace: db}
spec:
  action: DENY
  rules:
  - when:
    - key: experimental.envoy.filters.network.mysql_proxy[db.table]
      values: ['[update]']
",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["validate", "-f"])
        .arg(&f)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("authz.yaml:")
            && stderr.contains("spec.rules[0].when[0].key")
            && stderr.contains("AuthorizationPolicy db/mysql never grants access"),
        "{stderr}"
    );
}

/// A Telemetry: a filter the proxy cannot evaluate is an error with file and line; what the
/// mesh does not implement (metrics overrides, an unknown provider) is a warning, and the
/// object still validates.
#[test]
fn telemetry_filters_are_errors_and_unimplemented_fields_warnings() {
    let dir = tmpdir("telemetry");
    let ok = write(
        &dir,
        "telemetry.yaml",
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}, {name: otel}]
    filter: {expression: 'response.code >= 400'}
  metrics:
  - overrides: [{match: {customMetric: mine}, disabled: true}]
",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["validate", "-f"])
        .arg(&ok)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(
        stdout.contains("1 object(s) valid") && stdout.contains("1 Telemetry"),
        "{stdout}"
    );
    assert!(
        stderr.contains("telemetry.yaml:6: spec.accessLogging[0].providers[1].name: access log provider \"otel\" is not implemented"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "telemetry.yaml:9: spec.metrics[0].overrides[0].match.customMetric: custom metrics are not implemented"
        ),
        "{stderr}"
    );

    let bad = write(
        &dir,
        "bad.yaml",
        "apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: errors, namespace: default}
spec:
  accessLogging:
  - filter:
      expression: response.code in [500, 503]
",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["validate", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "bad.yaml:7: spec.accessLogging[0].filter.expression: invalid filter expression"
        ),
        "{stderr}"
    );
}

/// The mesh's own LocalRateLimit: a valid one is accepted and counted; a burst below the
/// rate, a missing unit and an unknown field are errors with file and line.
#[test]
fn local_rate_limits_are_validated() {
    let dir = tmpdir("ratelimit");
    let ok = write(
        &dir,
        "ratelimit.yaml",
        "apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector:
    matchLabels: {app: reviews}
  requestsPerUnit: 100
  unit: MINUTE
  burst: 150
  routes:
  - match:
    - uri: {prefix: /login}
      method: {exact: POST}
    requestsPerUnit: 5
",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["validate", "-f"])
        .arg(&ok)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(
        stdout.contains("1 object(s) valid") && stdout.contains("1 LocalRateLimit"),
        "{stdout}"
    );
    assert!(stderr.trim().is_empty(), "{stderr}");

    let bad = write(
        &dir,
        "bad-ratelimit.yaml",
        "apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: reviews, namespace: default}
spec:
  requestsPerUnit: 10
  burst: 5
  fillInterval: 1s
",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["validate", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad-ratelimit.yaml:7: spec.fillInterval: unknown field"),
        "{stderr}"
    );

    // Once it decodes, the rules: the burst and the missing unit.
    let bad = write(
        &dir,
        "bad-ratelimit.yaml",
        "apiVersion: networking.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata: {name: reviews, namespace: default}
spec:
  requestsPerUnit: 10
  burst: 5
",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["validate", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for want in [
        "bad-ratelimit.yaml:6: spec.burst: burst 5 must be at least requestsPerUnit (10)",
        "bad-ratelimit.yaml:4: spec.unit: required value",
    ] {
        assert!(stderr.contains(want), "{want} not in {stderr}");
    }
}
