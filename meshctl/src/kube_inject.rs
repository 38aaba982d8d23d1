//! `meshctl kube-inject -f FILE [-o OUT]`: the webhook's injection, on manifests. Pods and the
//! pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs are
//! injected; every other document is copied through as it was. The namespace is taken as
//! selected for injection (as `istioctl kube-inject` does): only a pod's own
//! `sidecar.istio.io/inject: "false"`, `hostNetwork`, a system namespace or an existing
//! proxy leave a workload alone, and each of those is reported on stderr.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use mesh_injector::config::{self, Sources};
use mesh_injector::manifest::inject_manifests;

/// Arguments of `meshctl kube-inject`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifest to inject (multi-document YAML); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// Where to write the injected manifest [default: stdout].
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The injector's ConfigMap (YAML with data.values and data.template), e.g. from
    /// `kubectl get configmap mesh-sidecar-injector -n mesh-system -o yaml`.
    #[arg(long, value_name = "FILE")]
    pub injection_configmap: Option<PathBuf>,
    /// Mesh settings (YAML: proxyImage, discoveryAddress, clusterVersion, ...).
    #[arg(long, value_name = "FILE")]
    pub values: Option<PathBuf>,
    /// Injection template (YAML) instead of the built-in one.
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    /// Kubernetes version of the target cluster; 1.29 and later get native sidecars.
    #[arg(long, value_name = "VERSION")]
    pub cluster_version: Option<String>,
}

pub fn run(args: &Args) -> ExitCode {
    match inject(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "meshctl kube-inject: {e}");
            ExitCode::FAILURE
        }
    }
}

fn inject(args: &Args) -> Result<(), String> {
    let injector = config::load(&Sources {
        configmap: args.injection_configmap.as_deref(),
        values: args.values.as_deref(),
        template: args.template.as_deref(),
        cluster_version: args.cluster_version.as_deref(),
    })
    .map_err(|e| e.to_string())?;
    let input = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?
    };
    let report =
        inject_manifests(&injector, &input).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let mut err = std::io::stderr().lock();
    for (what, why) in &report.skipped {
        let _ = writeln!(err, "{what}: not injected: {why}");
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &report.output).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => std::io::stdout()
            .write_all(report.output.as_bytes())
            .map_err(|e| format!("stdout: {e}"))?,
    }
    Ok(())
}
