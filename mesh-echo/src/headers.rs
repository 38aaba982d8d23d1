//! Header maps flattened for reporting back to the client.

use std::collections::BTreeMap;

use http::HeaderMap;

/// Lowercase name to value; repeated headers are joined by ", " as HTTP allows.
pub fn flatten(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        // Non-UTF-8 values are still worth showing; a lossy copy beats dropping them.
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_values_are_joined() {
        let mut h = HeaderMap::new();
        h.append("X-Multi", "a".parse().unwrap());
        h.append("x-multi", "b".parse().unwrap());
        h.append("host", "example".parse().unwrap());
        let flat = flatten(&h);
        assert_eq!(flat["x-multi"], "a, b");
        assert_eq!(flat["host"], "example");
    }
}
