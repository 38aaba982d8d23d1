//! Peer metadata: who a workload is (name, namespace, app, version, cluster), as the two proxies
//! of a call tell each other in a header over their mTLS connection, and as labels show it.
//!
//! Encoding (the mesh's own, compact): `x-mesh-peer-metadata: <base64url, no padding, of a
//! JSON object>` with Istio's node metadata keys `WORKLOAD_NAME`, `NAMESPACE`, `APP`,
//! `VERSION`, `CLUSTER_ID`. Istio's own headers (`x-envoy-peer-metadata`,
//! `x-envoy-peer-metadata-id`) are stripped wherever ours is, so neither reaches an app.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// The header carrying a proxy's own metadata, on requests and responses between proxies.
pub const PEER_METADATA: HeaderName = HeaderName::from_static("x-mesh-peer-metadata");
/// Istio's headers for the same exchange; never passed on.
const ISTIO_PEER_METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
const ISTIO_PEER_METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

/// Longest header value read; anything longer is ignored unread.
const MAX_ENCODED: usize = 2048;
/// Longest field value (a DNS name, as Kubernetes names and label values are shorter).
const MAX_FIELD: usize = 253;

/// What a proxy says about its workload. Every field is non-empty after [`Self::normalized`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkloadMetadata {
    #[serde(rename = "WORKLOAD_NAME")]
    pub name: String,
    #[serde(rename = "NAMESPACE")]
    pub namespace: String,
    #[serde(rename = "APP")]
    pub app: String,
    #[serde(rename = "VERSION")]
    pub version: String,
    #[serde(rename = "CLUSTER_ID")]
    pub cluster: String,
}

/// Istio's value for a label it cannot know.
pub const UNKNOWN: &str = "unknown";

impl WorkloadMetadata {
    /// A workload from its name, namespace and pod labels, as Istio reads them: `app` then
    /// `app.kubernetes.io/name` then `service.istio.io/canonical-name`; `version` then
    /// `app.kubernetes.io/version` then `service.istio.io/canonical-revision`.
    pub fn from_labels<'a>(
        name: &str,
        namespace: &str,
        cluster: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Self {
        let first = |keys: &[&str]| {
            keys.iter().find_map(|k| {
                labels
                    .clone()
                    .into_iter()
                    .find(|(key, v)| key == k && !v.is_empty())
                    .map(|(_, v)| v.to_owned())
            })
        };
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            app: first(&[
                "app",
                "app.kubernetes.io/name",
                "service.istio.io/canonical-name",
            ])
            .unwrap_or_default(),
            version: first(&[
                "version",
                "app.kubernetes.io/version",
                "service.istio.io/canonical-revision",
            ])
            .unwrap_or_default(),
            cluster: cluster.to_owned(),
        }
        .normalized()
    }

    /// Empty fields read `unknown`, as Istio labels them.
    fn normalized(mut self) -> Self {
        for f in [
            &mut self.name,
            &mut self.namespace,
            &mut self.app,
            &mut self.version,
            &mut self.cluster,
        ] {
            if f.is_empty() {
                *f = UNKNOWN.to_owned();
            }
        }
        self
    }

    /// The header value announcing this workload.
    pub fn encode(&self) -> HeaderValue {
        let json = serde_json::to_vec(self).expect("strings serialize");
        HeaderValue::try_from(URL_SAFE_NO_PAD.encode(json)).expect("base64 is a valid header")
    }

    /// Reads a header value; `None` for anything malformed, oversized, or with a field outside
    /// the characters of Kubernetes names and label values (so a label never carries junk).
    pub fn decode(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        if bytes.len() > MAX_ENCODED {
            return None;
        }
        let json = URL_SAFE_NO_PAD.decode(bytes).ok()?;
        let meta: Self = serde_json::from_slice(&json).ok()?;
        let fields = [
            &meta.name,
            &meta.namespace,
            &meta.app,
            &meta.version,
            &meta.cluster,
        ];
        fields
            .iter()
            .all(|f| is_label_text(f))
            .then(|| meta.normalized())
    }
}

fn is_peer_metadata(name: &HeaderName) -> bool {
    is_peer_metadata_name(name.as_str())
}

/// Whether a (lowercase) header name is one of the peer metadata headers.
pub fn is_peer_metadata_name(name: &str) -> bool {
    // The shortest of the three is 20 bytes: most names are ruled out by their length.
    name.len() >= PEER_METADATA.as_str().len()
        && (name == PEER_METADATA.as_str()
            || name == ISTIO_PEER_METADATA.as_str()
            || name == ISTIO_PEER_METADATA_ID.as_str())
}

fn is_label_text(s: &str) -> bool {
    s.len() <= MAX_FIELD
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Removes every peer metadata header (ours and Istio's) and returns ours, if there was one.
/// Runs on every request and response: one pass over the names finds whether there is any,
/// since three hashed removes of absent names cost more than the pass.
pub fn take(headers: &mut HeaderMap) -> Option<HeaderValue> {
    if !headers.keys().any(is_peer_metadata) {
        return None;
    }
    headers.remove(ISTIO_PEER_METADATA);
    headers.remove(ISTIO_PEER_METADATA_ID);
    headers.remove(PEER_METADATA)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviews() -> WorkloadMetadata {
        WorkloadMetadata::from_labels(
            "reviews-v1",
            "default",
            "Kubernetes",
            [("app", "reviews"), ("version", "v1")],
        )
    }

    #[test]
    fn round_trips_through_the_header() {
        let meta = reviews();
        assert_eq!(WorkloadMetadata::decode(&meta.encode()), Some(meta));
    }

    #[test]
    fn labels_are_read_in_istios_order_and_missing_ones_are_unknown() {
        let m = WorkloadMetadata::from_labels(
            "w",
            "ns",
            "",
            [
                ("app.kubernetes.io/name", "shop"),
                ("service.istio.io/canonical-name", "other"),
            ],
        );
        assert_eq!(m.app, "shop");
        assert_eq!(m.version, UNKNOWN);
        assert_eq!(m.cluster, UNKNOWN);
    }

    #[test]
    fn malformed_or_hostile_values_are_ignored() {
        let bad = |v: &str| WorkloadMetadata::decode(&HeaderValue::from_str(v).unwrap());
        assert_eq!(bad("not base64!"), None);
        assert_eq!(bad(&URL_SAFE_NO_PAD.encode(b"{\"WORKLOAD_NAME\":1}")), None);
        let mut meta = reviews();
        meta.app = "a\"b,c=d".into();
        assert_eq!(WorkloadMetadata::decode(&meta.encode()), None);
        meta.app = "x".repeat(MAX_FIELD + 1);
        assert_eq!(WorkloadMetadata::decode(&meta.encode()), None);
    }

    #[test]
    fn take_strips_ours_and_istios() {
        let mut h = HeaderMap::new();
        h.insert(PEER_METADATA, reviews().encode());
        h.insert(ISTIO_PEER_METADATA, HeaderValue::from_static("ChoK"));
        h.insert(
            ISTIO_PEER_METADATA_ID,
            HeaderValue::from_static("sidecar~x"),
        );
        assert!(take(&mut h).is_some());
        assert!(h.is_empty());
        // Each alone is found by the pass over the names, whatever else the message has.
        for name in [ISTIO_PEER_METADATA, ISTIO_PEER_METADATA_ID] {
            let mut h = HeaderMap::new();
            h.insert(http::header::HOST, HeaderValue::from_static("reviews"));
            h.insert(name.clone(), HeaderValue::from_static("x"));
            assert!(take(&mut h).is_none());
            assert_eq!(h.len(), 1, "{name} was not removed: {h:?}");
        }
    }
}
