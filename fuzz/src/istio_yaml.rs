//! Istio YAML (multi-document streams, `List`s) decoded and validated as the pilot's file
//! source, `meshctl validate` and the validating webhook do. Input: the YAML text.

use mesh_api::{Resource, Source, decode_value, load_str, parse_str, validate};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (valid, errors) = load_str("fuzz.yaml", text);
    for e in &errors {
        // Every rejection says why, and where in the file when it has a line.
        assert!(!e.reason.is_empty(), "an error without a reason: {e:?}");
        let _ = e.to_string();
    }
    let (parsed, _) = parse_str("fuzz.yaml", text);
    assert!(
        valid.len() <= parsed.len(),
        "load_str accepted more than it decoded"
    );
    for resource in valid {
        assert!(validate(&resource).is_empty(), "valid, then not");
        round_trip(resource);
    }
}

/// An accepted object, written as Kubernetes JSON (what the pilot's Kubernetes source and
/// the webhook read), decodes to the same object and is still valid.
fn round_trip(mut resource: Resource) {
    resource.set_source(Source::default());
    let json = serde_json::to_value(&resource).expect("a resource serializes");
    let again = match decode_value(json.clone()) {
        Ok(r) => r,
        Err(e) => panic!("{json} does not decode again: {e:?}"),
    };
    assert_eq!(again, resource, "changed by a JSON round trip: {json}");
    assert!(validate(&again).is_empty());
}
