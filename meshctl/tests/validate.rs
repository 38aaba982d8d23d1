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
        stderr.contains("warning: AuthorizationPolicy db/mysql: spec.rules[0].when[0].key")
            && stderr.contains("never grants access"),
        "{stderr}"
    );
}
