//! The mesh-pilot binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mesh_pilot::server::Pilot;
use mesh_pilot::watch::Debounce;

#[derive(Parser, Debug)]
#[command(
    name = "mesh-pilot",
    version,
    about = "The mesh's discovery control plane"
)]
struct Args {
    /// Directory of Istio YAML (VirtualService, DestinationRule, ServiceEntry, WorkloadEntry,
    /// Sidecar, ...), watched for changes.
    #[arg(long, value_name = "DIR")]
    config_dir: PathBuf,
    /// Discovery (gRPC) address the proxies connect to.
    #[arg(long, default_value = "127.0.0.1:15010")]
    grpc_addr: SocketAddr,
    /// HTTP address for /ready, /debug/syncz, /debug/config_dump?proxy=ID and /metrics.
    #[arg(long, default_value = "127.0.0.1:15014")]
    http_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        args.config_dir.is_dir(),
        "--config-dir {}: not a directory",
        args.config_dir.display()
    );

    let grpc = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.grpc_addr))?;
    let http = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let pilot = Pilot::start(&args.config_dir, grpc, http, Debounce::default()).await?;
    tracing::info!(grpc = %pilot.grpc_addr, http = %pilot.http_addr, dir = %args.config_dir.display(), "pilot serving");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    pilot.shutdown().await;
    Ok(())
}
