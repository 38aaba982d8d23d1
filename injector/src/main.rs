//! mesh-injector: the sidecar-injection and config-validation admission webhooks.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_injector::server::{self, Webhook};
use mesh_injector::tls::CertReloader;
use mesh_injector::{Injector, config};

#[derive(Parser, Debug)]
#[command(
    name = "mesh-injector",
    version,
    about = "The mesh's admission webhooks: POST /inject (sidecar injection), POST /validate (mesh config), GET /healthz"
)]
struct Args {
    /// Listen address (Istio's webhook port is 15017).
    #[arg(long, env = "INJECTOR_ADDR", default_value = "0.0.0.0:15017")]
    addr: SocketAddr,
    /// Serving certificate chain (PEM), e.g. the tls.crt of a mounted Secret; reloaded when
    /// it changes.
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,
    /// Serving key (PEM), reloaded with the certificate.
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,
    /// Mesh settings (YAML: proxyImage, discoveryAddress, caAddress, trustDomain,
    /// clusterVersion, ...); defaults when absent.
    #[arg(long, value_name = "FILE")]
    values: Option<PathBuf>,
    /// Injection template (YAML), e.g. from a ConfigMap; the built-in one when absent.
    #[arg(long, value_name = "FILE")]
    template: Option<PathBuf>,
    /// Kubernetes version of the cluster (1.29 and later get native sidecars); overrides
    /// clusterVersion in --values.
    #[arg(long, env = "KUBERNETES_VERSION")]
    cluster_version: Option<String>,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value_t = 5000)]
    cert_poll_ms: u64,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn injector(args: &Args) -> anyhow::Result<Injector> {
    Ok(config::load(&config::Sources {
        configmap: None,
        values: args.values.as_deref(),
        template: args.template.as_deref(),
        cluster_version: args.cluster_version.as_deref(),
    })?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Its fallback report of a failed log write is an eprintln!, which panics (and drops
        // the connection being served) when stderr is a closed pipe.
        .log_internal_errors(false);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }

    let injector = injector(&args)?;
    let certs = CertReloader::load(&args.tls_cert, &args.tls_key)?;
    let tls = certs.server_config()?;
    let _watch = certs
        .clone()
        .watch(Duration::from_millis(args.cert_poll_ms.max(100)));
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        native_sidecars = injector.native_sidecars(),
        "webhook listening"
    );
    let webhook = Arc::new(Webhook { injector });
    tokio::select! {
        _ = server::serve(listener, tls, webhook) => {}
        _ = shutdown() => tracing::info!("stopping"),
    }
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
