//! `meshctl proxy-config listeners|routes|clusters|endpoints|secret|log PROXY`: the config a
//! proxy runs, read from its admin endpoint, as tables (`-o json` for JSON). The admin address
//! comes from pilot (the proxy reports it) or from `--admin`.

mod secret;
mod tables;

use std::process::ExitCode;

use http::Method;
use mesh_proto::config::v1::ProxyConfig;

use crate::http::{self as client, HttpError};
use crate::pilot::{self, ResolveError};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Listeners: address, direction, protocol, route table or cluster, mTLS mode.
    Listeners(Target),
    /// Routes of every route table: domains, match, destination clusters and subsets.
    Routes(Target),
    /// Clusters: load balancing, upstream TLS, subsets, endpoint count.
    Clusters(Target),
    /// Endpoints of every cluster, with labels, sidecar and identity.
    Endpoints(Target),
    /// The workload certificate (identity, serial, validity) and the trust bundle; no key.
    Secret(Target),
    /// The proxy's log level; `--level debug` changes it.
    Log {
        #[command(flatten)]
        target: Target,
        /// trace, debug, info, warning, error, critical or off.
        #[arg(long)]
        level: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct Target {
    /// The proxy: its id as pilot lists it, workload.namespace, or a workload name.
    pub proxy: String,
    /// The proxy's admin address; without it, pilot is asked where it is.
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,
    /// Pilot's debug address.
    #[arg(long, env = "MESH_PILOT", default_value = pilot::DEFAULT_PILOT)]
    pub pilot: String,
    /// Output format.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
enum ProxyConfigError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{0}: not the proxy's config: {1}")]
    Decode(String, String),
}

fn admin_url(target: &Target) -> Result<String, ProxyConfigError> {
    let addr = match &target.admin {
        Some(a) => a.clone(),
        None => {
            let status = pilot::syncz(&target.pilot)?;
            pilot::admin_address(&status.proxies, &target.proxy)?
        }
    };
    Ok(client::base_url(&addr))
}

fn config_dump(target: &Target) -> Result<ProxyConfig, ProxyConfigError> {
    let url = format!("{}/config_dump", admin_url(target)?);
    let body = client::get(&url)?;
    serde_json::from_str(&body).map_err(|e| ProxyConfigError::Decode(url, e.to_string()))
}

/// The JSON of one section of the config, pretty-printed.
fn section_json(cfg: &ProxyConfig, what: &What) -> String {
    let value = match what {
        What::Listeners(_) => serde_json::to_value(&cfg.listeners),
        What::Routes(_) => serde_json::to_value(&cfg.route_tables),
        What::Clusters(_) => serde_json::to_value(&cfg.clusters),
        What::Endpoints(_) => serde_json::to_value(
            cfg.clusters
                .iter()
                .map(|c| serde_json::json!({"cluster": c.name, "endpoints": c.endpoints}))
                .collect::<Vec<_>>(),
        ),
        What::Secret(_) | What::Log { .. } => Ok(serde_json::Value::Null),
    };
    serde_json::to_string_pretty(&value.unwrap_or_default()).unwrap_or_default()
}

fn show(what: &What) -> Result<String, ProxyConfigError> {
    match what {
        What::Listeners(t) | What::Routes(t) | What::Clusters(t) | What::Endpoints(t) => {
            let cfg = config_dump(t)?;
            if t.output == "json" {
                return Ok(section_json(&cfg, what) + "\n");
            }
            Ok(match what {
                What::Listeners(_) => tables::listeners(&cfg),
                What::Routes(_) => tables::routes(&cfg),
                What::Clusters(_) => tables::clusters(&cfg),
                _ => tables::endpoints(&cfg),
            })
        }
        What::Secret(t) => {
            let url = format!("{}/certs", admin_url(t)?);
            let body = client::get(&url)?;
            if t.output == "json" {
                return Ok(body + "\n");
            }
            let certs: secret::Certs = serde_json::from_str(&body)
                .map_err(|e| ProxyConfigError::Decode(url, e.to_string()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            Ok(secret::render(&certs, now))
        }
        What::Log { target, level } => {
            let base = admin_url(target)?;
            let body = match level {
                // Envoy's verb: a level change is a POST.
                Some(l) => client::call(Method::POST, &format!("{base}/logging?level={l}"))?,
                None => client::get(&format!("{base}/logging"))?,
            };
            Ok(format!("{}: {}", target.proxy, body))
        }
    }
}

pub fn run(args: &Args) -> ExitCode {
    match show(&args.what) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshctl proxy-config: {e}");
            ExitCode::FAILURE
        }
    }
}
