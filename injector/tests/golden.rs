//! Golden tests: every `tests/golden/NAME.yaml` is injected (with `NAME.values.yaml` as the
//! mesh settings when present) and compared with `NAME.injected.yaml`.
//! `UPDATE_GOLDEN=1 cargo test -p mesh-injector --test golden` rewrites the expected files.

use std::path::{Path, PathBuf};

use mesh_injector::manifest::{inject_manifests, split_documents};
use mesh_injector::{Injector, Template, Values};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn inputs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.ends_with(".yaml") && !n.ends_with(".injected.yaml") && !n.ends_with(".values.yaml")
        })
        .collect();
    v.sort();
    assert!(v.len() >= 5, "golden inputs missing: {v:?}");
    v
}

fn injector_for(input: &Path) -> Injector {
    let values_file = input.with_extension("values.yaml");
    let values = match std::fs::read_to_string(&values_file) {
        Ok(text) => Values::from_yaml(&text).unwrap(),
        Err(_) => Values::default(),
    };
    Injector::new(values, Template::default_template()).unwrap()
}

#[test]
fn golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for input in inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let report = inject_manifests(&injector_for(&input), &text).unwrap();
        let expected_path = input.with_extension("injected.yaml");
        if update {
            std::fs::write(&expected_path, &report.output).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1)",
                expected_path.display()
            )
        });
        if expected != report.output {
            failures.push(format!(
                "{} differs from {}:\n{}",
                input.display(),
                expected_path.display(),
                report.output
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Injecting an injected manifest changes nothing.
#[test]
fn idempotent() {
    for input in inputs() {
        let inj = injector_for(&input);
        let once = inject_manifests(&inj, &std::fs::read_to_string(&input).unwrap()).unwrap();
        assert!(
            !once.injected.is_empty(),
            "{}: nothing injected",
            input.display()
        );
        let twice = inject_manifests(&inj, &once.output).unwrap();
        assert_eq!(twice.output, once.output, "{}", input.display());
        assert!(
            twice.injected.is_empty(),
            "{}: {:?}",
            input.display(),
            twice.injected
        );
        assert!(
            twice
                .skipped
                .iter()
                .all(|(_, why)| why != "neither the pod nor its namespace enable injection"),
            "{:?}",
            twice.skipped
        );
    }
}

/// The multi-document manifest: what is injected, what is skipped and why, and that the
/// untouched documents are byte for byte the input's.
#[test]
fn multi_document_kinds() {
    let input = golden_dir().join("multi.yaml");
    let text = std::fs::read_to_string(&input).unwrap();
    let report = inject_manifests(&injector_for(&input), &text).unwrap();
    assert_eq!(
        report.injected,
        ["Deployment/web", "DaemonSet/agent", "CronJob/nightly"]
    );
    assert_eq!(
        report.skipped,
        [
            (
                "ReplicaSet/legacy".to_string(),
                "pod opts out (sidecar.istio.io/inject=false)".to_string()
            ),
            (
                "Pod/node-exporter".to_string(),
                "pod uses the host network".to_string()
            ),
        ]
    );
    let (docs_in, docs_out) = (split_documents(&text), split_documents(&report.output));
    assert_eq!(docs_in.len(), docs_out.len());
    for i in [0, 2, 4, 5] {
        assert_eq!(docs_in[i], docs_out[i], "document {i} changed");
    }
    for i in [1, 3, 6] {
        assert_ne!(docs_in[i], docs_out[i], "document {i} not injected");
    }
}
