//! Every saved fuzz input (the corpora and the regression inputs of crashes that were fixed)
//! through its target's entry, on stable: a machine without nightly still checks them all.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use mesh_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `dir`, in name order; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `run` on every input, naming the inputs that panic.
fn replay(run: fn(&[u8]), files: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for file in files {
        let data = std::fs::read(file).expect("readable input");
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failures.push(file.display().to_string());
        }
    }
    failures
}

#[test]
fn every_target_has_a_saved_corpus() {
    for t in TARGETS {
        let dir = fuzz_dir().join("corpus").join(t.name);
        assert!(!inputs(&dir).is_empty(), "no corpus in {}", dir.display());
    }
    // Every corpus directory belongs to a target (a renamed target leaves none behind).
    for kind in ["corpus", "regressions"] {
        let Ok(dirs) = std::fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for d in dirs {
            let name = d.unwrap().file_name().to_string_lossy().to_string();
            assert!(
                TARGETS.iter().any(|t| t.name == name),
                "{kind}/{name} is not a target"
            );
        }
    }
}

#[test]
fn saved_inputs_pass() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for t in TARGETS {
        for kind in ["corpus", "regressions"] {
            let files = inputs(&fuzz_dir().join(kind).join(t.name));
            replayed += files.len();
            failures.extend(replay(t.run, &files));
        }
    }
    assert!(failures.is_empty(), "inputs that fail: {failures:#?}");
    eprintln!("{replayed} saved inputs replayed");
}
