//! The config store fed by a directory of YAML: every file's valid objects, kept per file so a
//! bad edit to one file leaves that file's last good objects in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mesh_api::{Resource, ValidationError};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
}

#[derive(Debug, Default)]
struct FileState {
    fingerprint: Option<Fingerprint>,
    /// The objects of the last version of the file that had no error.
    good: Vec<Resource>,
    /// Errors of the current version; empty when it is the good one.
    errors: Vec<ValidationError>,
}

/// A watched directory (recursive, `*.yaml` / `*.yml`).
#[derive(Debug)]
pub struct DirStore {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

impl DirStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads files that changed, appeared or disappeared. Returns whether the valid objects
    /// changed. New errors are logged once, naming file, line, field and reason.
    pub fn scan(&mut self) -> bool {
        let mut changed = false;
        let present = mesh_api::config_files(&self.dir).unwrap_or_else(|e| {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list config directory");
            Vec::new()
        });
        let before = self.files.len();
        self.files.retain(|path, _| present.contains(path));
        changed |= self.files.len() != before;
        for path in present {
            let fingerprint = fingerprint(&path);
            let state = self.files.entry(path.clone()).or_default();
            if state.fingerprint.is_some() && state.fingerprint == fingerprint {
                continue;
            }
            state.fingerprint = fingerprint;
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read config file");
                    continue;
                }
            };
            let (resources, errors) = mesh_api::load_str(&path, &text);
            if errors.is_empty() {
                changed |= state.good != resources;
                state.good = resources;
                state.errors.clear();
            } else {
                for e in &errors {
                    tracing::error!(error = %e, "config rejected; the last good version of the file stays in force");
                }
                state.errors = errors;
            }
        }
        changed
    }

    /// Every valid object, in file order. An object defined in two files is taken from the
    /// first and reported.
    pub fn resources(&self) -> Vec<Resource> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (path, state) in &self.files {
            for r in &state.good {
                let key = (
                    r.kind(),
                    r.namespace().unwrap_or_default().to_string(),
                    r.name().to_string(),
                );
                if seen.insert(key) {
                    out.push(r.clone());
                } else {
                    tracing::warn!(file = %path.display(), object = %r.object_ref(), "defined twice; the first definition is used");
                }
            }
        }
        out
    }

    /// The errors of files whose current version was rejected.
    pub fn errors(&self) -> Vec<ValidationError> {
        self.files
            .values()
            .flat_map(|s| s.errors.iter().cloned())
            .collect()
    }
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.1 }]
"#;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
        // Make the change visible even within the file system's timestamp granularity.
        let f = std::fs::File::options()
            .append(true)
            .open(dir.join(name))
            .unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(rand_secs()))
            .unwrap();
    }

    fn rand_secs() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64
            % 1000
            + 1
    }

    #[test]
    fn edits_new_files_and_deletions_take_effect() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = DirStore::new(dir.path());
        assert!(!store.scan());
        write(dir.path(), "a.yaml", SE);
        assert!(store.scan());
        assert_eq!(store.resources().len(), 1);
        assert!(!store.scan(), "nothing changed");
        write(dir.path(), "b.yml", &SE.replace("reviews", "ratings"));
        assert!(store.scan());
        assert_eq!(store.resources().len(), 2);
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert!(store.scan());
        assert_eq!(store.resources()[0].name(), "ratings");
    }

    #[test]
    fn a_bad_edit_keeps_the_last_good_version_and_reports_file_line_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = DirStore::new(dir.path());
        write(dir.path(), "a.yaml", SE);
        store.scan();
        write(
            dir.path(),
            "a.yaml",
            &SE.replace("number: 9080", "number: 99999"),
        );
        assert!(!store.scan(), "the valid objects did not change");
        assert_eq!(store.resources().len(), 1);
        let errors = store.errors();
        assert_eq!(errors.len(), 1);
        let msg = errors[0].to_string();
        assert!(msg.contains("a.yaml:"), "{msg}");
        assert!(msg.contains("spec.ports[0].number"), "{msg}");
        write(dir.path(), "a.yaml", SE);
        store.scan();
        assert!(store.errors().is_empty());
    }
}
