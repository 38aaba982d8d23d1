//! Runs the built `meshctl analyze` and `meshctl describe` on the bookinfo example plus
//! broken config: Istio's codes, each at the file and line of the field at fault.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A copy of examples/bookinfo with `extra` files added.
fn bookinfo_with(name: &str, extra: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshctl-analyze-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo");
    for entry in std::fs::read_dir(example).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    for (file, text) in extra {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn meshctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env_remove("MESH_PILOT")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const BROKEN: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-canary, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v4}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-typo, namespace: default}
spec:
  host: ratinsg
";

#[test]
fn analyze_reports_codes_with_file_and_line() {
    let clean = bookinfo_with("clean", &[]);
    let out = meshctl(&["analyze", "-f", clean.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).starts_with("✔ No validation issues found"),
        "{}",
        stdout(&out)
    );

    let dir = bookinfo_with("broken", &[("zz-broken.yaml", BROKEN)]);
    let out = meshctl(&["analyze", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(79), "{out:?}");
    let file = dir.join("zz-broken.yaml");
    let file = file.display();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "Error [IST0109] (VirtualService default/reviews {}:9) The VirtualServices default/reviews,default/reviews-canary associated with mesh gateway define the same host reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                dir.join("virtual-service-reviews.yaml").display()
            ),
            format!(
                "Error [IST0109] (VirtualService default/reviews-canary {file}:5) The VirtualServices default/reviews,default/reviews-canary associated with mesh gateway define the same host reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource."
            ),
            format!(
                "Error [IST0101] (VirtualService default/reviews-canary {file}:8) Referenced host+subset in destinationrule not found: \"reviews+v4\""
            ),
            format!(
                "Error [IST0101] (DestinationRule default/ratings-typo {file}:14) Referenced host not found: \"ratinsg\""
            ),
        ],
        "{text}"
    );

    let json = meshctl(&["analyze", "-f", dir.to_str().unwrap(), "-o", "json"]);
    let found: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 4);
    assert_eq!(found[2]["code"], "ReferencedResourceNotFound");
    assert_eq!(found[2]["line"], 8);
}

#[test]
fn describe_shows_what_applies_to_a_workload() {
    let dir = bookinfo_with("describe", &[]);
    let out = meshctl(&[
        "describe",
        "reviews-v1.default",
        "-f",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains("Services:       reviews.default.svc.cluster.local"),
        "{text}"
    );
    assert!(
        text.contains("routes reviews.default.svc.cluster.local to this workload's subset v1"),
        "{text}"
    );
    assert!(text.contains("this workload is subset v1"), "{text}");
    assert!(
        text.contains("Effective mTLS: STRICT (PeerAuthentication istio-system/default)"),
        "{text}"
    );
    let missing = meshctl(&["describe", "nope", "-f", dir.to_str().unwrap()]);
    assert!(!missing.status.success());
}
