//! Istio's own configs, judged document by document.

use std::path::{Path, PathBuf};

use mesh_api::yaml::parse_documents;
use mesh_api::{Kind, decode, load_path, validate};

fn istio() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance/istio")
}

/// Our verdict on one document: the errors found (empty = accepted).
fn judge(file: &Path, doc: &mesh_api::yaml::Document) -> Vec<String> {
    match decode(Some(file), doc) {
        Ok(r) => validate(&r).iter().map(ToString::to_string).collect(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn istio_validation_testdata() {
    let dir = istio().join("pkg/config/validation/testdata/crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("conformance data")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut judged = 0;
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let expect_valid = name.ends_with("-valid.yaml");
        assert!(
            expect_valid || name.ends_with("-invalid.yaml"),
            "unexpected file {name}"
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let (docs, syntax) = parse_documents(&text);
        assert!(syntax.is_none(), "{name}: {syntax:?}");
        let (mut accepted, mut rejected, mut unsupported) = (0, 0, 0);
        for mut doc in docs {
            // `_err` is Istio's expected message, not part of the resource.
            let istio_err = doc.value.as_object_mut().and_then(|m| m.remove("_err"));
            let kind = doc
                .value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            let errors = judge(&file, &doc);
            judged += 1;
            let served = Kind::from_name(&kind).is_some();
            if errors.is_empty() {
                accepted += 1;
            } else if served {
                rejected += 1;
            } else {
                unsupported += 1;
            }
            let ok = match (served, expect_valid) {
                (false, _) => errors.iter().any(|e| e.contains("unsupported kind")),
                (true, true) => errors.is_empty(),
                (true, false) => !errors.is_empty(),
            };
            if !ok {
                failures.push(format!(
                    "{name}:{} ({kind}): expected {}; istio: {:?}; ours: {errors:?}",
                    doc.line,
                    if expect_valid { "accepted" } else { "rejected" },
                    istio_err.map(|v| v.to_string()).unwrap_or_default(),
                ));
            } else if !expect_valid && served {
                println!(
                    "{name}:{}: istio: {} | ours: {}",
                    doc.line,
                    istio_err.map(|v| v.to_string()).unwrap_or_default(),
                    errors[0]
                );
            }
        }
        println!("{name}: accepted {accepted}, rejected {rejected}, unsupported {unsupported}");
    }
    assert!(judged > 50, "only {judged} documents found");
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn bookinfo_networking_samples_load_and_validate() {
    let dir = istio().join("samples/bookinfo/networking");
    let (resources, errors) = load_path(&dir);
    assert!(
        errors.is_empty(),
        "{}",
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert!(files >= 20);
    assert!(resources.iter().any(|r| r.kind() == Kind::Gateway));
    assert!(resources.iter().any(|r| r.kind() == Kind::ServiceEntry));
    // Every non-empty document of every file became a resource.
    let docs: usize = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            parse_documents(&std::fs::read_to_string(e.unwrap().path()).unwrap())
                .0
                .len()
        })
        .sum();
    assert_eq!(resources.len(), docs);
}

#[test]
fn retired_forms_are_rejected_with_a_precise_reason() {
    let dir = istio().join("tests/testdata/config");
    let retired: &[(&str, &[&str])] = &[
        (
            "rule-default-route-append-headers.yaml",
            &[
                "kind: unsupported kind ExternalService: retired by Istio, use ServiceEntry",
                "spec.http[0].append_headers: unknown field",
            ],
        ),
        (
            "rule-default-route-cors-policy.yaml",
            &["kind: unsupported kind ExternalService: retired by Istio, use ServiceEntry"],
        ),
        (
            "rule-regex-route.yaml",
            &[
                "kind: unsupported kind ExternalService: retired by Istio, use ServiceEntry",
                "spec.http[0].match[0].source_labels: unknown field (snake_case is a retired form; the field is `sourceLabels`)",
            ],
        ),
        (
            "rule-fault-injection.yaml",
            &[
                "spec.http[0].match[0].source_labels: unknown field (snake_case is a retired form; the field is `sourceLabels`)",
            ],
        ),
    ];
    let mut others = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let (resources, errors) = load_path(&path);
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        match retired.iter().find(|(f, _)| *f == name) {
            Some((_, expected)) => {
                for want in *expected {
                    assert!(
                        lines.iter().any(|l| l.contains(want)),
                        "{name}: missing {want:?} in {lines:#?}"
                    );
                }
            }
            None => {
                assert!(errors.is_empty(), "{name}: {lines:#?}");
                assert!(!resources.is_empty(), "{name}: nothing loaded");
                others += 1;
            }
        }
    }
    assert!(others >= 15, "only {others} non-retired files");
}

/// Istio's Telemetry testdata: the kind is served (not "unsupported kind"), every valid
/// document is accepted and every invalid one refused with Istio's own message.
#[test]
fn telemetry_testdata_is_judged_as_istio_does() {
    let dir = istio().join("pkg/config/validation/testdata/crds");
    for (name, valid) in [
        ("telemetry-valid.yaml", true),
        ("telemetry-invalid.yaml", false),
    ] {
        let file = dir.join(name);
        let text = std::fs::read_to_string(&file).unwrap();
        let (docs, _) = parse_documents(&text);
        assert!(docs.len() >= 3, "{name}");
        for mut doc in docs {
            let istio_err = doc
                .value
                .as_object_mut()
                .and_then(|m| m.remove("_err"))
                .and_then(|v| v.as_str().map(str::to_string));
            let resource = decode(Some(&file), &doc).expect("Telemetry decodes");
            assert_eq!(resource.kind(), Kind::Telemetry);
            let errors: Vec<String> = validate(&resource)
                .iter()
                .map(ToString::to_string)
                .collect();
            if valid {
                assert!(errors.is_empty(), "{name}:{}: {errors:?}", doc.line);
            } else {
                let want = istio_err.expect("an invalid document names Istio's error");
                assert!(
                    errors.iter().any(|e| e.contains(&want)),
                    "{name}:{}: want {want:?}, got {errors:?}",
                    doc.line
                );
            }
        }
    }
}
