//! The mesh-pilot binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_pilot::kube::registry::RegistryOptions;
use mesh_pilot::server::{KubeOptions, Pilot};
use mesh_pilot::watch::Debounce;

#[derive(Parser, Debug)]
#[command(
    name = "mesh-pilot",
    version,
    about = "The mesh's discovery control plane"
)]
struct Args {
    /// Directory of Istio YAML (VirtualService, DestinationRule, ServiceEntry, WorkloadEntry,
    /// Sidecar, ...), watched for changes. Required unless --kube; with --kube, its files are
    /// served next to the cluster's objects.
    #[arg(long, value_name = "DIR", required_unless_present = "kube")]
    config_dir: Option<PathBuf>,
    /// Watch the Kubernetes cluster: Services, EndpointSlices, Pods, Namespaces and the mesh's
    /// config objects (Istio's API groups and the mesh's own).
    #[arg(long)]
    kube: bool,
    /// Kubeconfig to use with --kube; without it, KUBECONFIG, ~/.kube/config or the in-cluster
    /// service account, in that order.
    #[arg(long, value_name = "PATH", requires = "kube")]
    kubeconfig: Option<PathBuf>,
    /// DNS domain of the cluster: Services are `<name>.<namespace>.svc.<domain>`.
    #[arg(long, default_value = "cluster.local", env = "CLUSTER_DOMAIN")]
    cluster_domain: String,
    /// Trust domain of the pods' SPIFFE identities.
    #[arg(long, default_value = "cluster.local", env = "TRUST_DOMAIN")]
    trust_domain: String,
    /// Seconds to wait at start for every watch's first list before serving what is known.
    #[arg(long, default_value_t = 60)]
    kube_sync_timeout_secs: u64,
    /// Discovery (gRPC) address the proxies connect to.
    #[arg(long, default_value = "127.0.0.1:15010")]
    grpc_addr: SocketAddr,
    /// HTTP address for /ready, /debug/syncz, /debug/config_dump?proxy=ID and /metrics.
    #[arg(long, default_value = "127.0.0.1:15014")]
    http_addr: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    mesh_pilot::memory::limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(dir) = &args.config_dir {
        anyhow::ensure!(
            dir.is_dir(),
            "--config-dir {}: not a directory",
            dir.display()
        );
    }

    let grpc = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.grpc_addr))?;
    let http = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let pilot = match (&args.config_dir, args.kube) {
        (dir, true) => {
            let client = mesh_pilot::kube::client(args.kubeconfig.as_deref()).await?;
            let kube = KubeOptions {
                client,
                registry: RegistryOptions {
                    cluster_domain: args.cluster_domain.clone(),
                    trust_domain: args.trust_domain.clone(),
                },
                sync_timeout: Duration::from_secs(args.kube_sync_timeout_secs),
            };
            Pilot::start_kube(dir.as_deref(), kube, grpc, http, Debounce::default()).await?
        }
        (Some(dir), false) => Pilot::start(dir, grpc, http, Debounce::default()).await?,
        (None, false) => anyhow::bail!("--config-dir or --kube is required"),
    };
    tracing::info!(grpc = %pilot.grpc_addr, http = %pilot.http_addr, dir = ?args.config_dir, kube = args.kube, "pilot serving");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    pilot.shutdown().await;
    Ok(())
}
