//! The config store. Two sources feed it: a directory of YAML ([`DirStore`]: every file's valid
//! objects, kept per file so a bad edit to one file leaves that file's last good objects in
//! force) and objects that arrive one at a time from Kubernetes watches ([`ObjectStore`]: each
//! object's last valid version). [`merge`] makes one list of both for translation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use mesh_api::{Kind, Resource, ValidationError};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
}

#[derive(Debug, Default)]
struct FileState {
    fingerprint: Option<Fingerprint>,
    /// The objects of the last version of the file that had no error, shared with the
    /// generations built from them (not copied for each).
    good: Vec<Arc<Resource>>,
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
        // A set, not the listing: with one file per service a linear lookup per known file
        // made every scan quadratic in the number of files.
        let listed: std::collections::HashSet<&std::path::PathBuf> = present.iter().collect();
        self.files.retain(|path, _| listed.contains(path));
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
            let resources: Vec<Arc<Resource>> = resources.into_iter().map(Arc::new).collect();
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
    pub fn resources(&self) -> Vec<Arc<Resource>> {
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

/// Identity of a watched object: the watch it came from (API group and kind), namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{} {}/{}",
            self.kind, self.group, self.namespace, self.name
        )
    }
}

#[derive(Debug, Default)]
struct ObjectState {
    /// The last version that decoded and validated.
    good: Option<Arc<Resource>>,
    /// Errors of the current version; empty when it is the good one.
    errors: Vec<ValidationError>,
}

/// Objects that arrive one by one (Kubernetes watch events), decoded and validated like files.
/// An invalid version is reported (kind, namespace/name, field, reason) and the object's last
/// good version stays in force.
#[derive(Debug, Default)]
pub struct ObjectStore {
    objects: BTreeMap<ObjectKey, ObjectState>,
}

impl ObjectStore {
    /// Adds or updates one object from its JSON as the API server sends it. Returns whether
    /// the valid objects changed.
    pub fn apply(&mut self, key: ObjectKey, value: serde_json::Value) -> bool {
        let checked = mesh_api::decode_value(value).and_then(|r| {
            let errors = mesh_api::validate(&r);
            if errors.is_empty() {
                Ok(r)
            } else {
                Err(errors)
            }
        });
        let state = self.objects.entry(key).or_default();
        match checked {
            Ok(resource) => {
                state.errors.clear();
                let changed = state.good.as_deref() != Some(&resource);
                state.good = Some(Arc::new(resource));
                changed
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "config rejected; the last good version of the object stays in force");
                }
                state.errors = errors;
                false
            }
        }
    }

    /// Removes one object. Returns whether the valid objects changed.
    pub fn delete(&mut self, key: &ObjectKey) -> bool {
        self.objects
            .remove(key)
            .is_some_and(|state| state.good.is_some())
    }

    /// Replaces every object of one watch (`group`, `kind`) after a (re)list: objects missing
    /// from `objects` were deleted meanwhile. Returns whether the valid objects changed.
    pub fn replace(
        &mut self,
        group: &str,
        kind: &str,
        objects: Vec<(ObjectKey, serde_json::Value)>,
    ) -> bool {
        let listed: std::collections::HashSet<ObjectKey> =
            objects.iter().map(|(k, _)| k.clone()).collect();
        let stale: Vec<ObjectKey> = self
            .objects
            .keys()
            .filter(|k| k.group == group && k.kind == kind && !listed.contains(*k))
            .cloned()
            .collect();
        let mut changed = false;
        for key in stale {
            changed |= self.delete(&key);
        }
        for (key, value) in objects {
            changed |= self.apply(key, value);
        }
        changed
    }

    /// Every valid object, ordered by key.
    pub fn resources(&self) -> Vec<Arc<Resource>> {
        self.objects
            .values()
            .filter_map(|s| s.good.clone())
            .collect()
    }

    /// The errors of objects whose current version was rejected.
    pub fn errors(&self) -> Vec<ValidationError> {
        self.objects
            .values()
            .flat_map(|s| s.errors.iter().cloned())
            .collect()
    }
}

/// One list from both sources; an object (kind, namespace, name) given by both, or by two API
/// groups, is taken from the first list and reported.
pub fn merge(first: Vec<Arc<Resource>>, second: Vec<Arc<Resource>>) -> Vec<Arc<Resource>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(first.len() + second.len());
    for r in first.into_iter().chain(second) {
        let key: (Kind, String, String) = (
            r.kind(),
            r.namespace().unwrap_or_default().to_string(),
            r.name().to_string(),
        );
        if seen.insert(key) {
            out.push(r);
        } else {
            tracing::warn!(object = %r.object_ref(), api_version = r.api_version(), "defined twice; the first definition is used");
        }
    }
    out
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

    const VS: &str = r#"{"apiVersion":"networking.istio.io/v1","kind":"VirtualService",
        "metadata":{"name":"reviews","namespace":"default","resourceVersion":"7"},
        "spec":{"hosts":["reviews"],"http":[{"route":[{"destination":{"host":"reviews"}}]}]}}"#;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: "networking.istio.io".into(),
            kind: "VirtualService".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn an_invalid_object_keeps_its_last_good_version() {
        let mut store = ObjectStore::default();
        assert!(store.apply(key("reviews"), serde_json::from_str(VS).unwrap()));
        assert!(!store.apply(key("reviews"), serde_json::from_str(VS).unwrap()));
        let bad = VS.replace(
            r#""destination":{"host":"reviews"}"#,
            r#""destination":{"host":"reviews"},"weight":-5"#,
        );
        assert!(!store.apply(key("reviews"), serde_json::from_str(&bad).unwrap()));
        assert_eq!(store.resources().len(), 1);
        let msg = store.errors()[0].to_string();
        assert!(
            msg.starts_with("VirtualService/default/reviews: spec.http[0].route[0].weight"),
            "{msg}"
        );
        assert!(store.delete(&key("reviews")));
        assert!(store.resources().is_empty() && store.errors().is_empty());
    }

    #[test]
    fn replace_drops_objects_missing_from_the_relist() {
        let mut store = ObjectStore::default();
        store.apply(key("reviews"), serde_json::from_str(VS).unwrap());
        let ratings = VS.replace("\"reviews\"", "\"ratings\"");
        assert!(store.replace(
            "networking.istio.io",
            "VirtualService",
            vec![(key("ratings"), serde_json::from_str(&ratings).unwrap())]
        ));
        let names: Vec<_> = store
            .resources()
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        assert_eq!(names, ["ratings"]);
    }

    #[test]
    fn merge_keeps_the_first_definition() {
        let shared = |(r, _): (Vec<Resource>, _)| r.into_iter().map(Arc::new).collect::<Vec<_>>();
        let a = shared(mesh_api::load_str("a.yaml", SE));
        let b = shared(mesh_api::load_str("b.yaml", &SE.replace("9080", "9090")));
        assert_ne!(a, b);
        let merged = merge(a.clone(), b);
        assert_eq!(merged, a);
    }
}
