//! The mesh-proxy binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use mesh_proto::discovery::v1::{Node, ProxyAddresses};
use mesh_proxy::config::load_config_file;
use mesh_proxy::discovery::DiscoveryClient;
use mesh_proxy::{Server, admin};

#[derive(Parser, Debug)]
#[command(
    name = "mesh-proxy",
    version,
    about = "The mesh's sidecar proxy",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Installs (or with --cleanup removes) the iptables rules that capture a pod's traffic;
    /// run as the init container.
    Iptables(mesh_proxy::iptables::IptablesArgs),
}

#[derive(clap::Args, Debug)]
struct Args {
    /// Static config file (YAML or JSON in the proxy's config model); re-read when it changes.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "discovery_addr",
        required_unless_present = "discovery_addr"
    )]
    config: Option<PathBuf>,
    /// Pilot's discovery address, e.g. http://127.0.0.1:15010: config is streamed from there.
    #[arg(long, value_name = "URL", requires = "workload")]
    discovery_addr: Option<String>,
    /// NAME.NAMESPACE of the workload this proxy serves (a WorkloadEntry, or a Pod).
    #[arg(long, value_name = "NAME.NAMESPACE")]
    workload: Option<String>,
    /// Explicit outbound listener that the application sends its requests to.
    #[arg(long, value_name = "HOST:PORT")]
    outbound_addr: Option<SocketAddr>,
    /// Inbound listener that other proxies reach this workload at.
    #[arg(long, value_name = "HOST:PORT")]
    inbound_addr: Option<SocketAddr>,
    /// The local application that inbound requests go on to.
    #[arg(long, value_name = "HOST:PORT")]
    app_addr: Option<SocketAddr>,
    /// Admin endpoint (/ready, /config_dump, /stats/prometheus, /quitquitquit); loopback only.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// How long a drain (SIGTERM, /quitquitquit) lets in-flight requests finish.
    #[arg(long, default_value_t = 5000)]
    drain_timeout_ms: u64,
    /// How often the config file is checked for changes.
    #[arg(long, default_value_t = 1000)]
    config_poll_ms: u64,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Iptables(ipt)) => return mesh_proxy::iptables::run(&ipt),
        None => cli.run,
    };
    init_logging(args.log_json);
    // One core by default: a sidecar shares its node with the application.
    let workers = std::env::var("MESH_PROXY_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let server = Server::new();
    let admin_listener = admin::bind(args.admin_addr).await?;
    tracing::info!(addr = %admin_listener.local_addr()?, "admin listening");
    tokio::spawn(admin::serve(admin_listener, server.clone()));

    match (&args.config, &args.discovery_addr) {
        (Some(path), _) => {
            let cfg = load_config_file(path)?;
            server
                .apply(cfg)
                .await
                .with_context(|| format!("{}: config rejected", path.display()))?;
            tokio::spawn(watch_config(
                server.clone(),
                path.clone(),
                Duration::from_millis(args.config_poll_ms),
            ));
        }
        (None, Some(pilot)) => {
            let node = node(&args)?;
            tracing::info!(%pilot, node = %node.id, "config comes from pilot");
            let client = DiscoveryClient::new(server.clone(), pilot.clone(), node);
            tokio::spawn(client.run(server.shutdown.clone()));
        }
        (None, None) => anyhow::bail!("either --config or --discovery-addr is required"),
    }

    wait_for_shutdown(&server).await;
    tracing::info!("draining");
    server
        .drain(Duration::from_millis(args.drain_timeout_ms))
        .await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_shutdown(server: &Server) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = server.shutdown.cancelled() => {}
    }
}

/// The identity and listener addresses this proxy announces to pilot.
fn node(args: &Args) -> anyhow::Result<Node> {
    let workload = args
        .workload
        .as_deref()
        .context("--workload is required with --discovery-addr")?;
    let (name, namespace) = workload
        .split_once('.')
        .with_context(|| format!("--workload {workload:?}: expected NAME.NAMESPACE"))?;
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    Ok(Node {
        id: workload.to_string(),
        workload: name.to_string(),
        namespace: namespace.to_string(),
        addresses: Some(ProxyAddresses {
            outbound: addr(args.outbound_addr),
            inbound: addr(args.inbound_addr),
            application: addr(args.app_addr),
            transparent: false,
        }),
    })
}

fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Re-applies the config file when it changes. A bad file is reported and the running config
/// stays in force.
async fn watch_config(server: Arc<Server>, path: PathBuf, every: Duration) {
    let mut last = fingerprint(&path);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = fingerprint(&path);
        if now == last {
            continue;
        }
        last = now;
        let result = match load_config_file(&path) {
            Ok(cfg) => server
                .apply(cfg)
                .await
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "config rejected; the previous config stays in force");
        }
    }
}
