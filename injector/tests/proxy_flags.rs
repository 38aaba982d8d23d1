//! The init container's arguments, as injected into the golden manifests, are accepted by the
//! real `mesh-proxy iptables` (in `--dry-run`, which needs no privileges). Needs a built
//! mesh-proxy: `MESH_PROXY_BIN`, or `debug/mesh-proxy` under the cargo target dir; skipped
//! (with a note) when there is none, as the two crates build independently.

use std::path::{Path, PathBuf};
use std::process::Command;

use mesh_injector::manifest::inject_manifests;
use mesh_injector::workload::template_pointer;
use mesh_injector::{Injector, Template, Values};
use serde_json::Value;

fn proxy_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESH_PROXY_BIN") {
        return Some(p.into());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Some(target.join("debug/mesh-proxy")).filter(|p| p.exists())
}

#[test]
fn init_args_are_accepted_by_mesh_proxy() {
    let Some(bin) = proxy_bin() else {
        eprintln!("no mesh-proxy binary: build it with `cargo build -p mesh-proxy`; skipped");
        return;
    };
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
