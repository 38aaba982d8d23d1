//! Field paths as users read them: `spec.http[0].route[1].weight`.

use std::fmt;

/// A path to a field inside a resource document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Appends a map key; keys that are not plain identifiers (label names, port
    /// numbers) are bracketed so the path stays unambiguous.
    pub fn key(&self, key: &str) -> Self {
        let mut s = self.0.clone();
        let plain = !key.is_empty()
            && key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if plain {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(key);
        } else {
            s.push('[');
            s.push_str(key);
            s.push(']');
        }
        Self(s)
    }

    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The path with its last segment removed, used to fall back to the nearest
    /// ancestor that has a known line.
    pub fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            return None;
        }
        let s = &self.0;
        let cut = if s.ends_with(']') {
            s.rfind('[').unwrap_or(0)
        } else {
            s.rfind(['.', ']'])
                .map(|i| if s.as_bytes()[i] == b'.' { i } else { i + 1 })
                .unwrap_or(0)
        };
        Some(Self(s[..cut].to_string()))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&serde_path_to_error::Path> for FieldPath {
    fn from(p: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        let mut out = FieldPath::root();
        for seg in p.iter() {
            out = match seg {
                Segment::Seq { index } => out.index(*index),
                Segment::Map { key } => out.key(key),
                Segment::Enum { variant } => out.key(variant),
                Segment::Unknown => out,
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parents() {
        let p = FieldPath::root()
            .key("spec")
            .key("http")
            .index(0)
            .key("route")
            .index(1);
        assert_eq!(p.as_str(), "spec.http[0].route[1]");
        let l = FieldPath::root().key("spec").key("portLevelMtls").key("80");
        assert_eq!(l.as_str(), "spec.portLevelMtls[80]");
        assert_eq!(p.parent().unwrap().as_str(), "spec.http[0].route");
        assert_eq!(l.parent().unwrap().as_str(), "spec.portLevelMtls");
        assert_eq!(FieldPath::root().key("spec").parent().unwrap().as_str(), "");
    }
}
