//! Golden files: every directory under `tests/golden/` holds `input.yaml` (Istio resources),
//! `proxy.yaml` (the proxy: id, workload, namespace, addresses) and the expected translation,
//! `expected.json` (the ProxyConfig in the proto3 JSON mapping) and `warnings.txt`.
//! `UPDATE_GOLDEN=1 cargo test -p mesh-pilot --test translate_golden` rewrites them.
//! A case may also list, in `includes.txt`, files of Istio's own configs (paths relative to
//! `tests/conformance/istio/`) that are loaded verbatim after `input.yaml`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_pilot::registry::Registry;
use mesh_pilot::translate::{MeshIndex, ProxyContext, translate};
use mesh_proto::discovery::v1::ProxyAddresses;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Proxy {
    id: String,
    workload: String,
    namespace: String,
    #[serde(default)]
    addresses: ProxyAddresses,
}

fn yaml_value(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let (docs, err) = mesh_api::yaml::parse_documents(&text);
    assert!(err.is_none(), "{}: {err:?}", path.display());
    docs.into_iter().next().expect("one document").value
}

/// Keys sorted at every level, so map fields (HashMaps in the generated code) print stably.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Istio's public configs, kept verbatim as test inputs.
fn conformance_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance/istio")
}

fn render(dir: &Path) -> (String, String) {
    let input = dir.join("input.yaml");
    let (mut resources, errors) = mesh_api::load_path(&input);
    assert!(errors.is_empty(), "{}: {errors:?}", input.display());
    if let Ok(list) = std::fs::read_to_string(dir.join("includes.txt")) {
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let path = conformance_root().join(line);
            let (more, errors) = mesh_api::load_path(&path);
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            assert!(!more.is_empty(), "{}: no resources", path.display());
            resources.extend(more);
        }
    }
    let proxy: Proxy = serde_json::from_value(yaml_value(&dir.join("proxy.yaml"))).unwrap();

    let registry = Arc::new(Registry::build(&resources));
    let mesh = MeshIndex::new(&resources, registry);
    let workload = mesh
        .registry()
        .workload(&proxy.workload, &proxy.namespace)
        .unwrap_or_else(|| panic!("{}: no workload {}", dir.display(), proxy.workload))
        .clone();
    let out = translate(
        &mesh,
        &ProxyContext {
            id: &proxy.id,
            workload: &workload,
            addresses: &proxy.addresses,
        },
    )
    .unwrap();
    let json = sorted(serde_json::to_value(&out.config).unwrap());
    let mut config = serde_json::to_string_pretty(&json).unwrap();
    config.push('\n');
    let warnings: String = out.warnings.iter().map(|w| format!("{w}\n")).collect();
    (config, warnings)
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dirs = cases();
    assert!(dirs.len() >= 6, "golden cases missing: {dirs:?}");
    let mut failed = Vec::new();
    for dir in dirs {
        let (config, warnings) = render(&dir);
        for (file, got) in [("expected.json", &config), ("warnings.txt", &warnings)] {
            let path = dir.join(file);
            if update {
                std::fs::write(&path, got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if want != *got {
                eprintln!("--- {} differs; got:\n{got}", path.display());
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 rewrites): {failed:?}"
    );
}

#[test]
fn equal_input_gives_byte_equal_output() {
    for dir in cases() {
        assert_eq!(render(&dir), render(&dir), "{}", dir.display());
    }
}
