//! The CA in a Kubernetes cluster: the root certificate published as a ConfigMap in every
//! namespace the mesh serves ([`root_cert`]); callers authenticated by TokenReview live in
//! [`crate::auth::TokenReviewAuthenticator`].

pub mod root_cert;

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
