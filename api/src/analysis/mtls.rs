//! The PeerAuthentication mode in force for a workload, resolved as pilot resolves it (and
//! Istio): the workload-selector policy of its namespace beats the namespace-wide one, which
//! beats the mesh-wide one (root namespace, no selector); UNSET inherits; PERMISSIVE when
//! nothing is set; port-level modes come from the workload policy; the oldest policy wins at
//! one level.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ROOT_NAMESPACE, namespace_of};
use crate::path::FieldPath;
use crate::resource::Resource;
use crate::security::{Mtls, MtlsMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    Permissive,
    Strict,
    Disable,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Permissive => "PERMISSIVE",
            Mode::Strict => "STRICT",
            Mode::Disable => "DISABLE",
        })
    }
}

/// A resolved mode and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub mode: Mode,
    /// Index in the resources of the PeerAuthentication that set it; None: the default.
    pub policy: Option<usize>,
    /// The field that set it (`spec.mtls.mode`, `spec.portLevelMtls[8080].mode`).
    pub field: FieldPath,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    pub workload: Decision,
    /// Overrides by workload port.
    pub ports: BTreeMap<u32, Decision>,
}

fn mode_of(m: Option<&Mtls>) -> Option<Mode> {
    match m.map(|m| m.mode) {
        Some(MtlsMode::Strict) => Some(Mode::Strict),
        Some(MtlsMode::Permissive) => Some(Mode::Permissive),
        Some(MtlsMode::Disable) => Some(Mode::Disable),
        Some(MtlsMode::Unset) | None => None,
    }
}

/// Istio's age order: creation timestamp (none counts as oldest), then name, then namespace.
fn age_key(r: &Resource) -> (&str, &str, &str) {
    (
        r.metadata().creation_timestamp.as_deref().unwrap_or(""),
        r.name(),
        namespace_of(r),
    )
}

/// The mode in force for a workload of `namespace` with `labels`.
pub fn effective(
    resources: &[Resource],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Effective {
    let mut levels: [Option<usize>; 3] = [None; 3]; // mesh, namespace, workload
    for (i, r) in resources.iter().enumerate() {
        let Resource::PeerAuthentication(pa) = r else {
            continue;
        };
        let ns = namespace_of(r);
        let selector = pa
            .spec
            .selector
            .as_ref()
            .map(|s| &s.match_labels)
            .filter(|l| !l.is_empty());
        let level = match selector {
            None if ns == ROOT_NAMESPACE => 0,
            None if ns == namespace => 1,
            Some(sel)
                if ns == namespace
                    && ns != ROOT_NAMESPACE
                    && super::inventory::selects(sel, labels) =>
            {
                2
            }
            _ => continue,
        };
        let slot = &mut levels[level];
        if slot.is_none_or(|cur| age_key(r) < age_key(&resources[cur])) {
            *slot = Some(i);
        }
    }
    let mode_field = FieldPath::root().key("spec").key("mtls").key("mode");
    let mut workload = Decision {
        mode: Mode::Permissive,
        policy: None,
        field: mode_field.clone(),
    };
    for i in levels.iter().flatten() {
        if let Resource::PeerAuthentication(pa) = &resources[*i]
            && let Some(mode) = mode_of(pa.spec.mtls.as_ref())
        {
            workload = Decision {
                mode,
                policy: Some(*i),
                field: mode_field.clone(),
            };
        }
    }
    let mut ports = BTreeMap::new();
    if let Some(i) = levels[2]
        && let Resource::PeerAuthentication(pa) = &resources[i]
    {
        for (port, m) in pa.spec.port_level_mtls.iter().flatten() {
            let Ok(number) = port.parse::<u32>() else {
                continue;
            };
            let decision = match mode_of(Some(m)) {
                Some(mode) => Decision {
                    mode,
                    policy: Some(i),
                    field: FieldPath::root()
                        .key("spec")
                        .key("portLevelMtls")
                        .key(port)
                        .key("mode"),
                },
                None => workload.clone(),
            };
            ports.insert(number, decision);
        }
    }
    Effective { workload, ports }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Vec<Resource> {
        let (r, e) = crate::load_str("pa.yaml", yaml);
        assert!(e.is_empty(), "{e:?}");
        r
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MESH_STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";

    #[test]
    fn permissive_without_any_policy() {
        let e = effective(&[], "default", &labels(&[]));
        assert_eq!(e.workload.mode, Mode::Permissive);
        assert_eq!(e.workload.policy, None);
    }

    #[test]
    fn workload_beats_namespace_beats_mesh_and_unset_inherits() {
        let r = load(&format!(
            "{MESH_STRICT}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: ns, namespace: shop}}\nspec: {{mtls: {{mode: PERMISSIVE}}}}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: db, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: db}}}}\n  mtls: {{mode: UNSET}}\n  portLevelMtls: {{'5432': {{mode: DISABLE}}}}\n"
        ));
        assert_eq!(
            effective(&r, "other", &labels(&[])).workload.policy,
            Some(0)
        );
        let web = effective(&r, "shop", &labels(&[("app", "web")]));
        assert_eq!(
            (web.workload.mode, web.workload.policy),
            (Mode::Permissive, Some(1))
        );
        let db = effective(&r, "shop", &labels(&[("app", "db")]));
        assert_eq!(db.workload.mode, Mode::Permissive, "UNSET inherits");
        assert_eq!(db.ports[&5432].mode, Mode::Disable);
        assert_eq!(db.ports[&5432].policy, Some(2));
    }
}
