//! The injection template: the one description of what is added to a pod.
//!
//! Why a YAML template with placeholders rather than containers built in code: operators
//! change images, mounts, flags and security contexts without rebuilding the injector (the
//! template comes from a ConfigMap), and the default ([`DEFAULT_TEMPLATE`]) reads like the
//! manifest it produces. Why placeholders are substituted after parsing, inside string values,
//! rather than in the text: a value (an annotation, say) can then never inject YAML structure,
//! and no quoting rules are needed. What is not text (placement of the proxy, resources, probe
//! rewriting, labels) stays in code, which keeps the template free of conditionals.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Lifecycle, Probe, Volume};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::values::Values;

/// The template compiled into the injector.
pub const DEFAULT_TEMPLATE: &str = include_str!("../template/sidecar.yaml");

/// Placeholders computed for each pod.
pub const POD_FIELDS: &[&str] = &[
    "includeInboundPorts",
    "excludeInboundPorts",
    "includeOutboundIPRanges",
    "excludeOutboundIPRanges",
    "includeOutboundPorts",
    "excludeOutboundPorts",
    "appAddr",
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template: {0}")]
    Yaml(String),
    #[error("template: unknown placeholder {{{{ {0} }}}}")]
    UnknownPlaceholder(String),
    #[error("template: unterminated placeholder in {0:?}")]
    Unterminated(String),
    #[error("template: {0}")]
    Shape(String),
    #[error("template: unknown field {0} (not in the Kubernetes API)")]
    UnknownField(String),
}

/// What the template renders to for one pod.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rendered {
    pub init_container: Container,
    pub sidecar: Container,
    #[serde(default)]
    pub native_sidecar: NativeSidecar,
    #[serde(default)]
    pub first_container: FirstContainer,
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

/// Fields merged into the proxy when it runs as a native sidecar.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NativeSidecar {
    pub startup_probe: Option<Probe>,
}

/// Fields merged into the proxy when it runs as the first ordinary container.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirstContainer {
    pub lifecycle: Option<Lifecycle>,
}

/// A parsed template, checked once when loaded.
#[derive(Clone, Debug)]
pub struct Template {
    tree: Value,
    hash: String,
}

impl Template {
    /// Parses and checks a template: YAML shape, known placeholders, and a trial render.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let tree: Value =
            serde_saphyr::from_str(text).map_err(|e| TemplateError::Yaml(e.to_string()))?;
        let template = Template {
            tree,
            hash: format!("{:016x}", fnv1a(text.as_bytes())),
        };
        let probe: BTreeMap<String, String> = POD_FIELDS
            .iter()
            .map(|f| (f.to_string(), "1".to_string()))
            .collect();
        template.render(&Values::default(), &probe)?;
        // k8s-openapi ignores fields it does not know: a misspelt `readOnly` would vanish
        // silently. Whatever the typed parts do not carry back out is a typo.
        let mut tree = template.tree.clone();
        substitute(&mut tree, &|_| Some("1".to_string()))?;
        let typed: Rendered = serde_json::from_value(tree.clone())
            .map_err(|e| TemplateError::Shape(e.to_string()))?;
        let back = serde_json::to_value(&typed).map_err(|e| TemplateError::Shape(e.to_string()))?;
        if let Some(path) = unknown_key(&tree, &back, "") {
            return Err(TemplateError::UnknownField(path));
        }
        Ok(template)
    }

    /// The default template.
    pub fn default_template() -> Template {
        Template::parse(DEFAULT_TEMPLATE).expect("the embedded template is valid")
    }

    /// A short fingerprint of the template text, written into the status annotation.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Substitutes placeholders and types the result.
    pub fn render(
        &self,
        values: &Values,
        pod: &BTreeMap<String, String>,
    ) -> Result<Rendered, TemplateError> {
        let values = match serde_json::to_value(values) {
            Ok(Value::Object(m)) => m,
            _ => return Err(TemplateError::Shape("values are not an object".into())),
        };
        let lookup = |name: &str| -> Option<String> {
            if let Some(field) = name.strip_prefix(".Values.") {
                return match values.get(field)? {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => Some(String::new()),
                    other => Some(other.to_string()),
                };
            }
            name.strip_prefix(".Pod.")
                .filter(|f| POD_FIELDS.contains(f))
                .map(|f| pod.get(f).cloned().unwrap_or_default())
        };
        let mut tree = self.tree.clone();
        substitute(&mut tree, &lookup)?;
        let mut rendered: Rendered =
            serde_json::from_value(tree).map_err(|e| TemplateError::Shape(e.to_string()))?;
        drop_empty_flags(&mut rendered.init_container);
        drop_empty_flags(&mut rendered.sidecar);
        Ok(rendered)
    }
}

/// The first key of `tree` that `typed` (its typed round trip) lacks.
fn unknown_key(tree: &Value, typed: &Value, path: &str) -> Option<String> {
    match (tree, typed) {
        (Value::Object(t), Value::Object(b)) => t.iter().find_map(|(k, v)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match b.get(k) {
                Some(bv) => unknown_key(v, bv, &p),
                // Empty values are dropped by the model's serializer, not unknown.
                None if v.is_null() || v == &Value::Object(Default::default()) => None,
                None => Some(p),
            }
        }),
        (Value::Array(t), Value::Array(b)) => t
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (tv, bv))| unknown_key(tv, bv, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn substitute(v: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), TemplateError> {
    match v {
        Value::String(s) if s.contains("{{") => *s = expand(s, lookup)?,
        Value::Array(items) => {
            for item in items {
                substitute(item, lookup)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                substitute(item, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unterminated(s.to_string()))?;
        let name = after[..end].trim();
        let value =
            lookup(name).ok_or_else(|| TemplateError::UnknownPlaceholder(name.to_string()))?;
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `--flag ""` becomes nothing: an unset optional setting leaves the binary's default.
fn drop_empty_flags(c: &mut Container) {
    let Some(args) = c.args.take() else { return };
    let mut out: Vec<String> = Vec::with_capacity(args.len());
    for arg in args {
        if arg.is_empty() && out.last().is_some_and(|f| f.starts_with('-')) {
            out.pop();
            continue;
        }
        out.push(arg);
    }
    c.args = Some(out);
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(fields: &[(&str, &str)]) -> BTreeMap<String, String> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_template_renders_values_and_pod_fields() {
        let t = Template::default_template();
        let values = Values {
            proxy_image: "example/proxy:9".into(),
            ..Values::default()
        };
        let r = t
            .render(
                &values,
                &pod(&[
                    ("includeInboundPorts", "*"),
                    ("includeOutboundIPRanges", "*"),
                    ("appAddr", "127.0.0.1:8080"),
                ]),
            )
            .unwrap();
        assert_eq!(r.sidecar.image.as_deref(), Some("example/proxy:9"));
        assert_eq!(r.init_container.image.as_deref(), Some("example/proxy:9"));
        let init = r.init_container.args.unwrap();
        // Unset excludes are dropped with their flags.
        assert_eq!(
            init,
            [
                "iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i",
                "*", "-b", "*"
            ]
        );
        let args = r.sidecar.args.unwrap();
        assert!(
            args.windows(2)
                .any(|w| w == ["--app-addr", "127.0.0.1:8080"])
        );
        assert_eq!(r.volumes.len(), 3);
    }

    #[test]
    fn values_cannot_inject_structure() {
        let t =
            Template::parse("initContainer: {name: \"{{ .Pod.appAddr }}\"}\nsidecar: {name: p}\n")
                .unwrap();
        let evil = "x\"\nsidecar: {name: pwned}";
        let r = t
            .render(&Values::default(), &pod(&[("appAddr", evil)]))
            .unwrap();
        assert_eq!(r.init_container.name, evil);
        assert_eq!(r.sidecar.name, "p");
    }

    #[test]
    fn bad_templates_are_rejected_on_load() {
        let err =
            Template::parse("initContainer: {name: \"{{ .Values.nope }}\"}\nsidecar: {name: p}\n")
                .unwrap_err();
        assert!(err.to_string().contains(".Values.nope"), "{err}");
        assert!(
            Template::parse("initContainer: {name: \"{{ .Pod.x\"}\nsidecar: {name: p}\n").is_err()
        );
        assert!(Template::parse("sidecar: {name: p}\n").is_err());
        assert!(
            Template::parse("initContainer: {name: a}\nsidecar: {name: p}\nextra: 1\n").is_err()
        );
        assert!(Template::parse(": : :").is_err());
        let typo = DEFAULT_TEMPLATE.replace("readOnly: true", "readonly: true");
        let err = Template::parse(&typo).unwrap_err();
        assert_eq!(
            err.to_string(),
            "template: unknown field sidecar.volumeMounts[1].readonly (not in the Kubernetes API)"
        );
    }
}
