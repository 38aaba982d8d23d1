//! Kubernetes as a source: kube-rs watches on Services, EndpointSlices, Pods, Namespaces and
//! the mesh's config kinds (Istio's API groups and the mesh's own), feeding the same store and
//! registry model as the file source.
//!
//! - [`source`]: one watch per kind ([`follow`] relists on 410 and resumes from bookmarks);
//!   config objects are decoded and validated like files, per object with its last good
//!   version ([`crate::store::ObjectStore`]);
//! - [`registry`]: Services, EndpointSlices and Pods into services, ready endpoints and
//!   workloads (a proxy started with `--workload <pod>.<namespace>` is found by its Pod);
//! - [`sync`]: debounced pushes of the merged config and registry.
//!
//! Replicas need no coordination: each one watches and serves on its own.

pub mod cluster;
pub mod follow;
pub mod kinds;
pub mod protocol;
pub mod registry;
pub mod source;
pub mod sync;

use std::path::Path;

/// A client from a kubeconfig file, or else from the environment (`KUBECONFIG`,
/// `~/.kube/config`, or the in-cluster service account), as `kube::Config::infer` finds it.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no Kubernetes configuration found: {e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| anyhow::anyhow!("Kubernetes client: {e}"))
}
