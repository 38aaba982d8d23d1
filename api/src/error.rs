//! Validation errors: where (file, line, object, field) and why.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The Kubernetes identity of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// One problem found while loading or validating configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    /// Source file, when the object came from one.
    pub file: Option<PathBuf>,
    /// Line of the offending field, or of the document when the field has none.
    pub line: Option<usize>,
    pub object: Option<ObjectRef>,
    /// Field path such as `spec.http[0].route[1].weight`; empty for the whole object.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{}: ", file.display(), line)?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, _) => {
                if let Some(obj) = &self.object {
                    write!(f, "{obj}: ")?;
                }
            }
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ValidationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_file_line_field_reason() {
        let e = ValidationError {
            file: Some("reviews.yaml".into()),
            line: Some(14),
            object: None,
            field: "spec.http[0].route[1].weight".into(),
            reason: "must be between 0 and 100".into(),
        };
        assert_eq!(
            e.to_string(),
            "reviews.yaml:14: spec.http[0].route[1].weight: must be between 0 and 100"
        );
        let k = ValidationError {
            file: None,
            line: None,
            object: Some(ObjectRef {
                kind: "VirtualService".into(),
                namespace: Some("ns".into()),
                name: "r".into(),
            }),
            field: String::new(),
            reason: "bad".into(),
        };
        assert_eq!(k.to_string(), "VirtualService/ns/r: bad");
    }
}
