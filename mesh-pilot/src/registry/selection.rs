//! Workloads by namespace and label, so a ServiceEntry's `workloadSelector` looks at the
//! workloads carrying one of its labels instead of every workload of the namespace (with
//! 1000 entries over 10000 WorkloadEntries in one namespace that is 10 million label
//! comparisons per registry build without it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::model::{Workload, labels_match};

/// Workloads keyed by (namespace, name), with a posting list per (namespace, label, value).
/// Workloads are shared (`Arc`), so the next generation's index starts as a cheap copy.
#[derive(Clone, Debug, Default)]
pub(super) struct WorkloadIndex {
    workloads: BTreeMap<(String, String), Arc<Workload>>,
    /// (namespace, label key, label value) -> keys into `workloads`.
    by_label: HashMap<(String, String, String), Vec<(String, String)>>,
}

impl WorkloadIndex {
    pub fn insert(&mut self, w: Workload) {
        let key = (w.namespace.clone(), w.name.clone());
        self.remove(&key);
        for (k, v) in &w.labels {
            self.by_label
                .entry((w.namespace.clone(), k.clone(), v.clone()))
                .or_default()
                .push(key.clone());
        }
        self.workloads.insert(key, Arc::new(w));
    }

    /// Takes a workload out; returns it if it was there.
    pub fn remove(&mut self, key: &(String, String)) -> Option<Arc<Workload>> {
        let old = self.workloads.remove(key)?;
        self.forget_labels(&old);
        Some(old)
    }

    fn forget_labels(&mut self, w: &Workload) {
        for (k, v) in &w.labels {
            let label = (w.namespace.clone(), k.clone(), v.clone());
            if let Some(keys) = self.by_label.get_mut(&label) {
                keys.retain(|(ns, name)| !(ns == &w.namespace && name == &w.name));
                if keys.is_empty() {
                    self.by_label.remove(&label);
                }
            }
        }
    }

    /// Workloads of `namespace` whose labels include all of `selector` (all of the namespace
    /// for an empty selector), in no particular order.
    pub fn select<'a>(
        &'a self,
        namespace: &str,
        selector: &'a BTreeMap<String, String>,
    ) -> Box<dyn Iterator<Item = &'a Workload> + 'a> {
        if selector.is_empty() {
            let namespace = namespace.to_string();
            return Box::new(
                self.workloads
                    .range((namespace.clone(), String::new())..)
                    .map(|(_, w)| &**w)
                    .take_while(move |w| w.namespace == namespace),
            );
        }
        // Walk the shortest posting list and check the other labels on each candidate.
        let shortest = selector
            .iter()
            .map(|(k, v)| {
                self.by_label
                    .get(&(namespace.to_string(), k.clone(), v.clone()))
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|keys| keys.len())
            .unwrap_or(&[]);
        Box::new(
            shortest
                .iter()
                .filter_map(|key| self.workloads.get(key).map(|w| &**w))
                .filter(move |w| labels_match(selector, &w.labels)),
        )
    }

    /// Every workload by (namespace, name).
    pub fn map(&self) -> &BTreeMap<(String, String), Arc<Workload>> {
        &self.workloads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(ns: &str, name: &str, labels: &[(&str, &str)]) -> Workload {
        Workload {
            name: name.into(),
            namespace: ns.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn names(index: &WorkloadIndex, ns: &str, selector: &[(&str, &str)]) -> Vec<String> {
        let selector: BTreeMap<String, String> = selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut out: Vec<String> = index
            .select(ns, &selector)
            .map(|w| w.name.clone())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn selects_by_every_label_within_the_namespace() {
        let mut index = WorkloadIndex::default();
        index.insert(workload("shop", "a", &[("app", "web"), ("version", "v1")]));
        index.insert(workload("shop", "b", &[("app", "web"), ("version", "v2")]));
        index.insert(workload("shop", "c", &[("app", "db")]));
        index.insert(workload("other", "d", &[("app", "web"), ("version", "v1")]));

        assert_eq!(names(&index, "shop", &[("app", "web")]), ["a", "b"]);
        assert_eq!(
            names(&index, "shop", &[("app", "web"), ("version", "v1")]),
            ["a"]
        );
        assert_eq!(
            names(&index, "shop", &[("app", "none")]),
            Vec::<String>::new()
        );
        assert_eq!(names(&index, "shop", &[]), ["a", "b", "c"]);
        assert_eq!(names(&index, "other", &[("app", "web")]), ["d"]);
    }

    #[test]
    fn a_replaced_workload_is_found_by_its_new_labels_only() {
        let mut index = WorkloadIndex::default();
        index.insert(workload("shop", "a", &[("app", "web")]));
        index.insert(workload("shop", "a", &[("app", "api")]));
        assert_eq!(
            names(&index, "shop", &[("app", "web")]),
            Vec::<String>::new()
        );
        assert_eq!(names(&index, "shop", &[("app", "api")]), ["a"]);
    }
}
