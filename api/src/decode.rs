//! Decoding one YAML document into a typed resource: envelope, kind, field
//! names and types, with every unknown field reported.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ObjectRef, ValidationError};
use crate::path::FieldPath;
use crate::resource::{Kind, Object, ObjectMeta, Resource, Source};
use crate::yaml::{self, Document};

/// Top-level keys of a Kubernetes object; `status` is written by controllers and ignored.
const ENVELOPE: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Kinds that Istio retired, with the replacement to name in the error.
const RETIRED: &[(&str, &str)] = &[
    ("ExternalService", "ServiceEntry"),
    ("RouteRule", "VirtualService"),
    ("DestinationPolicy", "DestinationRule"),
    ("EgressRule", "ServiceEntry"),
    ("Policy", "PeerAuthentication and RequestAuthentication"),
    ("MeshPolicy", "PeerAuthentication"),
    ("ServiceRole", "AuthorizationPolicy"),
    ("ServiceRoleBinding", "AuthorizationPolicy"),
    ("RbacConfig", "AuthorizationPolicy"),
    ("ClusterRbacConfig", "AuthorizationPolicy"),
];

/// Builds errors for one document before it has become a `Resource`.
struct DocErrors<'a> {
    file: Option<&'a Path>,
    doc: &'a Document,
    object: Option<ObjectRef>,
    errors: Vec<ValidationError>,
}

impl DocErrors<'_> {
    fn push(&mut self, path: &FieldPath, reason: impl Into<String>) {
        let line = lookup_line(&self.doc.lines, path).or(Some(self.doc.line));
        self.errors.push(ValidationError {
            file: self.file.map(Path::to_path_buf),
            line,
            object: self.object.clone(),
            field: path.to_string(),
            reason: reason.into(),
        });
    }
}

fn lookup_line(lines: &yaml::LineMap, path: &FieldPath) -> Option<usize> {
    let mut p = Some(path.clone());
    while let Some(cur) = p {
        if cur.is_empty() {
            return None;
        }
        if let Some(l) = lines.get(cur.as_str()) {
            return Some(*l);
        }
        p = cur.parent();
    }
    None
}

/// Turns serde's messages into the wording of the rest of the validator.
fn reword(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("unknown variant `")
        && let Some((value, tail)) = rest.split_once('`')
    {
        let expected = tail.trim_start_matches(", expected ").replace('`', "");
        return format!("unsupported value {value:?} ({expected})");
    }
    msg.to_string()
}

/// snake_case to camelCase, to name the field an old file meant.
fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn unknown_field_reason(field: &str, msg: &str) -> String {
    let fixed = camel(field);
    if fixed != field && msg.contains(&format!("`{fixed}`")) {
        return format!("unknown field (snake_case is a retired form; the field is `{fixed}`)");
    }
    "unknown field".to_string()
}

enum Seg {
    Key(String),
    Index(usize),
}

fn segments(p: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    p.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

fn field_path(base: &FieldPath, segs: &[Seg]) -> FieldPath {
    segs.iter().fold(base.clone(), |p, s| match s {
        Seg::Key(k) => p.key(k),
        Seg::Index(i) => p.index(*i),
    })
}

/// Removes `key` from the map at `parent`; false when there is nothing to remove.
fn remove_entry(value: &mut Value, parent: &[Seg], key: &str) -> bool {
    let mut cur = value;
    for seg in parent {
        let next = match (seg, cur) {
            (Seg::Key(k), Value::Object(m)) => m.get_mut(k),
            (Seg::Index(i), Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => return false,
        }
    }
    match cur {
        Value::Object(m) => m.remove(key).is_some(),
        _ => false,
    }
}

/// Decodes `value` as `T`, reporting every unknown field and type error with
/// its path. Offending map entries are dropped and decoding retried so one
/// pass reports them all; the result is `None` if anything was reported.
fn decode_part<T: DeserializeOwned>(
    mut value: Value,
    base: &FieldPath,
    errs: &mut DocErrors<'_>,
) -> Option<T> {
    let mut clean = true;
    for _ in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => return clean.then_some(t),
            Err(e) => e,
        };
        clean = false;
        let mut segs = segments(err.path());
        let msg = err.into_inner().to_string();
        let unknown = msg
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(f, _)| f.to_string());
        let (key, reason) = match unknown {
            Some(field) => {
                // Depending on the deserializer the path may already end at the field.
                if matches!(segs.last(), Some(Seg::Key(k)) if *k == field) {
                    segs.pop();
                }
                let reason = unknown_field_reason(&field, &msg);
                (field, reason)
            }
            None => match segs.pop() {
                Some(Seg::Key(k)) => (k, reword(&msg)),
                other => {
                    segs.extend(other);
                    errs.push(&field_path(base, &segs), reword(&msg));
                    return None;
                }
            },
        };
        errs.push(&field_path(base, &segs).key(&key), reason);
        if !remove_entry(&mut value, &segs, &key) {
            return None;
        }
    }
    None
}

fn decode_object<T: DeserializeOwned + Default>(
    api_version: &str,
    map: &serde_json::Map<String, Value>,
    spec_required: bool,
    errs: &mut DocErrors<'_>,
) -> Option<Object<T>> {
    let root = FieldPath::root();
    let metadata: Option<ObjectMeta> = match map.get("metadata") {
        Some(m) => decode_part(m.clone(), &root.key("metadata"), errs),
        None => Some(ObjectMeta::default()),
    };
    let spec: Option<T> = match map.get("spec") {
        Some(Value::Null) | None => {
            if spec_required {
                errs.push(&root.key("spec"), "required value");
            }
            Some(T::default())
        }
        Some(s) => decode_part(s.clone(), &root.key("spec"), errs),
    };
    let source = Source {
        file: errs.file.map(Path::to_path_buf),
        line: Some(errs.doc.line),
        field_lines: errs.doc.lines.clone(),
    };
    Some(Object {
        api_version: api_version.to_string(),
        metadata: metadata?,
        spec: spec?,
        source,
    })
}

/// Decodes one YAML document into a typed resource (structure only: envelope,
/// kind, field names and types). Use [`crate::validate`] for Istio's rules.
pub fn decode(file: Option<&Path>, doc: &Document) -> Result<Resource, Vec<ValidationError>> {
    let mut errs = DocErrors {
        file,
        doc,
        object: None,
        errors: Vec::new(),
    };
    let root = FieldPath::root();
    let Value::Object(map) = &doc.value else {
        errs.push(&root, "document is not a mapping");
        return Err(errs.errors);
    };
    let kind_name = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let meta = map.get("metadata");
    errs.object = Some(ObjectRef {
        kind: kind_name.clone(),
        namespace: meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string),
        name: meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    });
    if kind_name.is_empty() {
        errs.push(&root.key("kind"), "kind is required");
        return Err(errs.errors);
    }
    let Some(kind) = Kind::from_name(&kind_name) else {
        let reason = match RETIRED.iter().find(|(k, _)| *k == kind_name) {
            Some((_, new)) => format!("unsupported kind {kind_name}: retired by Istio, use {new}"),
            None => {
                format!("unsupported kind {kind_name} ({api_version}): this mesh does not serve it")
            }
        };
        errs.push(&root.key("kind"), reason);
        return Err(errs.errors);
    };
    if !kind.accepts_api_version(&api_version) {
        let reason = if api_version.is_empty() {
            "apiVersion is required".to_string()
        } else {
            format!("unsupported apiVersion {api_version:?} for kind {kind}")
        };
        errs.push(&root.key("apiVersion"), reason);
    }
    for dup in &doc.duplicate_keys {
        let line = doc.lines.get(dup).copied();
        errs.errors.push(ValidationError {
            file: file.map(Path::to_path_buf),
            line: line.or(Some(doc.line)),
            object: errs.object.clone(),
            field: dup.clone(),
            reason: "duplicate key: the field is given more than once".into(),
        });
    }
    for key in map.keys() {
        if !ENVELOPE.contains(&key.as_str()) {
            errs.push(&root.key(key), "unknown field");
        }
    }
    let required = !matches!(kind, Kind::Sidecar | Kind::Telemetry) && !kind.is_security();
    let resource = match kind {
        Kind::VirtualService => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::VirtualService(Box::new(o))),
        Kind::DestinationRule => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::DestinationRule(Box::new(o))),
        Kind::ServiceEntry => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::ServiceEntry(Box::new(o))),
        Kind::WorkloadEntry => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::WorkloadEntry(Box::new(o))),
        Kind::WorkloadGroup => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::WorkloadGroup(Box::new(o))),
        Kind::Sidecar => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::Sidecar(Box::new(o))),
        Kind::Gateway => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::Gateway(Box::new(o))),
        Kind::PeerAuthentication => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::PeerAuthentication(Box::new(o))),
        Kind::AuthorizationPolicy => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::AuthorizationPolicy(Box::new(o))),
        Kind::RequestAuthentication => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::RequestAuthentication(Box::new(o))),
        Kind::Telemetry => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::Telemetry(Box::new(o))),
        Kind::LocalRateLimit => decode_object(&api_version, map, required, &mut errs)
            .map(|o| Resource::LocalRateLimit(Box::new(o))),
    };
    match resource {
        Some(r) if errs.errors.is_empty() => Ok(r),
        _ => Err(errs.errors),
    }
}

/// Decodes an object that did not come from a file (a Kubernetes watch event,
/// an AdmissionReview): errors name the object instead of a file and line.
pub fn decode_value(value: Value) -> Result<Resource, Vec<ValidationError>> {
    let doc = Document {
        line: 0,
        value,
        lines: Default::default(),
        duplicate_keys: Vec::new(),
    };
    decode(None, &doc)
        .map(|mut r| {
            r.set_source(Source::default());
            r
        })
        .map_err(|errs| {
            errs.into_iter()
                .map(|e| ValidationError { line: None, ..e })
                .collect()
        })
}
