//! Loading: YAML text, files and directories into validated resources.

use std::path::{Path, PathBuf};

use crate::decode::decode;
use crate::error::ValidationError;
use crate::resource::Resource;
use crate::yaml;

/// Decodes every document of a YAML stream without applying Istio's rules.
/// `file` names the source in errors.
pub fn parse_str(file: impl AsRef<Path>, text: &str) -> (Vec<Resource>, Vec<ValidationError>) {
    let file = file.as_ref();
    let (docs, syntax) = yaml::parse_documents(text);
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for doc in docs.iter().flat_map(expand_list) {
        match decode(Some(file), &doc) {
            Ok(r) => resources.push(r),
            Err(e) => errors.extend(e),
        }
    }
    if let Some(s) = syntax {
        errors.push(ValidationError {
            file: Some(file.to_path_buf()),
            line: Some(s.line),
            object: None,
            field: String::new(),
            reason: format!("YAML syntax error: {}", s.message),
        });
    }
    (resources, errors)
}

/// A Kubernetes `List` (what `kubectl get -o yaml` prints) becomes one
/// document per item, keeping each item's lines.
fn expand_list(doc: &yaml::Document) -> Vec<yaml::Document> {
    let is_list = doc.value.get("kind").and_then(|k| k.as_str()) == Some("List");
    let Some(items) = doc
        .value
        .get("items")
        .and_then(|i| i.as_array())
        .filter(|_| is_list)
    else {
        return vec![doc.clone()];
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let prefix = format!("items[{i}]");
            let lines = doc
                .lines
                .iter()
                .filter_map(|(k, v)| {
                    let rest = k.strip_prefix(&prefix)?;
                    let rest = rest.strip_prefix('.').unwrap_or(rest);
                    (!rest.is_empty()).then(|| (rest.to_string(), *v))
                })
                .collect();
            yaml::Document {
                line: doc.lines.get(&prefix).copied().unwrap_or(doc.line),
                value: item.clone(),
                lines,
                duplicate_keys: Vec::new(),
            }
        })
        .collect()
}

/// Loads and validates a YAML stream: returns the valid resources and every
/// error (syntax, structure, Istio's rules). Invalid objects are not returned.
pub fn load_str(file: impl AsRef<Path>, text: &str) -> (Vec<Resource>, Vec<ValidationError>) {
    let (parsed, mut errors) = parse_str(file, text);
    let mut valid = Vec::new();
    for r in parsed {
        let e = crate::validate(&r);
        if e.is_empty() {
            valid.push(r);
        } else {
            errors.extend(e);
        }
    }
    (valid, errors)
}

/// Whether a directory entry is a config file.
fn is_config_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Config files under `path` (the file itself, or a directory walked in name order).
pub fn config_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        // Hidden entries are editor and Kubernetes ConfigMap bookkeeping (`..data`).
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            out.extend(config_files(&p)?);
        } else if is_config_file(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Loads and validates a file or a directory of YAML files.
pub fn load_path(path: impl AsRef<Path>) -> (Vec<Resource>, Vec<ValidationError>) {
    let path = path.as_ref();
    let io_error = |p: &Path, e: std::io::Error| ValidationError {
        file: Some(p.to_path_buf()),
        line: None,
        object: None,
        field: String::new(),
        reason: format!("cannot read: {e}"),
    };
    let files = match config_files(path) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), vec![io_error(path, e)]),
    };
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => {
                let (r, e) = load_str(&f, &text);
                resources.extend(r);
                errors.extend(e);
            }
            Err(e) => errors.push(io_error(&f, e)),
        }
    }
    (resources, errors)
}
