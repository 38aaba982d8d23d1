//! Request and response header operations (set, add, remove), compiled once per config.

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_proto::config::v1 as pb;

use crate::config::FieldError;

#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn compile(ops: Option<&pb::HeaderOperations>) -> Result<Self, FieldError> {
        let Some(ops) = ops else {
            return Ok(Self::default());
        };
        let pairs = |list: &[pb::HeaderValue], field: &str| {
            list.iter()
                .enumerate()
                .map(|(i, hv)| {
                    let name = header_name(&hv.name)
                        .map_err(|r| FieldError::new(format!("{field}[{i}].name"), r))?;
                    let value = HeaderValue::from_str(&hv.value).map_err(|_| {
                        FieldError::new(format!("{field}[{i}].value"), "invalid header value")
                    })?;
                    Ok::<_, FieldError>((name, value))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let remove = ops
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| header_name(n).map_err(|r| FieldError::new(format!("remove[{i}]"), r)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            set: pairs(&ops.set, "set")?,
            add: pairs(&ops.add, "add")?,
            remove,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Whether these edits set or add a header `named` picks out.
    #[inline]
    pub fn writes_any(&self, named: impl Fn(&str) -> bool) -> bool {
        (!self.set.is_empty() || !self.add.is_empty())
            && self
                .set
                .iter()
                .chain(&self.add)
                .any(|(name, _)| named(name.as_str()))
    }

    /// Removes first, then sets, then appends, as Envoy evaluates header mutations. Most
    /// routes edit nothing: that case is a check where the call is.
    #[inline]
    pub fn apply(&self, headers: &mut HeaderMap) {
        if !self.is_empty() {
            self.apply_edits(headers);
        }
    }

    fn apply_edits(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_then_set_then_add() {
        let ops = HeaderOps::compile(Some(&pb::HeaderOperations {
            set: vec![pb::HeaderValue {
                name: "X-Set".into(),
                value: "new".into(),
            }],
            add: vec![pb::HeaderValue {
                name: "x-add".into(),
                value: "two".into(),
            }],
            remove: vec!["x-gone".into()],
        }))
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-set", "old".parse().unwrap());
        h.insert("x-add", "one".parse().unwrap());
        h.insert("x-gone", "bye".parse().unwrap());
        ops.apply(&mut h);
        assert_eq!(h.get_all("x-set").iter().collect::<Vec<_>>(), ["new"]);
        assert_eq!(
            h.get_all("x-add").iter().collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert!(h.get("x-gone").is_none());
    }

    #[test]
    fn invalid_name_is_reported_with_its_field() {
        let err = HeaderOps::compile(Some(&pb::HeaderOperations {
            set: vec![pb::HeaderValue {
                name: "bad name".into(),
                value: "v".into(),
            }],
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(err.field, "set[0].name");
    }
}
