//! Injection of multi-document YAML manifests, for `meshctl kube-inject`. Documents that are
//! not injected (other kinds, opted-out pods) are copied through byte for byte, comments
//! included; injected ones are re-emitted from the injected object.

use serde_json::Value;

use crate::inject::Injector;
use crate::policy::NamespaceScope;
use crate::workload::{ObjectError, Outcome};

/// The result of injecting a manifest.
#[derive(Debug, Default)]
pub struct Report {
    pub output: String,
    /// Kind/name of every injected object.
    pub injected: Vec<String>,
    /// Kind/name and reason of every pod or workload left as it was.
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("document {index} ({what}): {reason}")]
pub struct ManifestError {
    /// 1-based position of the document in the input.
    pub index: usize,
    pub what: String,
    pub reason: String,
}

/// Splits a YAML stream at `---` lines; text after `--- ` on the marker line belongs to the
/// next document. Empty documents are dropped.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let rest = bare
            .strip_prefix("---")
            .filter(|r| r.is_empty() || r.starts_with([' ', '\t']));
        match rest {
            Some(rest) => {
                let mut next = String::new();
                if !rest.trim().is_empty() && !rest.trim_start().starts_with('#') {
                    next.push_str(rest.trim_start());
                    next.push('\n');
                }
                docs.push(next);
            }
            None if bare == "..." => {}
            None => docs.last_mut().expect("never empty").push_str(line),
        }
    }
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

fn describe(v: &Value) -> String {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{kind}/{name}")
}

/// Injects every Pod and workload in `text`, a multi-document YAML stream.
pub fn inject_manifests(injector: &Injector, text: &str) -> Result<Report, ManifestError> {
    let mut report = Report::default();
    let mut out: Vec<String> = Vec::new();
    for (i, doc) in split_documents(text).into_iter().enumerate() {
        let err = |what: String, reason: String| ManifestError {
            index: i + 1,
            what,
            reason,
        };
        let value: Value =
            serde_saphyr::from_str(&doc).map_err(|e| err("not YAML".into(), e.to_string()))?;
        let mut changed = false;
        let injected = match value.get("kind").and_then(Value::as_str) {
            Some(k) if k.ends_with("List") && value.get("items").is_some_and(Value::is_array) => {
                let mut list = value.clone();
                if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
                    for item in items.iter_mut() {
                        if let Some(new) = inject_one(injector, item, &mut report)
                            .map_err(|e| err(describe(item), e.to_string()))?
                        {
                            *item = new;
                            changed = true;
                        }
                    }
                }
                list
            }
            _ => match inject_one(injector, &value, &mut report)
                .map_err(|e| err(describe(&value), e.to_string()))?
            {
                Some(new) => {
                    changed = true;
                    new
                }
                None => value,
            },
        };
        if changed {
            let yaml = serde_saphyr::to_string(&injected)
                .map_err(|e| err(describe(&injected), e.to_string()))?;
            out.push(yaml);
        } else {
            out.push(doc);
        }
    }
    let mut output = String::new();
    for (i, doc) in out.iter().enumerate() {
        if i > 0 {
            output.push_str("---\n");
        }
        output.push_str(doc);
        if !doc.ends_with('\n') && i + 1 < out.len() {
            output.push('\n');
        }
    }
    report.output = output;
    Ok(report)
}

fn inject_one(
    injector: &Injector,
    value: &Value,
    report: &mut Report,
) -> Result<Option<Value>, ObjectError> {
    match injector.inject_object(value, None, NamespaceScope::Selected)? {
        Outcome::NotHandled => Ok(None),
        Outcome::Skipped(why) => {
            report.skipped.push((describe(value), why.to_string()));
            Ok(None)
        }
        Outcome::Injected { object, .. } => {
            report.injected.push(describe(value));
            Ok(Some(object))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;
    use crate::values::Values;

    #[test]
    fn splits_on_markers_only() {
        let docs = split_documents(
            "# head\n---\na: 1\n--- # c\nb: '---'\n---\n\n--- c: 3\n...\n---x: 4\n",
        );
        assert_eq!(docs, ["a: 1\n", "b: '---'\n", "c: 3\n---x: 4\n"]);
    }

    #[test]
    fn passes_other_kinds_through_and_injects_lists() {
        let inj = Injector::new(Values::default(), Template::default_template()).unwrap();
        let text = "\
apiVersion: v1
kind: Service   # keep this comment
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a}
  spec: {containers: [{name: a, image: x}]}
";
        let r = inject_manifests(&inj, text).unwrap();
        let docs = split_documents(&r.output);
        assert_eq!(
            docs[0],
            "apiVersion: v1\nkind: Service   # keep this comment\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n"
        );
        let list: Value = serde_saphyr::from_str(&docs[1]).unwrap();
        assert_eq!(
            list["items"][0]["spec"]["containers"][0]["name"],
            "mesh-proxy"
        );
        assert_eq!(r.injected, ["Pod/a"]);
        let e = inject_manifests(&inj, "kind: Pod\nspec: {containers: 1}\n").unwrap_err();
        assert_eq!(e.index, 1);
    }
}
