//! Runs the built `meshctl kube-inject` on multi-document manifests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mesh_injector::manifest::{inject_manifests, split_documents};
use mesh_injector::{Injector, Template, Values};

fn multi() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../injector/tests/golden/multi.yaml")
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kube-inject-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn meshctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("kube-inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

#[test]
fn multi_document_file_to_file() {
    let dir = tmp("file");
    let out = dir.join("out.yaml");
    let input = std::fs::read_to_string(multi()).unwrap();
    let run = meshctl(
        &["-f", multi().to_str().unwrap(), "-o", out.to_str().unwrap()],
        None,
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("ReplicaSet/legacy: not injected: pod opts out"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Pod/node-exporter: not injected: pod uses the host network"),
        "{stderr}"
    );

    let written = std::fs::read_to_string(&out).unwrap();
    // The same engine as the webhook, byte for byte.
    let inj = Injector::new(Values::default(), Template::default_template()).unwrap();
    assert_eq!(written, inject_manifests(&inj, &input).unwrap().output);

    let (before, after) = (split_documents(&input), split_documents(&written));
    assert_eq!(before.len(), 7);
    assert_eq!(after.len(), 7);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let injected = [1, 3, 6].contains(&i);
        assert_eq!(b == a, !injected, "document {i}");
        if injected {
            assert!(
                a.contains("name: mesh-init") && a.contains("name: mesh-proxy"),
                "{a}"
            );
            assert!(a.contains("- NET_ADMIN"), "{a}");
            assert!(a.contains("sidecar.mesh.dev/status"), "{a}");
        }
    }

    // Injecting the output again changes nothing.
    let again = meshctl(&["-f", out.to_str().unwrap()], None);
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), written);
}

#[test]
fn stdin_native_sidecars_and_configmap() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: app, image: x}]}\n";
    let run = meshctl(&["-f", "-", "--cluster-version", "1.30"], Some(pod));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = String::from_utf8(run.stdout).unwrap();
    assert!(out.contains("restartPolicy: Always"), "{out}");

    let dir = tmp("cm");
    let cm = dir.join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mesh-sidecar-injector}\ndata:\n  values: |\n    proxyImage: example.org/mesh/proxy:7\n",
    )
    .unwrap();
    let run = meshctl(
        &["-f", "-", "--injection-configmap", cm.to_str().unwrap()],
        Some(pod),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = String::from_utf8(run.stdout).unwrap();
    assert!(out.contains("image: example.org/mesh/proxy:7"), "{out}");
    assert!(!out.contains("restartPolicy: Always"));
}

#[test]
fn errors_name_the_document() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    traffic.sidecar.istio.io/excludeOutboundPorts: http\nspec: {containers: [{name: app}]}\n";
    let run = meshctl(&["-f", "-"], Some(text));
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("document 2 (Pod/p)"), "{stderr}");
    assert!(stderr.contains("excludeOutboundPorts"), "{stderr}");
    let run = meshctl(&["-f", "/nonexistent/x.yaml"], None);
    assert!(!run.status.success());
}
