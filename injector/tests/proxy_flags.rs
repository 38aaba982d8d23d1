//! The init container's arguments, as injected into the golden manifests, are accepted by the
//! real `mesh-proxy iptables` (in `--dry-run`, which needs no privileges). Needs a built
//! mesh-proxy: `MESH_PROXY_BIN`, or the one beside this test in the cargo target dir (built by
//! `cargo build --workspace --bins`, as CI does before the tests). The two crates build
//! independently, so without it the test skips, except where every test must run (see
//! mesh-test-support).

use std::path::{Path, PathBuf};
use std::process::Command;

use mesh_injector::manifest::inject_manifests;
use mesh_injector::workload::template_pointer;
use mesh_injector::{Injector, Template, Values};
use serde_json::Value;

/// `MESH_PROXY_BIN`, or mesh-proxy in this test's profile directory of the target dir
/// (`target/<profile>/deps/<this test>` -> `target/<profile>/mesh-proxy`), whichever the
/// target dir and profile are.
fn proxy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MESH_PROXY_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .join("mesh-proxy")
}

#[test]
fn init_args_are_accepted_by_mesh_proxy() {
    let bin = proxy_bin();
    let why = format!(
        "no mesh-proxy at {}: build it with `cargo build -p mesh-proxy`",
        bin.display()
    );
    if !mesh_test_support::require(bin.exists(), &why) {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let inj = Injector::new(Values::default(), Template::default_template()).unwrap();
    let mut checked = 0;
    for name in ["pod.yaml", "traffic.yaml", "multi.yaml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let out = inject_manifests(&inj, &text).unwrap().output;
        for doc in serde_saphyr::from_multiple::<Value>(&out).unwrap() {
            let Some(ptr) = doc["kind"].as_str().and_then(template_pointer) else {
                continue;
            };
            let inits = doc.pointer(ptr).unwrap()["spec"]["initContainers"].clone();
            let Some(init) = inits
                .as_array()
                .and_then(|a| a.iter().find(|c| c["name"] == "mesh-init"))
            else {
                continue;
            };
            let args: Vec<&str> = init["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let run = Command::new(&bin)
                .args(&args)
                .arg("--dry-run")
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "{name}: mesh-proxy {args:?} failed: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            let rules = String::from_utf8_lossy(&run.stdout);
            assert!(rules.contains("REDIRECT --to-ports 15001"), "{rules}");
            checked += 1;
        }
    }
    assert!(checked >= 4, "{checked}");
}
