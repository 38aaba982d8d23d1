//! The Kubernetes objects the registry is built from, as the watches last reported them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

/// Objects of one kind by (namespace, name).
#[derive(Clone, Debug)]
pub struct Objects<K>(BTreeMap<(String, String), K>);

impl<K> Default for Objects<K> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

fn key<K: ResourceExt>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl<K: ResourceExt + Clone> Objects<K> {
    pub fn apply(&mut self, o: K) {
        self.0.insert(key(&o), o);
    }

    pub fn delete(&mut self, o: &K) {
        self.0.remove(&key(o));
    }

    /// The complete set after a (re)list.
    pub fn replace(&mut self, all: Vec<K>) {
        self.0 = all.into_iter().map(|o| (key(&o), o)).collect();
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&K> {
        self.0.get(&(namespace.to_string(), name.to_string()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Services, EndpointSlices, Pods and Namespaces of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub services: Objects<Service>,
    pub endpoint_slices: Objects<EndpointSlice>,
    pub pods: Objects<Pod>,
    pub namespaces: Objects<Namespace>,
}
