//! The mesh-proxy binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use mesh_proxy::config::load_config_file;
use mesh_proxy::{Server, admin};

#[derive(Parser, Debug)]
#[command(name = "mesh-proxy", version, about = "The mesh's sidecar proxy")]
struct Args {
    /// Static config file (YAML or JSON in the proxy's config model); re-read when it changes.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
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
    let args = Args::parse();
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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

    let cfg = load_config_file(&args.config)?;
    server
        .apply(cfg)
        .await
        .with_context(|| format!("{}: config rejected", args.config.display()))?;
    tokio::spawn(watch_config(
        server.clone(),
        args.config.clone(),
        Duration::from_millis(args.config_poll_ms),
    ));

    wait_for_shutdown(&server).await;
    tracing::info!("draining");
    server.drain(Duration::from_millis(args.drain_timeout_ms)).await;
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
            Ok(cfg) => server.apply(cfg).await.map_err(|e| format!("{}: {e}", path.display())),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "config rejected; the previous config stays in force");
        }
    }
}
