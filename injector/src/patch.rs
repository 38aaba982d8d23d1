//! JSONPatch (RFC 6902) from the original pod to the injected one.
//!
//! The patch is generated here rather than with a generic diff because the API server applies
//! it to the object *it* holds, which may carry fields `k8s-openapi` does not know (newer or
//! alpha fields). Both sides of the diff went through the typed model, so the ops must never
//! carry a re-serialized copy of the original: objects are diffed key by key, and lists of
//! named items (containers, init containers, volumes, env, ports, mounts) item by item by
//! name, so an inserted container is one `add` at its index and the others are not rewritten.

use serde_json::{Map, Value, json};

/// Ops from `old` to `new`, with paths under `prefix` (a JSON pointer, `""` for the root).
pub fn diff(prefix: &str, old: &Value, new: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    diff_value(prefix, old, new, &mut ops);
    ops
}

/// Escapes one JSON-pointer token (`~` and `/`, RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn diff_value(path: &str, old: &Value, new: &Value, ops: &mut Vec<Value>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => diff_object(path, o, n, ops),
        (Value::Array(o), Value::Array(n)) if named(o) && named(n) => diff_named(path, o, n, ops),
        _ => ops.push(json!({"op": "replace", "path": path, "value": new})),
    }
}

fn diff_object(path: &str, o: &Map<String, Value>, n: &Map<String, Value>, ops: &mut Vec<Value>) {
    for (k, old) in o {
        let p = format!("{path}/{}", escape(k));
        match n.get(k) {
            Some(new) => diff_value(&p, old, new, ops),
            None => ops.push(json!({"op": "remove", "path": p})),
        }
    }
    for (k, new) in n {
        if !o.contains_key(k) {
            let p = format!("{path}/{}", escape(k));
            ops.push(json!({"op": "add", "path": p, "value": new}));
        }
    }
}

fn name_of(v: &Value) -> Option<&str> {
    v.get("name")?.as_str()
}

fn named(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|v| name_of(v).is_some())
}

/// Insertions of new names keep the rest in place; any other reshuffle replaces the list.
fn diff_named(path: &str, o: &[Value], n: &[Value], ops: &mut Vec<Value>) {
    let old_names: Vec<&str> = o.iter().filter_map(name_of).collect();
    let kept: Vec<&str> = n
        .iter()
        .filter_map(name_of)
        .filter(|name| old_names.contains(name))
        .collect();
    if kept != old_names {
        ops.push(json!({"op": "replace", "path": path, "value": n}));
        return;
    }
    let mut i = 0;
    // Ops apply in order, so after the first j items of `n` are in place, index j is right.
    for (j, item) in n.iter().enumerate() {
        let p = format!("{path}/{j}");
        if i < o.len() && name_of(&o[i]) == name_of(item) {
            diff_value(&p, &o[i], item, ops);
            i += 1;
        } else {
            ops.push(json!({"op": "add", "path": p, "value": item}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(doc: &Value, ops: &[Value]) -> Value {
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
        let mut out = doc.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        out
    }

    #[test]
    fn inserts_by_name_and_escapes_keys() {
        let old = json!({"metadata": {"annotations": {"a/b": "1"}},
            "spec": {"containers": [{"name": "app", "image": "x"}], "volumes": []}});
        let new = json!({"metadata": {"annotations": {"a/b": "1", "c~d/e": "2"}, "labels": {"l": "v"}},
            "spec": {"containers": [{"name": "proxy"}, {"name": "app", "image": "x", "env": []}],
                     "volumes": [{"name": "v"}]}});
        let ops = diff("", &old, &new);
        assert_eq!(apply(&old, &ops), new);
        assert!(ops.contains(
            &json!({"op": "add", "path": "/spec/containers/0", "value": {"name": "proxy"}})
        ));
        assert!(ops.contains(
            &json!({"op": "add", "path": "/metadata/annotations/c~0d~1e", "value": "2"})
        ));
        // The app container is not rewritten: only its new field is added.
        assert!(ops.contains(&json!({"op": "add", "path": "/spec/containers/1/env", "value": []})));
    }

    #[test]
    fn fields_unknown_to_the_model_survive() {
        // What the API server holds has a field that the typed round trip dropped.
        let server = json!({"spec": {"containers": [{"name": "app", "futureField": 1}]}});
        let typed_old = json!({"spec": {"containers": [{"name": "app"}]}});
        let typed_new = json!({"spec": {"containers": [{"name": "app", "x": 2}], "hostname": "h"}});
        let out = apply(&server, &diff("", &typed_old, &typed_new));
        assert_eq!(out["spec"]["containers"][0]["futureField"], 1);
        assert_eq!(out["spec"]["containers"][0]["x"], 2);
        assert_eq!(out["spec"]["hostname"], "h");
    }

    #[test]
    fn reorders_fall_back_to_replace_and_prefix_applies() {
        let old = json!({"t": {"c": [{"name": "a"}, {"name": "b"}]}});
        let new = json!({"t": {"c": [{"name": "b"}, {"name": "a"}]}});
        let ops = diff("/t", &old["t"], &new["t"]);
        assert_eq!(
            ops,
            vec![json!({"op": "replace", "path": "/t/c", "value": new["t"]["c"]})]
        );
        assert_eq!(apply(&old, &ops), new);
        assert!(diff("", &old, &old).is_empty());
    }
}
