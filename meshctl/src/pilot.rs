//! What meshctl reads from a running pilot's debug port: the connected proxies
//! (`/debug/syncz`) and the config with the registry (`/debug/configz`).

use serde::Deserialize;

use crate::http::{self, HttpError};

/// Pilot's debug address unless `--pilot` says otherwise (Istio's 15014).
pub const DEFAULT_PILOT: &str = "127.0.0.1:15014";

/// What a proxy said about one resource type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TypeStatus {
    /// Version of the last response sent: what pilot wants the proxy to run.
    pub sent: String,
    /// Version the proxy last acknowledged.
    pub acked: String,
    /// Why the proxy rejected the last response.
    pub nack: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ProxyStatus {
    pub id: String,
    pub workload: String,
    pub namespace: String,
    /// The proxy's admin address, when it reported one.
    #[serde(default)]
    pub admin: String,
    pub generation: u64,
    pub synced: bool,
    pub config: TypeStatus,
    pub endpoints: TypeStatus,
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Syncz {
    pub generation: u64,
    pub proxies: Vec<ProxyStatus>,
}

pub fn syncz(pilot: &str) -> Result<Syncz, HttpError> {
    http::get_json(&format!("{}/debug/syncz", http::base_url(pilot)))
}

pub fn configz(pilot: &str) -> Result<mesh_api::analysis::ConfigDump, HttpError> {
    http::get_json(&format!("{}/debug/configz", http::base_url(pilot)))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("no proxy {0:?} is connected to pilot (see `meshctl proxy-status`)")]
    NotFound(String),
    #[error("{name:?} names several proxies: {}; give the proxy id", candidates.join(", "))]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
    #[error("proxy {0} did not report its admin address; pass --admin HOST:PORT")]
    NoAdmin(String),
}

/// The proxy `name` means: its id as pilot lists it, `workload.namespace`, or a workload name.
pub fn find<'a>(proxies: &'a [ProxyStatus], name: &str) -> Result<&'a ProxyStatus, ResolveError> {
    if let Some(p) = proxies.iter().find(|p| p.id == name) {
        return Ok(p);
    }
    let matches: Vec<&ProxyStatus> = proxies
        .iter()
        .filter(|p| p.workload == name || format!("{}.{}", p.workload, p.namespace) == name)
        .collect();
    match matches.as_slice() {
        [] => Err(ResolveError::NotFound(name.to_owned())),
        [one] => Ok(one),
        many => Err(ResolveError::Ambiguous {
            name: name.to_owned(),
            candidates: many.iter().map(|p| p.id.clone()).collect(),
        }),
    }
}

/// The admin address of proxy `name`, through pilot.
pub fn admin_address(proxies: &[ProxyStatus], name: &str) -> Result<String, ResolveError> {
    let p = find(proxies, name)?;
    if p.admin.is_empty() {
        return Err(ResolveError::NoAdmin(p.id.clone()));
    }
    Ok(p.admin.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(id: &str, workload: &str, ns: &str, admin: &str) -> ProxyStatus {
        ProxyStatus {
            id: id.into(),
            workload: workload.into(),
            namespace: ns.into(),
            admin: admin.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_proxy_is_found_by_id_workload_or_workload_and_namespace() {
        let all = [
            proxy(
                "reviews-v1.default",
                "reviews-v1",
                "default",
                "127.0.0.1:15102",
            ),
            proxy("web.shop", "web", "shop", ""),
            proxy("web.blog", "web", "blog", "127.0.0.1:15200"),
        ];
        assert_eq!(
            admin_address(&all, "reviews-v1.default").unwrap(),
            "127.0.0.1:15102"
        );
        assert_eq!(
            admin_address(&all, "reviews-v1").unwrap(),
            "127.0.0.1:15102"
        );
        assert_eq!(admin_address(&all, "web.blog").unwrap(), "127.0.0.1:15200");
        assert_eq!(
            admin_address(&all, "web"),
            Err(ResolveError::Ambiguous {
                name: "web".into(),
                candidates: vec!["web.shop".into(), "web.blog".into()]
            })
        );
        assert_eq!(
            admin_address(&all, "web.shop"),
            Err(ResolveError::NoAdmin("web.shop".into()))
        );
        assert_eq!(
            admin_address(&all, "ratings"),
            Err(ResolveError::NotFound("ratings".into()))
        );
    }
}
