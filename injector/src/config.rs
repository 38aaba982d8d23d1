//! Loading the injector's configuration: settings and template from files, or both from the
//! ConfigMap that carries them in the cluster (`data.values`, `data.template`), so
//! `kubectl get configmap mesh-sidecar-injector -o yaml` feeds `meshctl kube-inject` exactly
//! what the webhook uses.

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;

use crate::inject::Injector;
use crate::template::Template;
use crate::values::Values;

#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {reason}")]
pub struct ConfigError {
    pub source_name: String,
    pub reason: String,
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        source_name: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Where the configuration comes from; unset parts take the built-in defaults.
#[derive(Debug, Default, Clone)]
pub struct Sources<'a> {
    pub configmap: Option<&'a Path>,
    pub values: Option<&'a Path>,
    pub template: Option<&'a Path>,
    /// Overrides `clusterVersion` from the values.
    pub cluster_version: Option<&'a str>,
}

/// Builds the injector; explicit files win over the ConfigMap's keys.
pub fn load(sources: &Sources<'_>) -> Result<Injector, ConfigError> {
    let (mut values_text, mut template_text) = (None, None);
    if let Some(path) = sources.configmap {
        let cm: ConfigMap = serde_saphyr::from_str(&read(path)?).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            reason: format!("not a ConfigMap: {e}"),
        })?;
        let data = cm.data.unwrap_or_default();
        values_text = data.get("values").cloned();
        template_text = data.get("template").cloned();
    }
    if let Some(p) = sources.values {
        values_text = Some(read(p)?);
    }
    if let Some(p) = sources.template {
        template_text = Some(read(p)?);
    }
    let name = |p: Option<&Path>, key: &str| match (p, sources.configmap) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(cm)) => format!("{} (data.{key})", cm.display()),
        (None, None) => key.to_string(),
    };
    let err = |source_name: String, e: &dyn std::fmt::Display| ConfigError {
        source_name,
        reason: e.to_string(),
    };
    let mut values = match values_text {
        Some(t) => Values::from_yaml(&t).map_err(|e| err(name(sources.values, "values"), &e))?,
        None => Values::default(),
    };
    if let Some(v) = sources.cluster_version {
        values.cluster_version = Some(v.to_string());
    }
    let template = match template_text {
        Some(t) => Template::parse(&t).map_err(|e| err(name(sources.template, "template"), &e))?,
        None => Template::default_template(),
    };
    Injector::new(values, template).map_err(|e| err("cluster version".into(), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmap_then_files() {
        let dir = tempfile::tempdir().unwrap();
        let cm = dir.path().join("cm.yaml");
        let template = crate::template::DEFAULT_TEMPLATE.replace("mesh-init", "capture");
        let doc = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "mesh-sidecar-injector"},
            "data": {"values": "proxyImage: cm/proxy:2\nclusterVersion: \"1.28\"\n", "template": template}});
        std::fs::write(&cm, serde_saphyr::to_string(&doc).unwrap()).unwrap();
        let sources = Sources {
            configmap: Some(&cm),
            ..Default::default()
        };
        let inj = load(&sources).unwrap();
        assert_eq!(inj.values().proxy_image, "cm/proxy:2");
        assert!(!inj.native_sidecars());
        let inj = load(&Sources {
            cluster_version: Some("1.29"),
            ..sources.clone()
        })
        .unwrap();
        assert!(inj.native_sidecars());

        let values = dir.path().join("values.yaml");
        std::fs::write(&values, "proxyImage: file/proxy:3\n").unwrap();
        let inj = load(&Sources {
            values: Some(&values),
            ..sources.clone()
        })
        .unwrap();
        assert_eq!(inj.values().proxy_image, "file/proxy:3");

        std::fs::write(&values, "proxyImage: [\n").unwrap();
        let e = load(&Sources {
            values: Some(&values),
            ..sources
        })
        .unwrap_err();
        assert!(e.source_name.ends_with("values.yaml"), "{e}");
        assert!(load(&Sources::default()).is_ok());
    }
}
