//! meshctl: the mesh's command line.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod kube_inject;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Up(args) => up::run(&args),
        Command::KubeInject(args) => kube_inject::run(&args),
    }
}
