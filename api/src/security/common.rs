//! Types shared by the security resources.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `selector: {matchLabels: {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadSelector {
    pub match_labels: BTreeMap<String, String>,
}

/// A reference to a Kubernetes object (`targetRef`, `targetRefs`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PolicyTargetReference {
    pub group: Option<String>,
    pub kind: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
}
