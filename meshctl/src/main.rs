//! meshctl: the mesh's command line.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod dashboard;
mod describe;
mod http;
mod kube_inject;
mod pilot;
mod proxy_config;
mod proxy_status;
mod source;
mod table;
mod up;
mod validate;

#[derive(Parser)]
#[command(name = "meshctl", version, about = "Command line for the mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate mesh configuration files (Istio API) without applying them.
    Validate(validate::Args),
    /// Run a local mesh from a directory of Istio YAML: pilot, a proxy and a sample app per
    /// WorkloadEntry.
    Up(up::Args),
    /// Inject the mesh's sidecar into Kubernetes manifests (Pods and workloads), as the
    /// injector webhook would.
    KubeInject(kube_inject::Args),
    /// Every proxy connected to pilot: the config it ACKed against the latest, NACK reasons.
    ProxyStatus(proxy_status::Args),
    /// The config a proxy runs, from its admin endpoint: listeners, routes, clusters,
    /// endpoints, its certificate; and its log level.
    #[command(name = "proxy-config", alias = "pc")]
    ProxyConfig(proxy_config::Args),
    /// Istio's analyzer warnings (IST codes, file:line) for files or a running pilot.
    Analyze(analyze::Args),
    /// What applies to a workload and why: services, routing, policies, the mTLS mode.
    Describe(describe::Args),
    /// A local web page with the live service graph of the mesh (request rate, success rate,
    /// p99 and mTLS per edge), from the proxies' metrics in Prometheus.
    Dashboard(dashboard::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Up(args) => up::run(&args),
        Command::KubeInject(args) => kube_inject::run(&args),
        Command::ProxyStatus(args) => proxy_status::run(&args),
        Command::ProxyConfig(args) => proxy_config::run(&args),
        Command::Analyze(args) => analyze::run(&args),
        Command::Describe(args) => describe::run(&args),
        Command::Dashboard(args) => dashboard::run(&args),
    }
}
