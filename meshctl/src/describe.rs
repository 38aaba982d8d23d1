//! `meshctl describe WORKLOAD`: its services, the VirtualServices, DestinationRules,
//! PeerAuthentications and AuthorizationPolicies that apply to it, and the mTLS mode in force,
//! like `istioctl x describe pod`.

use std::process::ExitCode;

use mesh_api::analysis;

use crate::source::{self, ConfigSource};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The workload: NAME.NAMESPACE (a proxy id), or NAME with --namespace.
    pub workload: String,
    /// Namespace of the workload when WORKLOAD has none.
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub source: ConfigSource,
    /// Output format.
    #[arg(short, long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// (namespace, name) of WORKLOAD: `-n` wins; else the part after the last dot; else `default`.
pub fn workload_key(workload: &str, namespace: Option<&str>) -> (String, String) {
    match (namespace, workload.rsplit_once('.')) {
        (Some(ns), _) => (ns.to_owned(), workload.to_owned()),
        (None, Some((name, ns))) => (ns.to_owned(), name.to_owned()),
        (None, None) => ("default".to_owned(), workload.to_owned()),
    }
}

pub fn run(args: &Args) -> ExitCode {
    let loaded = match source::load(&args.source) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("meshctl describe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (namespace, name) = workload_key(&args.workload, args.namespace.as_deref());
    let Some(d) = analysis::describe(&loaded.resources, &loaded.inventory, &namespace, &name)
    else {
        eprintln!(
            "meshctl describe: no workload {name} in namespace {namespace} in {}",
            loaded.origin
        );
        return ExitCode::FAILURE;
    };
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
    } else {
        print!("{d}");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names() {
        let key = |w, n| workload_key(w, n);
        assert_eq!(
            key("reviews-v1.default", None),
            ("default".into(), "reviews-v1".into())
        );
        assert_eq!(
            key("reviews-v1", None),
            ("default".into(), "reviews-v1".into())
        );
        assert_eq!(
            key("reviews-v1", Some("shop")),
            ("shop".into(), "reviews-v1".into())
        );
    }
}
